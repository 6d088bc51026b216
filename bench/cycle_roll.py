"""Benchmark: roll and invoice N subscriptions (default 100,000) at a month boundary.

    python bench/cycle_roll.py [--subscriptions 100000] [--no-record]

Times the billing clock's advance (every cycle rolls, the closed month's period closes after
its grace window) and the invoicing of every closed period (numbers from the gapless series),
both straight on the event store, as the clock and the invoicer workers do."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import psycopg
from common import peak_rss_mib, record

from domain.app.billing_app import BillingApplication
from domain.billing.invoice_series import series_id
from infra.config import Settings
from infra.ops.parallel import process_runner
from infra.stack.embedded import start_stack
from infra.wiring.engine import Engine, open_billing


def periods_closed(conn: psycopg.Connection[Any], chunk: list[str]) -> bool:
    """Whether each subscription's latest event closes its period: one index probe per
    subscription. (A filter on the topic over the whole table was a parallel scan of every
    event, which took both cores for ~150 ms a chunk at 100,000 subscriptions.)"""
    row = conn.execute("SELECT count(*) FROM unnest(%s::text[]) AS k(i) WHERE "
                       "(SELECT e.topic FROM billing_events e WHERE e.originator_id = k.i "
                       "ORDER BY e.originator_version DESC LIMIT 1) LIKE '%%UsagePeriodClosed'",
                       (chunk,)).fetchone()
    return row is not None and row[0] >= len(chunk)


def invoice_slice(job: tuple[str, Settings, list[str], datetime],
                  app: BillingApplication | None = None) -> tuple[int, float]:
    """Invoice these subscriptions, 1,000 at a time once their periods have closed, as an
    invoicer process does on its partitions (several take turns at the invoice series)."""
    url, settings, ids, closed_at = job
    own = app is None
    app = app or open_billing(url, settings)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return invoice_chunks(app, conn, ids, closed_at), peak_rss_mib()
    finally:
        if own:
            app.close()


def invoice_chunks(app: BillingApplication, conn: psycopg.Connection[Any], ids: list[str],
                   closed_at: datetime) -> int:
    issued = 0
    for first in range(0, len(ids), 1_000):
        chunk = ids[first:first + 1_000]
        waited_since = time.monotonic()
        while not periods_closed(conn, chunk):  # as the invoicer waits for the events
            if time.monotonic() - waited_since > 600:
                raise TimeoutError("periods not closed after 10 minutes: did the clock fail?")
            time.sleep(0.05)
        app.preload(chunk)  # as the invoicer does (bulk loads)
        triggers = []
        for sid in chunk:
            sub = app.find(sid)
            assert sub is not None
            triggers.append((sid, sub.version, closed_at, "UsagePeriodClosed"))
        issued += len(app.invoice_batch(triggers, None))
    return issued


def mib(figures: list[float]) -> str:
    return " / ".join(f"{m:,.0f} MiB" for m in figures) or "none (in the benchmark process)"


def worker_ready(_: int) -> int:
    time.sleep(0.2)  # so that every worker of the pool takes one
    return os.getpid()


def series_last(url: str, settings: Settings, year: int) -> int:
    app = open_billing(url, settings)
    try:
        last: int = app.repository.get(series_id("INV", year)).last
        return last
    finally:
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2,
                        help="clock processes (billing clock advance --processes)")
    parser.add_argument("--invoicers", type=int, default=2,
                        help="invoicer processes (they take turns only at the numbering)")
    parser.add_argument("--overlap", action="store_true",
                        help="the invoicer follows the clock, as the workers can (measured "
                             "slower on 2 cores: they contend for the cores and the write lock)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    n = args.subscriptions
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
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # the timed part does not pay for the setup's writes
            ids = app.recorder.subscription_ids()  # type: ignore[attr-defined]
            app._cache.clear()  # the clock runs in its own process: nothing cached
            runner = (process_runner(stack.database_url, settings, args.processes)
                      if args.processes > 1 else None)
            clock_app = open_billing(stack.database_url, settings)
            closed_at = datetime(2026, 12, 1, 1, tzinfo=UTC)
            rolled: dict[str, Any] = {}

            def roll() -> None:
                t = time.perf_counter()
                rolled["counts"] = clock_app.advance_clock(closed_at, ids, batch=1_000,
                                                           runner=runner)
                rolled["seconds"] = time.perf_counter() - t

            # The invoicers are long-running workers: started (and their modules imported)
            # before the clock rolls, as in production. Each still opens its application and
            # connections inside the timed part.
            with (multiprocessing.get_context("spawn").Pool(args.invoicers)
                  if args.invoicers > 1 else nullcontext(None)) as invoicers:
                while invoicers is not None and len(set(invoicers.map(
                        worker_ready, range(args.invoicers), chunksize=1))) < args.invoicers:
                    pass  # one was still starting: the other took both
                t0 = time.perf_counter()
                clock = threading.Thread(target=roll)
                clock.start()
                if not args.overlap:
                    clock.join()
                    if "counts" not in rolled:
                        raise SystemExit("the clock failed (its error is above)")
                t_invoice_start = time.perf_counter()
                slices = [(stack.database_url, settings, ids[i::args.invoicers], closed_at)
                          for i in range(args.invoicers)]
                if invoicers is None:
                    invoiced = [invoice_slice(slices[0], app)]
                else:
                    invoiced = invoicers.map(invoice_slice, slices, chunksize=1)
            issued = sum(n for n, _ in invoiced)
            clock.join()
            t_total = time.perf_counter() - t0
            t_invoice = time.perf_counter() - t_invoice_start
            changed, events = rolled["counts"]
            t_roll = rolled["seconds"]
            clock_app.close()
            last_number = series_last(stack.database_url, settings, closed_at.year)
            if issued != n or last_number != n:
                raise SystemExit(f"expected {n} invoices numbered 1..{n}: issued {issued}, "
                                 f"series at {last_number}")
        finally:
            engine.close()
    how = ("following the clock as the invoicer worker does: each 1,000 once their periods "
           "closed" if args.overlap else "after the whole roll")
    lines = [
        f"- {n:,} subscriptions created in {t_create:.1f}s ({n / t_create:,.0f}/s)",
        f"- cycle roll ({args.processes} clock process(es)): {changed:,} subscriptions, "
        f"{events:,} events in **{t_roll:.1f}s** ({changed / t_roll:,.0f} subscriptions/s)",
        f"- invoicing ({how}): {issued:,} invoices (one per subscription, holding both "
        f"months: no invoicer ran before) by {args.invoicers} invoicer process(es) taking "
        f"turns at the gapless series in {t_invoice:.1f}s; numbers 1..{last_number:,}, each "
        f"once",
        f"- roll + invoice, from the clock's start to the last invoice: **{t_total:.1f}s** "
        f"(targets: < 60 s for 100,000, < 180 s for 1,000,000)",
        f"- peak RSS: benchmark process {peak_rss_mib():,.0f} MiB (it created the "
        f"subscriptions), clock processes "
        f"{mib(list(runner.peak_rss_mib.values()) if runner else [])}, "
        f"invoicer processes {mib([r for _, r in invoiced] if args.invoicers > 1 else [])}",
    ]
    record("cycle roll + invoicing", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
