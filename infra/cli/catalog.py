"""`billing catalog`: show the catalog in force, publish a new version."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from domain.shared.money import plain
from infra.cli.common import connect
from infra.config import Settings
from infra.render.terminal import _print_json


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """The deployment's catalog as recorded in the store (`publish FILE`: record a new
    version of it, the one way to change prices)."""
    from domain.catalog.model import Catalog
    from domain.shared.errors import BillingError
    from infra.wiring.engine import load_catalog, open_billing, publish_catalog

    if args.verb == "publish":
        if not args.file:
            raise SystemExit("billing catalog publish FILE")
        new = Catalog.from_file(Path(args.file))
        app = open_billing(connect(settings).database_url, settings)
        try:
            changed = publish_catalog(app, new)
        except BillingError as e:
            print(f"refused ({e.code}): {e}", file=sys.stderr)
            return 2
        finally:
            app.close()
        outcome = ("published: new subscriptions bill with it at once, existing ones from "
                   "their next cycle" if changed else "is already the version in force")
        print(f"catalog {new.id} version {new.version} {outcome}")
        return 0
    try:
        app = open_billing(connect(settings).database_url, settings)
        catalog, recorded = app.catalog, "as recorded in the store"
        app.close()
    except SystemExit:
        catalog, recorded = load_catalog(settings), "from BILLING_CATALOG (no stack running)"
    plans: list[dict[str, Any]] = [
        {"id": p.id, "name": p.name, "rank": p.rank, "price": plain(p.price.amount),
         "currency": p.currency, "prices": {k: plain(v) for k, v in p.prices.items()},
         "allowances": {m: a.as_dict() for m, a in p.allowances.items()}}
        for p in sorted(catalog.plans.values(), key=lambda p: p.rank)
    ]
    if args.json:
        _print_json({"id": catalog.id, "version": catalog.version, "plans": plans})
        return 0
    print(f"catalog {catalog.id} (version {catalog.version}, {recorded}), prices in "
          f"{catalog.currency}, excluding tax")
    for plan in plans:
        allowances = ", ".join(f"{m} {a['included']} ({a['limit']})"
                               for m, a in plan["allowances"].items())
        prices = ", ".join(f"{v}/{k}" for k, v in plan["prices"].items())
        print(f"  {plan['id']:<12} {plan['name']:<12} {prices:<28} {allowances}")
    return 0
