"""Benchmark: roll and invoice N subscriptions (default 100,000) at a month boundary.

    python bench/cycle_roll.py [--subscriptions 100000] [--no-record]

Times the billing clock's advance (every cycle rolls, the closed month's period closes after
its grace window) and the invoicing of every closed period (numbers from the gapless series),
both straight on the event store, as the clock and the invoicer workers do."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from common import peak_rss_mib, record

from infra.config import Settings
from infra.engine import Engine
from infra.parallel import process_runner
from infra.stack import start_stack


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2,
                        help="clock processes (billing clock advance --processes)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        app = engine.app
        try:
            t0 = time.perf_counter()
            for first in range(0, args.subscriptions, 2_000):
                app.subscribe_many([(f"sub-{i:07d}", f"acct-{i}", ("basic", "scale")[i % 2])
                                    for i in range(first, min(first + 2_000,
                                                               args.subscriptions))], start)
            t_create = time.perf_counter() - t0
            ids = app.recorder.subscription_ids()  # type: ignore[attr-defined]
            app._cache.clear()  # the clock runs in its own process: nothing cached
            t0 = time.perf_counter()
            runner = (process_runner(stack.database_url, settings, args.processes)
                      if args.processes > 1 else None)
            changed, events = app.advance_clock(datetime(2026, 12, 1, 1, tzinfo=UTC), ids,
                                                batch=1_000, runner=runner)
            t_roll = time.perf_counter() - t0
            t0 = time.perf_counter()
            closed_at = datetime(2026, 12, 1, 1, tzinfo=UTC)
            issued = 0
            for first in range(0, len(ids), 1_000):
                triggers = []
                app.preload(ids[first:first + 1_000])  # as the invoicer does (bulk loads)
                for sid in ids[first:first + 1_000]:
                    sub = app.find(sid)
                    assert sub is not None
                    triggers.append((sid, sub.version, closed_at))
                issued += len(app.invoice_batch(triggers, None))
            t_invoice = time.perf_counter() - t0
        finally:
            engine.close()
    n = args.subscriptions
    lines = [
        f"- {n:,} subscriptions created in {t_create:.1f}s ({n / t_create:,.0f}/s)",
        f"- cycle roll ({args.processes} clock process(es)): {changed:,} subscriptions, "
        f"{events:,} events in **{t_roll:.1f}s** ({changed / t_roll:,.0f} subscriptions/s)",
        f"- invoicing: {issued:,} invoices (one per subscription, holding both months: no "
        f"invoicer ran before) in **{t_invoice:.1f}s** ({issued / t_invoice:,.0f}/s)",
        f"- roll + invoice: **{t_roll + t_invoice:.1f}s** (target < 60 s for 100,000)",
        f"- peak RSS of the process: {peak_rss_mib():,.0f} MiB",
    ]
    record("cycle roll + invoicing", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
