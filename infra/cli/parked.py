"""`billing parked`."""

from __future__ import annotations

import argparse

from infra.cli.common import OK, UsageError, connect
from infra.config import Settings
from infra.render.terminal import print_json


def cmd_parked(args: argparse.Namespace, settings: Settings) -> int:
    """Events a projection could not apply (projections/parked.py)."""
    import psycopg

    from projections import parked

    if args.verb == "release" and not args.subscription and not args.all:
        raise UsageError("billing parked release: name --subscription S (or --all)", "usage")
    if args.verb == "list" and (args.subscription or args.all or args.stage):
        raise UsageError("billing parked list takes no --stage, --subscription or --all",
                         "usage")
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        if args.verb == "release":
            released = parked.release(conn, args.stage, args.subscription)
            if args.json:
                print_json({"released": released})
            else:
                print(f"released {released} parked event(s); rebuild the read model to apply "
                      "what was held back: billing rebuild --swap")
            return OK
        rows = parked.listing(conn)
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['stage']:<9} {row['subscription']}  v{row['version']}  {row['code']}"
                  f"  {row['source']}  {row['error'][:120]}")
        print(f"{len(rows)} parked event(s)")
    return OK
