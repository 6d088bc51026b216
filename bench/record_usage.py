"""Benchmark: the domain's part of ingesting usage, in memory (no Kafka, no PostgreSQL): how many
µs `prepare_usage_batch` takes per usage event, the checks and the recording of a poll.

    python bench/record_usage.py [--subscriptions 1000] [--events 20000] [--rounds 5]
                                 [--no-record]

Subscriptions are in the library's in-memory store and stay cached after the first round, so
this is the warm path: what a usage event costs the ingest worker's thread besides decoding,
parsing and writing. The best of the rounds is reported (the machine's speed drifts)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from common import memory_app, record

from domain.app.record_usage import prepare_usage_batch
from domain.contracts.usage import parse_usage

METRICS = ("conversations", "documents", "tokens")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=20_000, help="usage events per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    n_subs = args.subscriptions
    app = memory_app(n_subs, start)
    times = []
    for round_ in range(args.rounds):
        items = [parse_usage({
            "id": f"u-{round_}-{n}", "subscription": f"sub-{n % n_subs:07d}",
            "metric": METRICS[n % 3], "quantity": 1 + n % 17, "member": f"m-{n % 7}",
            "at": (start + timedelta(seconds=round_ * args.events + n)).isoformat()})
            for n in range(args.events)]
        t0 = time.perf_counter()
        batch = prepare_usage_batch(app, items, optimistic=True)
        times.append(time.perf_counter() - t0)
        if batch.accepted != args.events:
            raise SystemExit(f"accepted {batch.accepted} of {args.events}: {batch.rejected[:3]}")
        for aggregate in batch.aggregates:
            aggregate.collect_events()  # as a save would: the next round starts clean
    best = min(times)
    record("usage recording in the domain, in memory", [
        f"- {args.events:,} usage events per round over {n_subs:,} subscriptions (cached), "
        f"{args.rounds} rounds: `prepare_usage_batch` **{best / args.events * 1e6:.2f} µs per "
        f"usage event** at best ({', '.join(f'{t / args.events * 1e6:.2f}' for t in times)})",
    ], not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
