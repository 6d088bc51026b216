"""`billing subscribe`: a subscription on a plan, for a customer."""

from __future__ import annotations

import argparse
import json

from infra.cli.common import OK, Refused, billing_now, open_app
from infra.config import Settings

CUSTOMER_OPTIONS = ("name", "address", "country", "vat_id", "email")
# The billing periods a catalog may sell (domain/catalog/model.py PERIOD_NAMES; a unit test
# keeps them equal). Which ones a plan sells is checked against the catalog in force.
PERIODS = ("week", "month", "quarter", "half-year", "year")


def cmd_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    customer = {name: getattr(args, name) for name in CUSTOMER_OPTIONS
                if getattr(args, name) is not None}
    if args.business:
        customer["business"] = True
    app = open_app(settings)
    try:
        at = args.at or billing_now(app)
        sold = app.catalog.plan(args.plan).prices
        if args.period not in sold:
            raise Refused(f"plan {args.plan} is not sold per {args.period}; it is sold per "
                          f"{', '.join(sold)}", "period_not_offered")
        app.subscribe(args.subscription, args.account or args.subscription, args.plan, at,
                      period=args.period, **({"customer": customer} if customer else {}))
    finally:
        app.close()
    result = {"subscription": args.subscription, "plan": args.plan, "period": args.period,
              "at": at.isoformat()}
    print(json.dumps(result) if args.json
          else f"subscribed {args.subscription} to {args.plan} (per {args.period})")
    return OK
