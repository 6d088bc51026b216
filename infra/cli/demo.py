"""`billing demo`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from infra.cli.common import FAILURE, OK
from infra.config import Settings, redact_url
from infra.render.terminal import print_json
from infra.stack.embedded import start_stack


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from infra.demo import run_demo
    from infra.wiring.engine import Engine

    t0 = time.perf_counter()
    with start_stack(settings) as stack:
        print(f"stack ({stack.mode}): postgres {redact_url(stack.database_url)}  kafka "
              f"{stack.kafka_bootstrap}"
              f"  [{time.perf_counter() - t0:.1f}s]")
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        try:
            summary = run_demo(engine, args.subscriptions, args.events, print, Path(args.out))
        finally:
            engine.close()
    print(f"\ndone in {time.perf_counter() - t0:.1f}s (stack started and stopped)")
    if args.json:
        print_json(summary)
    return OK if summary["quota_matches_input"] else FAILURE
