"""Benchmark: latency from a usage event's publish to its effect in the quota read model, at a
steady rate, with the workers (ingest, relay, projection) in their own process.

    python bench/latency.py [--rates 5000,10000] [--warmup 5] [--seconds 20]
                            [--subscriptions 1000]

The workers run with the default settings. Each rate runs `--warmup` seconds before its timed
`--seconds`: the p50/p95/p99 in bold are those of the steady state (events published after the
warm-up); the same figures over every event are printed next to them.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from datetime import UTC, datetime

import loadgen
import orjson
import psycopg
from common import peak_rss_mib, record, start_workers

from infra.config import Settings
from infra.stack.embedded import start_stack
from infra.wiring.engine import Engine


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)]


def run_rate(engine: Engine, url: str, rate: int, seconds: int, warmup: int,
             subs: list[str], sample: list[str]) -> dict[str, float]:
    """Publishes to every subscription for `warmup` + `seconds` seconds; times the events of a
    sample of them (polling every row each 20 ms would load the machine more than the engine
    does). The steady-state figures leave out the events published during the warm-up (the
    workers start with cold caches and an idle pipeline); the figures over every event are
    reported too."""
    topic = engine.settings.topics.usage
    publisher = loadgen.Publisher(engine.kafka_bootstrap, engine.settings, topic)
    published: dict[str, list[float]] = {s: [] for s in sample}
    first_timed: dict[str, int] = {}  # per sampled subscription: events before the warm-up ended
    visible: dict[str, int] = {}
    latencies: list[float] = []
    steady: list[float] = []
    done = threading.Event()
    query = ("SELECT subscription_id, used FROM quota WHERE metric = 'tokens' "
             "AND subscription_id = ANY(%s)")
    with psycopg.connect(url) as conn:
        base = {sid: int(used) for sid, used in conn.execute(query, (sample,)).fetchall()}

    def observe() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.is_set():
                now = time.perf_counter()
                for sid, used in conn.execute(query, (sample,), prepare=True):
                    seen = int(used) - base.get(sid, 0)
                    times = published[sid]
                    for k in range(visible.get(sid, 0), min(seen, len(times))):
                        latencies.append(now - times[k])
                        if k >= first_timed.get(sid, 2**62):
                            steady.append(now - times[k])
                    visible[sid] = max(visible.get(sid, 0), min(seen, len(times)))
                time.sleep(0.02)

    observer = threading.Thread(target=observe)
    observer.start()
    total = rate * (warmup + seconds)
    warm = rate * warmup
    timed = total * len(sample) // len(subs)
    tick, per_tick = 0.01, max(rate // 100, 1)
    # Each tick's messages go out as one record batch per partition, in one produce request
    # per broker (bench/loadgen.py): this load generator shares the 2 cores with the engine.
    partition_of = publisher.partition_of
    start = time.perf_counter()
    for first in range(0, total, per_tick):
        if not first_timed and first >= warm:
            first_timed.update((sid, len(times)) for sid, times in published.items())
        delay = start + (first // per_tick) * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        at = datetime.now(UTC).isoformat()
        sent = time.perf_counter()
        records = []
        for n in range(first, min(first + per_tick, total)):
            sid = subs[n % len(subs)]
            times = published.get(sid)
            if times is not None:
                times.append(sent)
            key = sid.encode()
            partition = partition_of(key)
            assert partition is not None
            records.append((partition, key, orjson.dumps({
                "id": f"r{rate}-{n}", "subscription": sid, "metric": "tokens", "quantity": 1,
                "at": at})))
        publisher.publish(records)
    achieved = total / (time.perf_counter() - start)
    deadline = time.monotonic() + 120
    while len(latencies) < timed and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    observer.join()
    publisher.close()
    return {"rate": rate, "published_per_s": achieved, "seen": len(latencies), "total": timed,
            "p50": percentile(steady, 50), "p95": percentile(steady, 95),
            "p99": percentile(steady, 99), "all_p50": percentile(latencies, 50),
            "all_p99": percentile(latencies, 99), "all_max": max(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="5000,10000")
    parser.add_argument("--seconds", type=int, default=20, help="timed, after the warm-up")
    parser.add_argument("--warmup", type=int, default=5,
                        help="seconds at the same rate before the timed part")
    parser.add_argument("--subscriptions", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=100,
                        help="subscriptions whose events are timed")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        subs = [f"sub-{i:05d}" for i in range(args.subscriptions)]
        engine.app.subscribe_many([(s, s, "enterprise") for s in subs],
                                  datetime.now(UTC).replace(microsecond=0))
        env = engine.subprocess_env()
        workers = start_workers(env)
        try:
            time.sleep(2)
            sample = subs[::max(len(subs) // args.sample, 1)][:args.sample]
            results = [run_rate(engine, stack.database_url, int(r), args.seconds, args.warmup,
                                subs, sample) for r in args.rates.split(",")]
        finally:
            rss = [peak_rss_mib(w.pid) for w in workers]
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
            engine.close()
    lines = []
    for r in results:
        kept_up = r["seen"] == r["total"]
        lines.append(
            f"- {r['rate']:,} events/s target ({r['published_per_s']:,.0f}/s published, "
            f"{args.warmup}s warm-up + {args.seconds}s timed): publish -> quota visible "
            f"p50 **{r['p50'] * 1000:.0f} ms**, p95 {r['p95'] * 1000:.0f} ms, "
            f"p99 **{r['p99'] * 1000:.0f} ms**; every event, warm-up included: "
            f"p50 {r['all_p50'] * 1000:.0f} ms, p99 {r['all_p99'] * 1000:.0f} ms, "
            f"max {r['all_max'] * 1000:.0f} ms; "
            f"{'all' if kept_up else 'NOT all'} {r['seen']:,}/{r['total']:,} seen")
    lines.append("- peak RSS of the workers: " + ", ".join(
        f"{role} {mib:,.0f} MiB" for role, mib in zip(("ingest", "relay", "project"), rss,
                                                      strict=True)))
    lines.append(f"- workers (ingest, relay, projection) each in its own process; "
                 f"{args.subscriptions:,} subscriptions; the events of {len(sample)} of them "
                 f"timed (their quota rows polled every 20 ms); stack {settings.stack}, "
                 f"broker {settings.broker}")
    record("latency", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
