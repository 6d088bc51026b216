"""Benchmark: projection rebuild from the event store, next to a raw read of the notification
log in the same run.

    python bench/rebuild.py [--subscriptions 5000] [--batches 100] [--processes 2] [--no-record]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from common import fill_store, peak_rss_mib, raw_log_read, record

from infra.config import Settings
from infra.ops import rebuild
from infra.stack.embedded import start_stack
from infra.wiring.engine import Engine


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=5_000)
    parser.add_argument("--batches", type=int, default=100, help="usage events per subscription")
    parser.add_argument("--processes", type=int, default=2,
                        help="also rebuild in this many processes (hash partitions)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        app = engine.app
        try:
            fill_store(app, args.subscriptions, args.batches, start)
            recorder = app.recorder
            total = recorder.max_notification_id() or 0
            read, t_raw = raw_log_read(recorder)
            reports = {}
            worker_rss: dict[tuple[str, ...], list[float]] = {}
            for names in (("quota",), ("invoices",), ("quota", "invoices")):
                reports[names, 1] = rebuild.rebuild(
                    app, stack.database_url, list(names), do_swap=False,
                    replay=lambda shadow, names=names: rebuild.replay_store(
                        app, shadow, list(names), lambda d, t: None))
                if args.processes > 1:
                    parallel = rebuild.replay_parallel(stack.database_url, settings,
                                                       list(names), args.processes)
                    reports[names, args.processes] = rebuild.rebuild(
                        app, stack.database_url, list(names), do_swap=False, replay=parallel)
                    worker_rss[names] = list(parallel.peak_rss_mib.values())
        finally:
            engine.close()
    raw_rate = read / t_raw
    lines = [
        f"- store: {total:,} events ({args.subscriptions:,} subscriptions x "
        f"{args.batches} usage events + subscriptions and catalog)",
        f"- raw notification-log read: **{raw_rate:,.0f} events/s** ({t_raw:.2f}s)",
    ]
    labels = {("quota",): "the quota projection (quota, usage per day and member)",
              ("invoices",): "the invoice projection (+ analytics, recommendations)",
              ("quota", "invoices"): "every read model in one pass"}
    for (names, processes), report in reports.items():
        rate = report.events / report.replay_seconds
        how = "one process" if processes == 1 else \
            f"{processes} processes, one hash partition of the subscriptions each"
        lines.append(
            f"- rebuild of {labels[names]} into fresh tables, {how}: **{rate:,.0f} events/s**"
            f" (replay {report.replay_seconds:.2f}s; ratio to the raw read "
            f"**{rate / raw_rate:.2f}**; with the comparison with the live tables "
            f"{report.seconds:.2f}s)")
    lines.append(f"- peak RSS: benchmark process (it wrote the store and ran the one-process "
                 f"rebuilds) "
                 f"{peak_rss_mib():,.0f} MiB" + "".join(
                     f"; {labels[names].split(' (')[0]}, {args.processes} processes: "
                     + " / ".join(f"{m:,.0f} MiB" for m in rss)
                     for names, rss in worker_rss.items()))
    record("rebuild", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
