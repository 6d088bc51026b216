"""`billing catalog`: show the catalog in force (plans, packs, add-ons, user plans), publish a
new version."""

from __future__ import annotations

import argparse

from infra.cli.common import OK, Failed, UsageError, open_app
from infra.config import Settings
from infra.render.terminal import catalog_view, print_catalog, print_json


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """The deployment's catalog as recorded in the store (`publish FILE`: record a new
    version of it, the one way to change prices)."""
    from domain.catalog.model import Catalog
    from infra.wiring.engine import load_catalog, publish_catalog

    if args.verb == "publish":
        if not args.file:
            raise UsageError("billing catalog publish FILE: name the catalog TOML file", "usage")
        new = Catalog.from_file(args.file)
        app = open_app(settings)
        try:
            changed = publish_catalog(app, new)
        finally:
            app.close()
        outcome = ("published: new subscriptions bill with it at once, existing ones from "
                   "their next cycle" if changed else "is already the version in force")
        if args.json:
            print_json({"id": new.id, "version": new.version, "published": changed})
        else:
            print(f"catalog {new.id} version {new.version} {outcome}")
        return OK
    if args.file:
        raise UsageError("billing catalog show takes no file (publish FILE records one)",
                         "usage")
    try:
        app = open_app(settings)
        catalog, recorded = app.catalog, "as recorded in the store"
        app.close()
    except Failed:  # no running stack: what this terminal's configuration names
        catalog, recorded = load_catalog(settings), "from BILLING_CATALOG (no stack running)"
    view = catalog_view(catalog)
    if args.json:
        print_json(view)
    else:
        print_catalog(view, recorded)
    return OK
