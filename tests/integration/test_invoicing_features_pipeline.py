"""Coupons, prepaid credits and termination through the real command paths and the real
invoicer (PostgreSQL, and Kafka for the command topic): a coupon's redemptions are written in
the transaction of the subscription that redeems it, so its limit holds across subscriptions
and across the command topic's batches, a refusal dead-lettered with its code; credits pay
invoices and the automatic top-up is invoiced; a termination's refund becomes a credit note
numbered from the credit-note series."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest

from domain.contracts.commands import parse_command
from domain.shared.errors import BillingError
from infra.config import Settings
from infra.wiring.engine import Engine
from projections.invoices import store as invoices
from tests.conftest import TestStack
from tests.integration.helpers import engine_on_catalog, invoice_everything, publish, read_topic
from tests.integration.test_commands import command, run_commands

pytestmark = pytest.mark.integration

CATALOG = """
[catalog]
id = "shop"
currency = "EUR"

[plans.team]
name = "Team"
price = "50.00"

[coupons.LAUNCH]
name = "Launch"
percent_off = 20
applies_to = "plan"
max_redemptions = 2
"""


@pytest.fixture
def shop(settings: Settings, database_url: str, stack: TestStack,
         tmp_path: Path) -> Iterator[Engine]:
    with engine_on_catalog(settings, database_url, stack.kafka_bootstrap, tmp_path,
                           CATALOG) as opened:
        yield opened


def test_a_coupons_limit_holds_across_the_api_and_the_command_topic(shop: Engine) -> None:
    t = "2026-11-01T00:00:00+00:00"
    shop.app.handle(parse_command({"id": "c1", "type": "subscribe", "subscription": "s1",
                                   "at": t, "plan": "team", "coupon": "LAUNCH"}))
    stream = [command("c2", "subscribe", "s2", t, plan="team"),
              command("c3", "apply_coupon", "s2", t, coupon="LAUNCH"),
              command("c4", "subscribe", "s3", t, plan="team", coupon="LAUNCH")]
    run_commands(shop, publish(shop, stream, shop.settings.topics.commands))
    letters = [orjson.loads(r.value) for r in read_topic(shop, shop.settings.topics.dlq, 1)]
    assert [x["code"] for x in letters] == ["coupon_exhausted"]
    assert shop.app.load_as_stored("s2").coupon_now()["id"] == "LAUNCH"
    with pytest.raises(BillingError) as refused:
        shop.app.handle(parse_command({"id": "c5", "type": "apply_coupon", "subscription": "s2",
                                       "at": t, "coupon": "LAUNCH"}))
    assert refused.value.code == "coupon_active"
    redeemed = shop.app.repository.get("coupon:shop:LAUNCH")
    assert redeemed.redeemed_by == ["s1", "s2"]

    shop.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC), ["s1"])
    invoice_everything(shop)
    documents = [i["document"] for i in shop.app.load_as_stored("s1").invoices.values()]
    assert [[(x["description"], x["amount"]) for x in d["lines"]] for d in documents] == [
        [("Team (month)", "50.00"), ("Coupon Launch: 20 % off the plan fee", "-10.00")],
        [("Team (month)", "50.00")]]  # `once`, the default


def test_prepaid_credits_pay_invoices_through_the_invoicer_and_top_up(shop: Engine) -> None:
    t = "2026-11-01T00:00:00+00:00"
    for cid, kind, fields in (
            ("k1", "subscribe", {"plan": "team"}),
            ("k2", "grant_credits", {"amount": "70.00"}),
            ("k3", "configure_auto_top_up", {"threshold": "25.00", "amount": "100.00"})):
        shop.app.handle(parse_command({"id": cid, "type": kind, "subscription": "p1",
                                       "at": t, **fields}))
    invoice_everything(shop)  # 50.00 + 25 % VAT paid by the grant: 7.50 left, so the
    # automatic top-up is bought (its invoice comes when its event is relayed, below)
    shop.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC), ["p1"])
    invoice_everything(shop)
    sub = shop.app.load_as_stored("p1")
    documents = [i["document"] for i in sub.invoices.values()]
    assert [(d["total"], d.get("credits_applied"), d.get("amount_due")) for d in documents] == [
        ("62.50", [{"grant": "g1", "amount": "62.50"}], "0.00"),
        ("125.00", None, None),  # the automatic top-up, 100.00 + VAT: never paid by credits
        ("62.50", [{"grant": "g1", "amount": "7.50"}, {"grant": "g2", "amount": "55.00"}],
         "0.00")]
    assert [(g["id"], g["remaining"]) for g in sub.credit_grants_now()] == [
        ("g1", "0.00"), ("g2", "45.00")]
    assert [i["status"] for i in sub.invoices.values()] == ["paid", "issued", "paid"]
    with psycopg.connect(shop.database_url) as conn:  # the invoice read model agrees
        listed = [r["status"] for r in invoices.list_invoices(conn, "p1")]
    assert listed == ["paid", "issued", "paid"]


def test_a_termination_is_invoiced_and_refunded_by_the_invoicer(shop: Engine) -> None:
    for cid, kind, at in (("t1", "subscribe", "2026-11-01T00:00:00+00:00"),
                          ("t2", "terminate", "2026-11-16T00:00:00+00:00")):
        shop.app.handle(parse_command({"id": cid, "type": kind, "subscription": "e1",
                                       "at": at, **({"plan": "team"} if kind == "subscribe"
                                                    else {})}))
    invoice_everything(shop)
    sub = shop.app.load_as_stored("e1")
    assert [(n, i["kind"], i["total"]) for n, i in sub.invoices.items()] == [
        ("INV-2026-000001", "invoice", "62.50"),
        ("CN-2026-000001", "credit_note", "-31.25")]  # 15 of 30 days of 50.00, + 25 % VAT
    assert sub.refund_due_now() is None and sub.ended
    with psycopg.connect(shop.database_url) as conn:
        listed = {r["number"]: r["status"] for r in invoices.list_invoices(conn, "e1")}
    assert listed == {"INV-2026-000001": "issued", "CN-2026-000001": "issued"}
