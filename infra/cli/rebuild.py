"""`billing rebuild`: read models rebuilt from the events, compared, swapped."""

from __future__ import annotations

import argparse
import sys

from infra.cli.common import FAILURE, OK, UsageError, connect
from infra.config import Settings
from infra.render.terminal import print_json

# The read models infra/ops/rebuild.py rebuilds (a unit test keeps the two equal).
READ_MODELS = ("quota", "invoices")


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops import rebuild
    from infra.wiring.engine import Engine

    unknown = set(args.projection) - set(READ_MODELS)
    if unknown:
        raise UsageError(f"billing rebuild: unknown read model(s) {', '.join(sorted(unknown))};"
                         f" known: {', '.join(READ_MODELS)}", "usage")
    projections = list(args.projection or rebuild.TABLES)
    stack = connect(settings)
    engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap, adopt_topics=False)
    try:
        replay = rebuild.kafka_replay(engine, projections) if args.source == "kafka" else None
        if replay is None and args.processes > 1:
            replay = rebuild.replay_parallel(stack.database_url, settings, projections,
                                             args.processes)
        print(f"rebuilding {', '.join(projections)} from "
              f"{'billing.events (offset 0)' if args.source == 'kafka' else 'the event store'}"
              f" into fresh tables"
              f"{f' in {args.processes} processes' if args.source == 'store' else ''}",
              file=sys.stderr)
        # --force is read with a default: an older parser does not define it.
        force = bool(args.force)
        report = rebuild.rebuild(engine.app, stack.database_url, projections,
                                 do_swap=args.swap, force=force, replay=replay)
    finally:
        engine.close()
    status = OK if report.identical else FAILURE
    if args.json:
        print_json({"events": report.events, "seconds": round(report.seconds, 3),
                     "identical": report.identical, "swapped": report.swapped,
                     "refused": report.refused, "behind": report.behind,
                     "tables": [vars(c) for c in report.comparisons]})
        return status
    for c in report.comparisons:
        diff = "same" if not (c.missing or c.extra) else \
            f"{c.missing} missing, {c.extra} extra (e.g. {', '.join(c.examples)})"
        print(f"  {c.table:<34} live {c.live:>8,}  rebuilt {c.rebuilt:>8,}  {diff}")
    given = " (they got the rebuilt rows)" if report.swapped else ""
    for name, count in report.behind.items():
        if count:
            print(f"  {count:,} subscription(s) of {name} not compared: the live tables had "
                  f"not caught up with them{given}")
    differing = ", ".join(c.table for c in report.differences)
    print(f"{report.events:,} events replayed in {report.seconds:.2f}s; "
          f"{'identical' if report.identical else f'DIFFERENT ({differing})'}; "
          f"{'swapped in' if report.swapped else 'live tables untouched'}"
          f"{' anyway (--force)' if report.swapped and not report.identical else ''}"
          f"{'' if args.swap else ' (use --swap)'}")
    if report.refused:
        print(f"NOT swapped: the rebuilt tables differ from the live ones in {differing}; "
              "nothing was changed. Find out why, or swap anyway with --swap --force.")
    return status
