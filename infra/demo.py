"""`billing demo`: the whole spine on the embedded stack, with a summary a person can check.

Generates usage for a few hundred subscriptions (with duplicates and malformed messages mixed
in), runs ingestion, relay and projection until caught up, then checks the quota read model
against totals computed independently from the generated input.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from infra.kafka import clients as kafka
from infra.wiring.engine import Engine, Monitor, Workers
from projections.invoices import store as invoices
from projections.quota import store as quota_store

PLANS = ("basic", "scale", "enterprise")
CUSTOMERS = (  # rotate through tax situations: domestic, EU consumers, EU B2B, outside the EU
    {"country": "NO", "business": True, "vat_id": "NO974760673MVA"},
    {"country": "SE"},
    {"country": "DK", "business": True},
    {"country": "DE", "business": True, "vat_id": "DE136695976"},
    {"country": "FR"},
    {"country": "US", "business": True},
)
METRICS = ("conversations", "documents", "tokens")


@dataclass
class DemoInput:
    start: datetime
    subscriptions: dict[str, str]  # id -> plan
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=dict)


def generate(subscriptions: int, events: int, seed: int = 7,
             start: datetime | None = None) -> DemoInput:
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    subs = {f"sub-{i:05d}": PLANS[i % len(PLANS)] for i in range(subscriptions)}
    ids = list(subs)
    data = DemoInput(start, subs)
    sent: list[tuple[bytes, bytes]] = []
    for n in range(events):
        sub = ids[rng.randrange(len(ids))]
        metric = METRICS[rng.randrange(len(METRICS))]
        quantity = rng.randrange(1, 50) if metric != "tokens" else rng.randrange(100, 5000)
        at = start + timedelta(seconds=rng.randrange(0, 25 * 24 * 3600))
        body = {"id": f"u-{n:08d}", "subscription": sub, "metric": metric,
                "quantity": quantity if n % 5 else f"{quantity}.5",
                "at": at.isoformat(), "member": f"member-{rng.randrange(5)}"}
        value = orjson.dumps(body)
        sent.append((sub.encode(), value))
        total_key = (sub, metric)
        data.expected[total_key] = (data.expected.get(total_key, Decimal(0))
                                    + Decimal(str(body["quantity"])))
    data.messages.extend(sent)
    # Redeliveries: ~3 % of messages published again, later in the stream.
    for sub_key, value in rng.sample(sent, len(sent) * 3 // 100):
        data.messages.append((sub_key, value))
        data.duplicates += 1
    bad: list[tuple[str, bytes | None, bytes]] = [
        ("malformed_json", b"sub-00001", b'{"id": "x", "subscription": '),
        ("missing_field", b"sub-00001", b'{"id": "m1", "subscription": "sub-00001"}'),
        ("invalid_quantity", b"sub-00002",
         b'{"id":"q1","subscription":"sub-00002","metric":"tokens","quantity":-5,'
         b'"at":"2026-11-02T10:00:00+00:00"}'),
        ("invalid_timestamp", b"sub-00002",
         b'{"id":"t1","subscription":"sub-00002","metric":"tokens","quantity":5,'
         b'"at":"yesterday"}'),
        ("unknown_subscription", b"sub-99999",
         b'{"id":"s1","subscription":"sub-99999","metric":"tokens","quantity":5,'
         b'"at":"2026-11-02T10:00:00+00:00"}'),
        ("unknown_metric", b"sub-00003",
         b'{"id":"k1","subscription":"sub-00003","metric":"gpu-hours","quantity":5,'
         b'"at":"2026-11-02T10:00:00+00:00"}'),
    ]
    for i in range(max(events // 400, 1)):
        code, bad_key, bad_value = bad[i % len(bad)]
        bad_value = bad_value.replace(b'"id":"', f'"id":"bad{i}-'.encode(), 1)
        data.messages.insert(rng.randrange(len(data.messages)), (bad_key, bad_value))
        data.malformed[code] = data.malformed.get(code, 0) + 1
    return data


def publish(engine: Engine, messages: list[tuple[bytes | None, bytes]]) -> dict[int, int]:
    return kafka.publish(engine.producer(), engine.settings.topics.usage, messages)


def write_artifacts(conn: Any, directory: Path, subscription: str) -> dict[str, str]:
    """The first invoice as PDF and HTML, and this cycle's usage chart of one subscription."""
    from infra.render.invoice import invoice_html, invoice_pdf
    from infra.render.usage_chart import usage_chart_svg

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    listed = invoices.list_invoices(conn, subscription)
    if listed:
        document = invoices.read_invoice(conn, listed[-1]["number"])
        assert document is not None
        pdf = directory / f"{document['number']}.pdf"
        pdf.write_bytes(invoice_pdf(document))
        html_file = directory / f"{document['number']}.html"
        html_file.write_text(invoice_html(document), encoding="utf-8")
        written.update(invoice_pdf=str(pdf), invoice_html=str(html_file))
    rows = [r for r in quota_store.read(conn, subscription) if r["metric"] == "tokens"]
    if rows:
        row = rows[0]
        found = conn.execute("SELECT max(cycle_start) FROM usage_daily WHERE subscription_id "
                             "= %s AND cycle_start < %s",
                             (subscription, row["cycle_start"])).fetchone()
        conn.commit()
        closed = found[0] if found and found[0] else row["cycle_start"]  # the month just billed
        days, *_ = quota_store.usage_history(conn, subscription, closed)
        per_day = {d: q for m, d, q in days if m == "tokens"}
        chart = directory / f"usage-{subscription}.svg"
        chart.write_text(usage_chart_svg(subscription, "tokens", closed, row["cycle_start"],
                                         per_day, row["included"]), encoding="utf-8")
        written["usage_chart"] = str(chart)
    return written


def run_demo(engine: Engine, subscriptions: int, events: int, out: Any,
             artifacts_dir: Path = Path("out")) -> dict[str, Any]:
    data = generate(subscriptions, events)
    t_start = time.perf_counter()
    engine.app.subscribe_many(
        [(sid, f"acct-{sid[4:]}", plan,
          {"name": f"Customer {sid[4:]}", "address": f"Street {int(sid[4:]) + 1}",
           **CUSTOMERS[i % len(CUSTOMERS)]})
         for i, (sid, plan) in enumerate(data.subscriptions.items())], data.start
    )
    t_publish = time.perf_counter()
    usage_end = publish(engine, data.messages)
    t_publish = time.perf_counter() - t_publish
    out(f"published {len(data.messages):,} usage messages in {t_publish:.2f}s "
        f"({len(data.messages) / t_publish:,.0f}/s)")

    workers = Workers.of(engine)
    monitor = Monitor(engine)
    t0 = time.perf_counter()
    workers.start()
    try:
        workers.wait_caught_up(monitor, usage_end, timeout=300)
        elapsed = time.perf_counter() - t0
        november = quota_store.read(monitor.db.conn)
        # A month later: the clock rolls every cycle and closes November after its grace
        # window; the invoicer numbers the invoices; the read models follow.
        t_clock = time.perf_counter()
        recorder: Any = engine.app.recorder
        month_end = data.start.replace(month=data.start.month % 12 + 1) + timedelta(hours=1)
        engine.app.advance_clock(month_end, recorder.subscription_ids())
        deadline = time.monotonic() + 120
        while not (monitor.invoices_done() and monitor.projection_lag() == 0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"invoicing did not finish: {monitor.describe()}")
            time.sleep(0.05)
        invoicing_s = time.perf_counter() - t_clock
    finally:
        workers.stop()

    artifacts = write_artifacts(monitor.db.conn, artifacts_dir, "sub-00000")
    rows = november  # the quota as it stood when the usage was in, before the month rolled
    issued = invoices.list_invoices(monitor.db.conn)
    actual = {(r["subscription_id"], r["metric"]): r["used"] for r in rows}
    mismatches = [k for k, v in data.expected.items() if actual.get(k, Decimal(0)) != v]
    assert workers.ingestor and workers.relay and workers.projector
    stats = workers.ingestor.stats
    by_code: dict[str, int] = dict(sorted(stats.by_code.items()))
    summary: dict[str, Any] = {
        "messages": len(data.messages),
        "usage_accepted": stats.accepted,
        "duplicates_ignored": stats.duplicates,
        "duplicates_published": data.duplicates,
        "dead_lettered": stats.dead_lettered,
        "dead_lettered_by_code": by_code,
        "events_written": stats.events_written,
        "events_relayed": workers.relay.published,
        "events_projected": workers.projector.applied,
        "subscriptions": len(data.subscriptions),
        "quota_rows": len(rows),
        "quota_matches_input": not mismatches,
        "elapsed_s": round(elapsed, 2),
        "end_to_end_per_s": round(len(data.messages) / elapsed),
        "total_s": round(time.perf_counter() - t_start, 2),
        "invoices_issued": len(issued),
        "invoicing_s": round(invoicing_s, 2),
        "artifacts": artifacts,
    }
    out("")
    out("billing demo: usage -> Kafka -> event store -> relay -> billing.events -> quota")
    out(f"  subscriptions created      {summary['subscriptions']:>10,}")
    out(f"  usage messages in          {summary['messages']:>10,}")
    out(f"  usage applied (once each)  {summary['usage_accepted']:>10,}")
    out(f"  duplicates ignored         {summary['duplicates_ignored']:>10,}"
        f"   (published {data.duplicates:,} redeliveries)")
    out(f"  dead-lettered              {summary['dead_lettered']:>10,}   "
        + ", ".join(f"{k}={v}" for k, v in by_code.items()))
    out(f"  domain events written      {summary['events_written']:>10,}"
        f"   (one per subscription per micro-batch)")
    out(f"  events relayed / projected {summary['events_relayed']:>10,} / "
        f"{summary['events_projected']:,}")
    out(f"  elapsed (ingest..projected) {elapsed:>9.2f} s   "
        f"= {summary['end_to_end_per_s']:,} usage messages/s end to end")
    verdict = "yes" if not mismatches else f"NO: {len(mismatches)} (subscription, metric) differ"
    out(f"  quota equals input totals  {verdict:>10}")
    out(f"  invoices issued            {len(issued):>10,}   (first month at subscription, "
        f"second after the month closes; {invoicing_s:.2f} s)")
    for path in artifacts.values():
        out(f"  wrote {path}")
    out("")
    out("quota read model (sample):")
    out(f"  {'subscription':<12} {'metric':<14} {'included':>12} {'used':>12} "
        f"{'remaining':>12}  cycle")
    for r in rows[:9]:
        out(f"  {r['subscription_id']:<12} {r['metric']:<14} {r['included']:>12} "
            f"{r['used']:>12} {r['remaining']:>12}  "
            f"{r['cycle_start']:%Y-%m-%d}..{r['cycle_end']:%Y-%m-%d}")
    return summary
