"""Benchmark: time to load a subscription by history length (flat is the goal: snapshots).

    python bench/history.py [--sizes 10,10000,1000000] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from common import peak_rss_mib, record

from domain.contracts.usage import UsageItem
from infra.config import Settings
from infra.stack.embedded import start_stack
from infra.wiring.engine import Engine


def grow(app: object, sid: str, events: int, start: datetime) -> None:
    app.subscribe_many([(sid, sid, "enterprise")], start)  # type: ignore[attr-defined]
    sub = app.get(sid)  # type: ignore[attr-defined]
    for n in range(1, events):
        sub.record_usage([UsageItem(f"u{n}", sid, "tokens", Decimal(1),
                                    start + timedelta(seconds=n % 86_400))], checked=True)
        if n % 2_000 == 0 or n == events - 1:
            app.save_batch([sub], None)  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,10000,1000000")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    settings = Settings.from_env()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    results = []
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        app = engine.app
        try:
            for size in sizes:
                sid = f"sub-{size}"
                t0 = time.perf_counter()
                grow(app, sid, size, start)
                t_grow = time.perf_counter() - t0
                timings = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    loaded = app.load_as_stored(sid)
                    timings.append(time.perf_counter() - t0)
                assert loaded.version == size
                results.append((size, statistics.median(timings), t_grow))
        finally:
            engine.close()
    lines = [f"- {size:>9,} events: load **{median * 1000:.2f} ms** (median of 7 cold loads; "
             f"history written in {t_grow:.1f}s)" for size, median, t_grow in results]
    lines.append("- loading reads the newest snapshot (every 50 versions) and at most 49 events")
    lines.append(f"- peak RSS of the process: {peak_rss_mib():,.0f} MiB")
    record("history load", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
