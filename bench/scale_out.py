"""Benchmark: one ingestion process, then two in one consumer group, on the same partitioned
topic size; do they add up?

    python bench/scale_out.py [--events 150000] [--subscriptions 2000] [--no-record]
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime

import orjson
from common import ROOT, record, timed_from_first_commit

from consumers.loop import partitions_of
from infra.config import Settings, Topics
from infra.kafka import clients as kafka
from infra.kafka import kafka_python_internals
from infra.stack.embedded import create_database, start_stack
from infra.wiring.engine import Engine, Monitor


def raw_part(job: tuple[str, Settings, str, list[int], dict[int, int]]) -> tuple[float, float]:
    """The baseline in one process: kafka-python reading its share of the partitions to their
    ends, doing nothing else. Returns (start, end) wall-clock times."""
    bootstrap, settings, topic, partitions, ends = job
    client = kafka.consumer(bootstrap, settings, client_id="bench-raw")
    kafka_python_internals.uninstall()  # kafka-python's own decoding, as the baseline is defined
    parts = [tp for tp in partitions_of(client, topic) if tp.partition in partitions]
    client.assign(parts)
    client.seek_to_beginning(*parts)
    left = {tp: ends[tp.partition] for tp in parts}
    start = time.time()
    while any(client.position(tp) < end for tp, end in left.items()):
        client.poll(timeout_ms=1000)
    end = time.time()
    client.close()
    return start, end


def raw_consume(bootstrap: str, settings: Settings, topic: str, ends: dict[int, int],
                processes: int) -> float:
    """Raw consume rate of the topic by `processes` processes, each a share of the
    partitions: the like-for-like baseline for as many ingestion processes."""
    jobs = [(bootstrap, settings, topic, sorted(ends)[k::processes], ends)
            for k in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        spans = pool.map(raw_part, jobs)
    return sum(ends.values()) / (max(e for _, e in spans) - min(s for s, _ in spans))


def phase(stack: object, base: Settings, processes: int, events: int,
          subs: int) -> tuple[float, float]:
    """(ingest events/s, raw consume events/s of the same topic) with `processes` of each."""
    prefix = f"p{processes}."
    dbname = f"scale{processes}"
    admin = stack.database_url  # type: ignore[attr-defined]
    create_database(admin, dbname)
    url = admin.rsplit("/", 1)[0] + f"/{dbname}"
    settings = replace(base, topics=Topics.with_prefix(prefix), partitions=4)
    engine = Engine.open(settings, url, stack.kafka_bootstrap)  # type: ignore[attr-defined]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    ids = [f"sub-{i:05d}" for i in range(subs)]
    engine.app.subscribe_many([(s, s, "enterprise") for s in ids], start)
    ends = kafka.publish(engine.producer(), settings.topics.usage, (
        (ids[n % subs].encode(), orjson.dumps({
            "id": f"u{n}", "subscription": ids[n % subs], "metric": "tokens", "quantity": 1,
            "at": "2026-11-02T00:00:00+00:00"})) for n in range(events)))
    raw = raw_consume(stack.kafka_bootstrap, settings, settings.topics.usage,  # type: ignore[attr-defined]
                      ends, processes)
    env = engine.subprocess_env()
    workers = [subprocess.Popen([sys.executable, "-m", "infra.cli", "run", "--group",
                                 "--only", "ingest", "--report-every", "3600"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(processes)]
    monitor = Monitor(engine)
    try:
        elapsed, done_at_first = timed_from_first_commit(
            url, settings.topics.usage, lambda: monitor.ingested(ends))
        return (events - done_at_first) / elapsed, raw
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--subscriptions", type=int, default=2_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    with start_stack(settings, dbname="postgres") as stack:
        one, raw_one = phase(stack, settings, 1, args.events, args.subscriptions)
        two, raw_two = phase(stack, settings, 2, args.events, args.subscriptions)
    lines = [
        f"- {args.events:,} usage events over {args.subscriptions:,} subscriptions, 4 partitions",
        f"- one ingestion process: **{one:,.0f} events/s**; raw kafka-python consume of the "
        f"same topic by one process: {raw_one:,.0f} events/s (ratio **{one / raw_one:.2f}**)",
        f"- two ingestion processes in one consumer group: **{two:,.0f} events/s** "
        f"({two / one:.2f}x; this machine has 2 cores shared with PostgreSQL and the broker); "
        f"raw consume by two processes, two partitions each: {raw_two:,.0f} events/s "
        f"(ratio **{two / raw_two:.2f}**)",
    ]
    record("scale-out", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
