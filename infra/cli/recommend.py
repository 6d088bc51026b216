"""`billing recommend`: the plan that fits a subscription, and why."""

from __future__ import annotations

import argparse

from infra.cli.common import OK, connect, not_found, open_app
from infra.config import Settings
from infra.render.terminal import print_json


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from projections.recommendations.model import recommend
    from projections.recommendations.store import read_inputs

    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        inputs = read_inputs(conn, args.subscription)
    if inputs is None:
        not_found(f"nothing known about {args.subscription} yet")
    app = open_app(settings)  # the deployment's catalog as recorded, not this terminal's
    try:
        result = recommend(inputs, app.catalog)
    finally:
        app.close()
    if args.json:
        print_json({"subscription": args.subscription, **result})
        return OK
    print(f"{args.subscription}: on {result['current_plan']}, recommended "
          f"{result['recommended_plan']}: {result['reason']}")
    if result["what_if"]:
        print("  last closed cycle on each plan:")
        for w in result["what_if"]:
            note = "" if w["fits"] else "  (over its allowances)"
            print(f"    {w['plan']:<14} {w['cost']:>12}{note}")
    return OK
