"""`billing report` (analytics views) and `billing recommend`."""

from __future__ import annotations

import argparse
import sys

from infra.cli.common import connect
from infra.config import Settings
from infra.render.terminal import _cell, _print_json


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    import csv
    import io

    import psycopg

    from projections.analytics import store as analytics
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        try:
            columns, rows = analytics.report(conn, args.name)
        except KeyError:
            raise SystemExit(f"unknown report {args.name!r}; known: "
                             f"{', '.join(analytics.VIEWS)}") from None
    cells = [[_cell(v) for v in row] for row in rows]
    if args.format == "json":
        _print_json([dict(zip(columns, row, strict=True)) for row in cells])
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(cells)
        print(out.getvalue(), end="")
    else:
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    return 0


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from infra.wiring.engine import load_catalog
    from projections.recommendations import store as recommendations
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        inputs = recommendations.read_inputs(conn, args.subscription)
    if inputs is None:
        print(f"nothing known about {args.subscription} yet", file=sys.stderr)
        return 1
    result = recommendations.recommend(inputs, load_catalog(settings))
    if args.json:
        _print_json({"subscription": args.subscription, **result})
        return 0
    print(f"{args.subscription}: on {result['current_plan']}, recommended "
          f"{result['recommended_plan']}: {result['reason']}")
    if result["what_if"]:
        print("  last closed cycle on each plan:")
        for w in result["what_if"]:
            note = "" if w["fits"] else "  (over its allowances)"
            print(f"    {w['plan']:<14} {w['cost']:>12}{note}")
    return 0
