"""`billing clock`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from infra.cli.common import connect, time_arg
from infra.config import Settings


def cmd_clock(args: argparse.Namespace, settings: Settings) -> int:

    from domain.shared.errors import BillingError
    from infra.wiring.engine import open_billing

    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        if args.verb == "show":
            clock = app.clock()
            now = clock.now.isoformat() if clock else None
            print(json.dumps({"now": now}) if args.json else f"billing clock: {now or 'not set'}")
            return 0
        to = time_arg(args.to, "--to") if args.to else None
        if to is None:
            raise SystemExit("--to is required, e.g. 2026-12-01T00:00:00+00:00")
        recorder: Any = app.recorder
        runner = None
        if args.processes > 1:
            from infra.ops.parallel import process_runner

            runner = process_runner(stack.database_url, settings, args.processes)
        try:
            changed, events = app.advance_clock(to, recorder.subscription_ids(), runner=runner)
        except BillingError as e:
            print(f"refused ({e.code}): {e}", file=sys.stderr)
            return 2
    finally:
        app.close()
    result = {"now": to.isoformat(), "subscriptions_changed": changed, "events": events}
    print(json.dumps(result) if args.json
          else f"clock at {to.isoformat()}: {changed} subscriptions changed, {events} events")
    return 0
