"""`billing parked`."""

from __future__ import annotations

import argparse

from infra.cli.common import connect
from infra.config import Settings
from infra.render.terminal import _print_json


def cmd_parked(args: argparse.Namespace, settings: Settings) -> int:
    """Events a projection could not apply (projections/parked.py)."""
    import psycopg

    from projections import parked

    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        if args.verb == "release":
            if not args.subscription and not args.all:
                raise SystemExit("billing parked release: name --subscription S (or --all)")
            released = parked.release(conn, args.stage, args.subscription)
            print(f"released {released} parked event(s); rebuild the read model to apply "
                  "what was held back: billing rebuild --swap")
            return 0
        rows = parked.listing(conn)
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['stage']:<9} {row['subscription']}  v{row['version']}  {row['code']}"
                  f"  {row['source']}  {row['error'][:120]}")
        print(f"{len(rows)} parked event(s)")
    return 0
