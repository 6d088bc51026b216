"""`billing subscribe`."""

from __future__ import annotations

import argparse
import json
import sys

from infra.cli.common import connect, time_arg
from infra.config import Settings


def cmd_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from domain.shared.errors import BillingError
    from infra.wiring.engine import open_billing

    at = time_arg(args.at, "--at") if args.at else datetime.now(UTC)
    customer = {name: getattr(args, name) for name in CUSTOMER_OPTIONS
                if getattr(args, name) is not None}
    if args.business:
        customer["business"] = True
    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        app.subscribe(args.subscription, args.account or args.subscription, args.plan, at,
                      **({"customer": customer} if customer else {}))
    except BillingError as e:
        print(json.dumps({"error": e.code, "message": str(e)}) if args.json
              else f"refused ({e.code}): {e}", file=sys.stderr)
        return 2
    finally:
        app.close()
    result = {"subscription": args.subscription, "plan": args.plan, "at": at.isoformat()}
    print(json.dumps(result) if args.json else f"subscribed {args.subscription} to {args.plan}")
    return 0


CUSTOMER_OPTIONS = ("name", "address", "country", "vat_id", "email")
