"""Invoices end to end: clock -> events -> relay -> invoicer (numbers) -> relay -> invoice read
model; tax by country and status; gapless numbers with two invoicers at once; PDF text."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from domain.contracts.commands import parse_command
from infra.config import Settings
from infra.wiring.engine import Engine
from projections.analytics import store as analytics
from projections.invoices import store as invoices
from tests.conftest import TestStack
from tests.integration.helpers import invoice_everything, invoices_projected, until

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CUSTOMERS = {
    "sub-no": {"name": "Fjord AS", "country": "NO", "business": True, "vat_id": "NO974760673"},
    "sub-de": {"name": "Berlin GmbH", "country": "DE", "business": True, "vat_id": "DE136695976"},
    "sub-fr": {"name": "Marie Dupont", "country": "FR"},
    "sub-us": {"name": "Austin Inc", "country": "US", "business": True},
}


def subscribe_customers(engine: Engine) -> None:
    for sub, customer in CUSTOMERS.items():
        engine.app.handle(parse_command({"id": f"s-{sub}", "type": "subscribe",
                                         "subscription": sub, "at": T0.isoformat(),
                                         "plan": "basic", "customer": customer}))


def test_invoices_have_tax_by_country_and_status_and_exact_totals(engine: Engine) -> None:
    subscribe_customers(engine)
    recorder = engine.app.recorder
    engine.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC),
                             recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        issued = invoices.list_invoices(conn)
        docs = {r["subscription_id"]: [invoices.read_invoice(conn, x["number"])
                                       for x in issued if x["subscription_id"] ==
                                       r["subscription_id"]] for r in issued}
    # Each subscription: the first month at subscription, the second at the roll's closing.
    assert len(issued) == 8
    numbers = sorted(r["number"] for r in issued)
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 9)]
    expected = {  # (VAT rate, tax, total) on 190.00
        "sub-no": ("25", "47.50", "237.50", "standard"),
        "sub-de": ("0", "0.00", "190.00", "reverse_charge"),
        "sub-fr": ("20", "38.00", "228.00", "standard"),
        "sub-us": ("0", "0.00", "190.00", "outside_scope"),
    }
    for sub, (rate, tax, total, treatment) in expected.items():
        for doc in docs[sub]:
            assert doc is not None
            assert [line["amount"] for line in doc["lines"]] == ["190.00"]
            assert doc["lines"][0]["tax_rate"] == rate
            assert (doc["tax"], doc["total"], doc["tax_treatment"]) == (tax, total, treatment)
            assert doc["tax_breakdown"] == [{"rate": rate, "base": "190.00", "tax": tax}]
            assert Decimal(doc["total"]) == Decimal(doc["subtotal"]) + Decimal(doc["tax"])
            assert doc["seller"]["country"] == "NO" and doc["buyer"]["name"] == \
                CUSTOMERS[sub]["name"]


def test_status_follows_payments_void_keeps_its_number_and_credit_notes_refer(
        engine: Engine) -> None:
    subscribe_customers(engine)
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        first = {r["subscription_id"]: r["number"] for r in invoices.list_invoices(conn)}
    at = "2026-11-03T00:00:00+00:00"
    handle = engine.app.handle
    handle(parse_command({"id": "p1", "type": "record_payment", "subscription": "sub-no",
                          "at": at, "reference": first["sub-no"], "outcome": "failed",
                          "reason": "insufficient_funds", "amount": "237.50"}))
    handle(parse_command({"id": "p2", "type": "record_payment", "subscription": "sub-fr",
                          "at": at, "reference": first["sub-fr"], "outcome": "succeeded",
                          "amount": "228.00"}))
    handle(parse_command({"id": "v1", "type": "void_invoice", "subscription": "sub-us",
                          "at": at, "number": first["sub-us"]}))
    note = engine.app.issue_credit_note("sub-de", first["sub-de"],
                                        datetime(2026, 11, 4, tzinfo=UTC))
    assert note["number"] == "CN-2026-000001" and note["references"] == first["sub-de"]
    assert note["total"] == "-190.00"
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        status = {r["number"]: r["status"] for r in invoices.list_invoices(conn)}
        reason = conn.execute("SELECT status_reason FROM invoices WHERE number = %s",
                              (first["sub-no"],)).fetchone()
    assert status[first["sub-no"]] == "payment_failed" and reason == ("insufficient_funds",)
    assert status[first["sub-fr"]] == "paid"
    assert status[first["sub-us"]] == "void"  # still listed, number kept
    assert status[first["sub-de"]] == "credited" and status["CN-2026-000001"] == "issued"


def test_two_invoicers_at_once_leave_no_gap_and_no_duplicate(engine: Engine) -> None:
    subs = [f"sub-{i:03d}" for i in range(60)]
    engine.app.subscribe_many([(s, s, "basic") for s in subs], T0)
    recorder = engine.app.recorder
    engine.app.advance_clock(datetime(2027, 2, 1, 2, tzinfo=UTC),
                             recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine, loops=2)
    with psycopg.connect(engine.database_url) as conn:
        numbers = [r[0] for r in conn.execute("SELECT number FROM invoices ORDER BY number")]
    by_year: dict[str, list[int]] = {}
    for number in numbers:
        _, year, n = number.split("-")
        by_year.setdefault(year, []).append(int(n))
    # 60 x (first month + Dec) in 2026, 60 x (Jan + Feb) in 2027.
    assert {y: len(v) for y, v in by_year.items()} == {"2026": 120, "2027": 120}
    for year, seq in by_year.items():
        assert seq == list(range(1, len(seq) + 1)), year


def test_rebuilding_the_invoice_model_gives_identical_rows_and_the_pdf_reads(
        engine: Engine) -> None:
    from pypdf import PdfReader

    from infra.render.invoice import invoice_html, invoice_pdf

    subscribe_customers(engine)
    recorder = engine.app.recorder
    engine.app.advance_clock(datetime(2027, 1, 1, 2, tzinfo=UTC),
                             recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine)

    def dump() -> list[tuple[object, ...]]:
        with psycopg.connect(engine.database_url) as conn:
            rows = conn.execute("SELECT number, status, total, document::text FROM invoices "
                                "ORDER BY number").fetchall()
            rows += conn.execute("SELECT * FROM invoice_lines ORDER BY 1, 2").fetchall()
            rows += conn.execute("SELECT * FROM invoice_drafts ORDER BY 1, 2").fetchall()
        return rows

    live = dump()
    with psycopg.connect(engine.database_url) as conn, conn.cursor() as cur:
        invoices.reset(cur, positions_too=True)
    loop, _ = engine.invoice_projector()
    until(lambda: invoices_projected(engine), lambda: loop.poll_once(100), timeout=60)
    assert dump() == live

    with psycopg.connect(engine.database_url) as conn:
        doc = invoices.read_invoice(conn, "INV-2026-000001")
    assert doc is not None
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(invoice_pdf(doc))).pages)
    for expected in ("Invoice INV-2026-000001", doc["seller"]["name"], doc["buyer"]["name"],
                     "Subtotal", "Total", doc["total"], "VAT"):
        assert expected in text, expected
    assert doc["number"] in invoice_html(doc)


def test_a_backdated_invoice_is_dated_no_earlier_than_the_one_numbered_before_it(
        engine: Engine) -> None:
    """Issue 17.3: with December invoiced, a subscription backdated to November got a later
    number but an earlier date. Numbers rise with issue dates within a series: it is issued
    at the series' latest date, its lines still those of November."""
    from datetime import UTC, datetime

    app = engine.app
    dec, nov = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    app.subscribe("sub-dec", "acct-dec", "basic", dec)
    (first,) = app.invoice_batch([("sub-dec", 1, dec, "Subscribed")], None)
    app.subscribe("sub-nov", "acct-nov", "basic", nov)
    (second,) = app.invoice_batch([("sub-nov", 1, nov, "Subscribed")], None)
    assert second["number"] > first["number"]
    assert datetime.fromisoformat(second["issued_at"]) == dec
    assert [(line["period_start"], line["period_end"]) for line in second["lines"]] == [
        ("2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00")]


@pytest.fixture
def workspace_engine(settings: Settings, database_url: str,
                     stack: TestStack) -> Iterator[Engine]:
    catalog = Path(__file__).resolve().parents[2] / "examples" / "workspace_tokens.toml"
    opened = Engine.open(dataclasses.replace(settings, catalog_path=catalog), database_url,
                         stack.kafka_bootstrap)
    try:
        yield opened
    finally:
        opened.close()


def test_a_pack_is_invoiced_when_bought_and_counts_in_that_months_revenue(
        workspace_engine: Engine) -> None:
    """Issue 17.11: a pack bought on Jan 10 came on the Feb 1 invoice and in February's pack
    revenue. Through the real invoicer: an invoice of its own, dated Jan 10."""
    engine = workspace_engine
    for cid, kind, at, fields in (
            ("c1", "subscribe", "2026-01-01T09:00:00+00:00",
             {"plan": "single", "customer": CUSTOMERS["sub-no"]}),
            ("c2", "buy_pack", "2026-01-10T09:00:00+00:00", {"pack": "tokens_500k"})):
        engine.app.handle(parse_command({"id": cid, "type": kind, "subscription": "sub-ws",
                                         "at": at, **fields}))
    engine.app.advance_clock(datetime(2026, 2, 1, 11, tzinfo=UTC), ["sub-ws"])
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        issued = [(r["number"], invoices.read_invoice(conn, r["number"]))
                  for r in invoices.list_invoices(conn, "sub-ws")]
        _, pack_revenue = analytics.report(conn, "credit_pack_revenue")
    assert [(number, doc["issued_at"][:10], [x["description"] for x in doc["lines"]])
            for number, doc in issued if doc is not None] == [
        ("INV-2026-000001", "2026-01-01", ["Single project (month)"]),
        ("INV-2026-000002", "2026-01-10", ["Token pack 500,000"]),
        ("INV-2026-000003", "2026-02-01", ["Single project (month)"])]
    assert [(str(month), currency, packs, str(revenue))
            for month, currency, packs, revenue in pack_revenue] == \
        [("2026-01-01", "NOK", 1, "199.00")]


def test_a_backdated_subscriptions_older_year_is_issued_before_its_newer_one(
        engine: Engine) -> None:
    """Found from outside: with a subscription from 2025 and one from 2026, a clock advance
    put 2026's trigger first in a batch; the batch issued the old subscription's 2026 invoice
    before its 2025 one, then refused the 2025 one ("already invoiced"), forever. A batch is
    numbered in time order, so each invoice keeps its own date."""
    app = engine.app
    nov25, jan26 = datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    app.subscribe("r-old", "acct-old", "basic", nov25)
    app.subscribe("r-new", "acct-new", "basic", jan26)
    app.invoice_batch([("r-old", 1, nov25, "Subscribed"), ("r-new", 1, jan26, "Subscribed")],
                      None)
    app.advance_clock(datetime(2026, 2, 1, 2, tzinfo=UTC), ["r-old", "r-new"])
    closed = {sid: [(e.originator_version, e.timestamp) for e in app.events.get(sid)
                    if type(e).__name__ == "UsagePeriodClosed"] for sid in ("r-new", "r-old")}
    triggers = [(sid, version, at, "UsagePeriodClosed")
                for sid in ("r-new", "r-old") for version, at in closed[sid]]
    issued = app.invoice_batch(triggers, None)
    assert sorted((d["subscription"], d["number"], d["issued_at"][:10]) for d in issued) == [
        ("r-new", "INV-2026-000003", "2026-02-01"),
        ("r-old", "INV-2025-000002", "2025-12-01"),
        ("r-old", "INV-2026-000002", "2026-01-01"),
        ("r-old", "INV-2026-000004", "2026-02-01")]
