"""Soak run of the fault suite: the scenario of tests/faults at soak size, with durable
PostgreSQL (fsync on). Prints the counts and appends them to docs/BENCHMARKS.md.

    python bench/soak.py [--events 200000] [--kills 20] [--pauses 3] [--restarts 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import record

from tests.faults.chaos import Size, run_scenario


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pauses", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    size = Size(events=args.events, subscriptions=args.subscriptions, kills=args.kills,
                pauses=args.pauses, restarts=args.restarts)
    with tempfile.TemporaryDirectory(prefix="billing-soak-") as tmp:
        report, problems = run_scenario(size, seed=args.seed, workdir=Path(tmp), fsync=True)
    verdict = "**every figure exact**" if not problems else f"**{len(problems)} MISMATCHES**"
    lines = [f"- {report.line()}",
             f"- checked against figures computed from the input: usage per subscription and "
             f"metric, quota rows, applied usage ids, dead letters, the amount invoiced per "
             f"subscription, invoice numbers 1..n once each: {verdict}"]
    lines += [f"  - {p}" for p in problems[:20]]
    record("soak (fault suite)", lines, not args.no_record)
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
