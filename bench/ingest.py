"""Benchmark: end-to-end usage ingest (Kafka -> durable, exactly-once event store state) next to a
raw kafka-python consume of the same topic, measured in the same run.

    python bench/ingest.py [--events 200000] [--subscriptions 1000] [--in-process] [--no-record]
                           [--warm] [--cache N] [--skewed] [--statements]

Ingestion runs in a `billing run --only ingest` worker process, as deployed (or, with
`--in-process`, in the benchmark's own process, as the runs before 2026-11-22 did).

`--warm`: a second pass of as many events (new ids, the same subscriptions, a day later) is
published behind the first and timed on its own: the first pass is cold (each subscription
read from the store on its first touch), the second is the steady state, with the worker's
subscription cache (`--cache`: BILLING_CACHE_SUBSCRIPTIONS) as warm as its bound lets it be.
The worker's cache hits and loads come from its /metrics.

`--statements` (embedded stack): PostgreSQL restarted with pg_stat_statements, and the
statements that took most of its time over the ingest run printed and recorded.

Prints both rates and their ratio and appends them to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    PostgresCost,
    committed_records,
    peak_rss_mib,
    process_cpu,
    timed_from_first_commit,
)

from consumers.loop import partitions_of
from infra.config import Settings
from infra.kafka import clients as kafka
from infra.kafka import kafka_python_internals
from infra.stack.embedded import start_stack
from infra.wiring.engine import Engine, Monitor

METRICS = ("conversations", "documents", "tokens")
PLANS = ("basic", "scale", "enterprise")


def subscription_of(n: int, subscriptions: int, skewed: bool) -> int:
    """Evenly: every subscription in turn, the same order on every pass. Skewed: usage
    concentrated as customers' usually is, the n-th event's subscription drawn with the
    probability of the first k of them (k / N) ** (1 / 3): the busiest 1 % send about a fifth of
    the usage, the busiest 10 % nearly half (a fixed sequence, the same in every run)."""
    if not skewed:
        return (n * 7919) % subscriptions
    u = (n * 0.6180339887498949) % 1.0  # evenly spread over [0, 1), deterministic
    return min(int(subscriptions * u ** 3), subscriptions - 1)


def publish(engine: Engine, events: int, subscriptions: int,
            start: datetime, first: int = 0, skewed: bool = False) -> tuple[float, dict[int, int]]:
    def messages() -> Iterator[tuple[bytes, bytes]]:
        for n in range(first, first + events):
            sub = f"sub-{subscription_of(n, subscriptions, skewed):06d}"
            yield sub.encode(), orjson.dumps({
                "id": f"u-{n:09d}", "subscription": sub, "metric": METRICS[n % 3],
                "quantity": 1 + n % 17, "at": (start + timedelta(seconds=n % 86400)).isoformat(),
                "member": f"m-{n % 7}",
            })

    t0 = time.perf_counter()
    ends = kafka.publish(engine.producer(), engine.settings.topics.usage, messages())
    return time.perf_counter() - t0, ends


def raw_consume(engine: Engine, total: int, engine_decoder: bool = False) -> float:
    """The baseline: kafka-python polling the same topic, same settings, doing nothing else,
    with kafka-python's own record decoding (or, `engine_decoder`, the engine's:
    infra.kafka.kafka_python_internals)."""
    client = kafka.consumer(engine.kafka_bootstrap, engine.settings, client_id="bench-raw")
    if not engine_decoder:
        kafka_python_internals.uninstall()
    parts = partitions_of(client, engine.settings.topics.usage)
    client.assign(parts)
    client.seek_to_beginning(*parts)
    seen = 0
    t0 = time.perf_counter()
    while seen < total:
        for records in client.poll(timeout_ms=1000).values():
            seen += len(records)
    elapsed = time.perf_counter() - t0
    client.close()
    kafka_python_internals.install()
    return elapsed


def ingest(engine: Engine, ends: dict[int, int]) -> tuple[float, dict[str, int]]:
    loop, ingestor = engine.ingestion()
    monitor = Monitor(engine)
    t0 = time.perf_counter()
    while True:
        loop.poll_once(timeout_ms=500)
        if monitor.ingested(ends):
            break
    elapsed = time.perf_counter() - t0
    loop.settle()  # the statistics of the last batch
    s = ingestor.stats
    return elapsed, {"accepted": s.accepted, "duplicates": s.duplicates,
                     "dead_lettered": s.dead_lettered, "events_written": s.events_written,
                     "batches": loop.batches}


def ingest_in_worker(engine: Engine, ends: dict[int, int], warm_ends: dict[int, int] | None,
                     postgres: PostgresCost) -> tuple[float, dict[str, int]]:
    """Ingestion as deployed: a `billing run --only ingest` process. Timed from its first
    commit (its start-up is not ingestion); the events that commit already held are left out
    of the count. Returns (seconds, figures) with the events counted in that time, and with
    `warm_ends`, the seconds the second pass took after the first (`warm_seconds`).

    The partitions do not finish a pass together: by the time the last one has, the others
    are well into the second pass's records. So each window counts the records committed in
    it (the workers' stored positions), not the pass's size: counting the pass's size put
    about a third of the second pass's work in the first window, and made the second look
    faster than it was."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "run", "--only", "ingest", "--report-every", "3600",
         "--endpoints", "127.0.0.1:0"],
        cwd=Path(__file__).resolve().parent.parent, env=engine.subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    monitor = Monitor(engine)
    warm: dict[str, int] = {}
    try:
        assert worker.stdout is not None
        port = int(worker.stdout.readline().split("/metrics on http://")[1].split(";")[0]
                   .rsplit(":", 1)[1])
        cpu_at_first = []
        elapsed, done_at_first = timed_from_first_commit(
            engine.database_url, engine.settings.topics.usage, lambda: monitor.ingested(ends),
            on_first=lambda: cpu_at_first.append(process_cpu(worker.pid)))
        cold_cpu = process_cpu(worker.pid)
        cold_committed = committed_records(engine.database_url, engine.settings.topics.usage)
        cold = cache_figures(port)
        cold_pg = postgres.spent()
        if warm_ends is not None:
            t0 = time.perf_counter()
            while not monitor.ingested(warm_ends):
                time.sleep(0.02)
            warm = {"warm_seconds": time.perf_counter() - t0,  # type: ignore[dict-item]
                    "warm_events": committed_records(engine.database_url,
                                                     engine.settings.topics.usage)
                    - cold_committed,
                    **{f"warm_{k}": v - cold[k] for k, v in cache_figures(port).items()},
                    "cold_pg_cpu": cold_pg[0], "cold_pg_wal": cold_pg[1],  # type: ignore[dict-item]
                    "warm_worker_cpu": process_cpu(worker.pid) - cold_cpu}  # type: ignore[dict-item]
        with psycopg.connect(engine.database_url) as conn:
            accepted = conn.execute("SELECT count(*) FROM usage_dedup").fetchone()
            events = conn.execute("SELECT count(*) FROM billing_events WHERE topic LIKE "
                                  "'%UsageRecorded'").fetchone()
        rss = peak_rss_mib(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    return elapsed, {"accepted": int(accepted[0]) if accepted else 0, "duplicates": 0,
                     "events_written": int(events[0]) if events else 0,
                     "timed_events": cold_committed - done_at_first, "worker_rss": round(rss),
                     "cold_worker_cpu": cold_cpu - (cpu_at_first[0] if cpu_at_first else 0.0),
                     **{f"cold_{k}": v for k, v in cold.items()}, **warm}


def with_statement_statistics(stack: Any) -> None:
    """Restart the embedded PostgreSQL with pg_stat_statements loaded (a benchmark's own
    server: the stack keeps its PostgreSQL's stop among its closers)."""
    from infra.stack.embedded import EmbeddedPostgres

    server = next(getattr(c, "__self__", None) for c in stack._closers
                  if isinstance(getattr(c, "__self__", None), EmbeddedPostgres))
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.restart("fast")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset_statements(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def top_statements(database_url: str, events: int, n: int = 8) -> list[str]:
    """The statements that took most of the server's time, per usage event."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT total_exec_time, calls, rows, regexp_replace(query, '\\s+', ' ', 'g') "
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s", (n,)).fetchall()
        total = conn.execute("SELECT sum(total_exec_time) FROM pg_stat_statements").fetchone()
    whole = float(total[0]) if total and total[0] else 1.0
    return [f"  - {ms * 1000 / events:,.1f} us per usage event ({ms / whole:.0%}), "
            f"{calls:,} calls, {rows:,} rows: `{query[:110]}`"
            for ms, calls, rows, query in rows]


def cache_figures(port: int) -> dict[str, int]:
    """The ingest worker's subscription cache so far: hits and loads (its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    figures = {}
    for name in ("hits", "loads"):
        match = re.search(rf'billing_cache_{name}_total{{role="ingest"}} (\S+)', text)
        figures[name] = int(float(match.group(1))) if match else 0
    return figures


STORED_TABLES = ("billing_events", "usage_dedup", "event_hashes", "event_anchors",
                 "billing_snapshots")


def stored_bytes(database_url: str) -> dict[str, tuple[int, int]]:
    """Each event-store table's (table bytes, index bytes), as PostgreSQL counts them."""
    sizes = {}
    with psycopg.connect(database_url) as conn:
        for table in STORED_TABLES:
            row = conn.execute("SELECT pg_table_size(%s), pg_indexes_size(%s)",
                               (table, table)).fetchone()
            sizes[table] = (int(row[0]), int(row[1])) if row else (0, 0)
    return sizes


def settled_sizes(database_url: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # sizes as they settle, not mid-write
    return stored_bytes(database_url)


def record(lines: list[str], command: str) -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
    header = "# Benchmarks\n\nFigures appended by the scripts in `bench/`; newest last.\n"
    text = path.read_text() if path.exists() else header
    text += "\n" + "\n".join(lines) + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscriptions", type=int, default=1_000)
    parser.add_argument("--in-process", action="store_true",
                        help="ingest in this process instead of a worker process")
    parser.add_argument("--warm", action="store_true",
                        help="time a second pass over the same subscriptions on its own")
    parser.add_argument("--cache", type=int, default=None,
                        help="the worker's BILLING_CACHE_SUBSCRIPTIONS (default: its own)")
    parser.add_argument("--skewed", action="store_true",
                        help="usage concentrated on the busiest subscriptions, not even")
    parser.add_argument("--statements", action="store_true",
                        help="PostgreSQL's statements by time (pg_stat_statements)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.warm and args.in_process:
        parser.error("--warm times the worker process: not with --in-process")
    if args.cache is not None:
        os.environ["BILLING_CACHE_SUBSCRIPTIONS"] = str(args.cache)

    settings = Settings.from_env()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with start_stack(settings) as stack:
        if args.statements:
            with_statement_statistics(stack)
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        try:
            for first in range(0, args.subscriptions, 2_000):
                engine.app.subscribe_many([(f"sub-{i:06d}", f"acct-{i}", PLANS[i % 3]) for i in
                                           range(first, min(first + 2_000, args.subscriptions))],
                                          start)
            t_pub, ends = publish(engine, args.events, args.subscriptions, start,
                                  skewed=args.skewed)
            warm_ends = None
            if args.warm:
                _, warm_ends = publish(engine, args.events, args.subscriptions,
                                       start + timedelta(days=1), first=args.events,
                                       skewed=args.skewed)
            before = settled_sizes(stack.database_url)
            # The baseline on both sides of the ingest run: this VM's speed drifts by tens of
            # percent within minutes, so the ratio is taken against their mean.
            t_raw_before = raw_consume(engine, args.events)
            if args.statements:
                reset_statements(stack.database_url)
            postgres = PostgresCost(stack.database_url)
            t_ing, stats = ingest(engine, ends) if args.in_process else \
                ingest_in_worker(engine, ends, warm_ends, postgres)
            pg_cpu, wal = postgres.spent()
            statements = (top_statements(stack.database_url, args.events * (2 if args.warm
                                                                          else 1))
                          if args.statements else [])
            t_raw_after = raw_consume(engine, args.events)
            t_raw_engine_decoder = raw_consume(engine, args.events, engine_decoder=True)
            after = settled_sizes(stack.database_url)
            sizes = {t: (after[t][0] - before[t][0], after[t][1] - before[t][1])
                     for t in STORED_TABLES}
        finally:
            engine.close()
    t_raw = (t_raw_before + t_raw_after) / 2
    raw_rate = args.events / t_raw
    ing_rate = stats.get("timed_events", args.events) / t_ing
    where = ("in the benchmark's process" if args.in_process else
             "in a `billing run --only ingest` worker, timed from its first commit to the end "
             f"of the first pass ({stats.get('timed_events', 0):,} events committed in that "
             "time)")
    ratio = ing_rate / raw_rate
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    command = "python bench/ingest.py " + " ".join(sys.argv[1:])
    lines = [
        f"## ingest: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{command.strip()}` (stack: {settings.stack}, broker: {settings.broker})",
        f"- machine: {cores} cores, {mem_gib:.0f} GiB, {platform.python_implementation()} "
        f"{platform.python_version()}",
        f"- input: {args.events:,} usage events over {args.subscriptions:,} subscriptions"
        f"{' (skewed: the busiest 10 % send about half)' if args.skewed else ''}, "
        f"{settings.partitions} partitions (published at {args.events / t_pub:,.0f}/s)",
        f"- raw kafka-python consume: **{raw_rate:,.0f} events/s** (mean of "
        f"{t_raw_before:.2f}s before and {t_raw_after:.2f}s after the ingest run)",
        f"- end-to-end ingest, exactly-once to PostgreSQL: **{ing_rate:,.0f} events/s** "
        f"({t_ing:.2f}s {where}; {stats['events_written']:,} usage domain events)",
        f"- ratio ingest / raw consume: **{ratio:.2f}**",
        f"- raw consume with the engine's record decoder "
        f"(infra.kafka.kafka_python_internals, which the ingester uses): "
        f"{args.events / t_raw_engine_decoder:,.0f} events/s; ratio ingest / that: "
        f"{ing_rate * t_raw_engine_decoder / args.events:.2f}",
        f"- peak RSS: benchmark process (publisher, raw consumer"
        f"{', ingestion' if args.in_process else ''}) "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
        + (f", ingest worker {stats['worker_rss']:,.0f} MiB" if "worker_rss" in stats else "")
        + (f" (subscription cache bound {args.cache:,})" if args.cache is not None else ""),
    ]
    if "cold_loads" in stats:
        lines.append(f"- first pass (cold): {stats['cold_loads']:,} subscriptions read from the "
                     f"store, {stats['cold_hits']:,} batch lookups answered by the cache")
    if "warm_seconds" in stats:
        warm_rate = stats["warm_events"] / stats["warm_seconds"]
        looked_up = stats["warm_hits"] + stats["warm_loads"]
        lines.append(
            f"- second pass (warm: {args.events:,} more events, the same subscriptions): "
            f"**{warm_rate:,.0f} events/s** ({stats['warm_events']:,} events committed in "
            f"{stats['warm_seconds']:.2f}s after the first pass's end), ratio to raw "
            f"consume **{warm_rate / raw_rate:.2f}**; cache hit rate "
            f"{stats['warm_hits'] / max(looked_up, 1):.0%} ({stats['warm_hits']:,} hits, "
            f"{stats['warm_loads']:,} loads)")
    stored_events = args.events * (2 if args.warm else 1)
    lines.append(
        f"- PostgreSQL over the ingest run ({stored_events:,} usage events): "
        f"{pg_cpu:,.1f} CPU-seconds ({pg_cpu * 1e6 / stored_events:,.0f} us per usage event), "
        f"{wal / stored_events:,.0f} bytes of WAL per usage event")
    if statements:
        lines.append("- PostgreSQL's statements by time over the ingest run "
                     "(pg_stat_statements):")
        lines.extend(statements)
    if "cold_pg_cpu" in stats:
        lines.append(f"  (of which the first pass {stats['cold_pg_cpu']:,.1f} CPU-seconds, the "
                     f"second {pg_cpu - stats['cold_pg_cpu']:,.1f})")
    if "cold_worker_cpu" in stats:
        lines.append(f"- ingest worker's CPU: first pass {stats['cold_worker_cpu']:,.1f} "
                     f"CPU-seconds from its first commit"
                     + (f", second pass {stats['warm_worker_cpu']:,.1f}"
                        if "warm_worker_cpu" in stats else ""))
    total = sum(t + i for t, i in sizes.values())
    lines.append(
        f"- stored in PostgreSQL per usage event (growth of tables + indexes over the run): "
        f"**{total / stored_events:,.0f} bytes**: " + ", ".join(
            f"{name} {(t + i) / stored_events:,.0f} ({i / stored_events:,.0f} of it indexes)"
            for name, (t, i) in sizes.items()) + f"; {stats['events_written']:,} usage domain "
        f"events for {stored_events:,} usage events")
    print("\n".join(lines))
    print(stats)
    if stats["accepted"] != stored_events:
        print(f"ERROR: accepted {stats['accepted']} of {args.events}: {stats}", file=sys.stderr)
        return 1
    if not args.no_record:
        record(lines, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
