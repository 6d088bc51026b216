"""`billing clock`: show the billing clock, or advance it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from infra.cli.common import OK, UsageError, connect
from infra.config import Settings
from infra.render.progress import ProgressLine


def cmd_clock(args: argparse.Namespace, settings: Settings) -> int:
    from infra.wiring.engine import open_billing

    if args.verb == "advance" and args.to is None:
        raise UsageError("billing clock advance: --to is required, e.g. "
                         "2026-12-01T00:00:00+00:00", "usage")
    if args.verb == "show" and (args.to is not None or args.processes != 1):
        raise UsageError("billing clock show takes no --to or --processes", "usage")
    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        if args.verb == "show":
            clock = app.clock()
            now = clock.now.isoformat() if clock else None
            print(json.dumps({"now": now}) if args.json else f"billing clock: {now or 'not set'}")
            return OK
        to = args.to
        recorder: Any = app.recorder
        ids = list(recorder.subscription_ids())
        progress = ProgressLine(f"clock to {to.isoformat()}", len(ids), "subscriptions")
        runner = None
        if args.processes > 1:
            from infra.ops.parallel import process_runner

            runner = process_runner(stack.database_url, settings, args.processes,
                                    progress=progress.advance)
        changed, events = app.advance_clock(to, ids, runner=runner, progress=progress.advance)
        progress.finish()
    finally:
        app.close()
    result = {"now": to.isoformat(), "subscriptions_changed": changed, "events": events}
    print(json.dumps(result) if args.json
          else f"clock at {to.isoformat()}: {changed} subscriptions changed, {events} events")
    return OK
