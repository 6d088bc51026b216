"""Coupons (docs/catalog.md, "Coupons"): the catalog's rules, applying one by command (or on
subscribing), the discount line on the invoices that charge a period's plan fee, periods spent,
redemption limits across subscriptions, expiry, plans, one coupon at a time, and `invoice
explain` reproducing a discounted invoice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.app.billing_app import BillingApplication
from domain.billing.discounts import discount_lines
from domain.catalog.model import Catalog
from domain.contracts.commands import execute, parse_command
from domain.shared.errors import BillingError, CatalogError
from infra.ops.audit import explain_invoice

JAN = datetime(2026, 1, 1, tzinfo=UTC)
CATALOG = """
[catalog]
id = "shop"
currency = "EUR"

[plans.team]
name = "Team"
price = "50.00"

[plans.team.allowances.api_calls]
included = 100
limit = "overage"
overage_unit_price = "0.10"

[plans.solo]
name = "Solo"
rank = 1
price = "60.00"

[coupons.WELCOME20]
name = "Welcome 20 %"
percent_off = 20
duration = "repeating"
periods = 3
applies_to = "plan"

[coupons.TENOFF]
name = "Ten off"
amount_off = "10.00"
duration = "once"
applies_to = "invoice"
max_redemptions = 2
redeem_by = "2026-06-30T23:59:59Z"
plans = ["team"]

[coupons.HALF]
name = "Half forever"
percent_off = "50"
duration = "forever"
"""


def app() -> BillingApplication:
    return BillingApplication(Catalog.from_toml(CATALOG),
                              env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def run(a: BillingApplication, sub: str, kind: str, at: datetime, **fields: Any) -> str:
    """As `run_command` does, without its idempotency ledger (the in-memory store has none):
    the subscription and the coupons it redeemed saved together."""
    command = parse_command({"id": f"{kind}-{at.isoformat()}", "type": kind,
                             "subscription": sub, "at": at.isoformat(), **fields})
    redemptions: dict[str, Any] = {}
    changed, outcome = execute(a.find(sub), command, a.catalog, a.redeemer(redemptions))
    a.save_batch([changed, *redemptions.values()], None)
    return outcome.result


def month(n: int, day: int = 1, hour: int = 0) -> datetime:
    return datetime(2026 + (n - 1) // 12, (n - 1) % 12 + 1, day, hour, tzinfo=UTC)


def invoices(a: BillingApplication, sub: str) -> list[dict[str, Any]]:
    """Issue what is due, as the invoicer does; every invoice of the subscription in order."""
    for number, (version, at) in enumerate(_triggers(a, sub), start=1):
        subscription = a.get(sub)
        if version > subscription.invoiced_through and subscription.lines_due(version):
            subscription.issue_invoice(f"INV-{sub}-{number}", a.issuer, version, at)
            a.save_batch([subscription], None)
    return [i["document"] for i in a.get(sub).invoices.values()]


def _triggers(a: BillingApplication, sub: str) -> list[tuple[int, datetime]]:
    kinds = a.get(sub).INVOICE_TRIGGERS
    return [(e.originator_version, e.timestamp) for e in a.events.get(sub)
            if type(e).__name__ in kinds]


def lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["description"], line["amount"]) for line in document["lines"]]


def test_a_plan_coupon_discounts_the_next_three_period_fees_only() -> None:
    a = app()
    run(a, "s1", "subscribe", JAN, plan="team", coupon="WELCOME20")
    a.advance_clock(month(5, 1, 2), ["s1"])
    documents = invoices(a, "s1")
    assert [lines(d) for d in documents] == [
        [("Team (month)", "50.00"), ("Coupon Welcome 20 %: 20 % off the plan fee", "-10.00")],
        [("Team (month)", "50.00"), ("Coupon Welcome 20 %: 20 % off the plan fee", "-10.00")],
        [("Team (month)", "50.00"), ("Coupon Welcome 20 %: 20 % off the plan fee", "-10.00")],
        [("Team (month)", "50.00")],
        [("Team (month)", "50.00")]]
    # before tax: 40.00 taxed at the seller's 25 % (a customer without a country)
    assert [(d["subtotal"], d["tax"]) for d in documents][:3] == [("40.00", "10.00")] * 3
    assert a.get("s1").coupon_now() is None
    explained = explain_invoice(a, documents[1])
    assert explained["reproduced"] is True
    assert [line["rule"].split(":")[0] for line in explained["lines"]] == [
        "plan fee for the period, charged in advance (terms copied from the catalog)",
        "coupon"]


def test_an_invoice_coupon_takes_its_amount_off_the_whole_next_cycle_invoice_once() -> None:
    a = app()
    run(a, "s1", "subscribe", JAN, plan="team")
    invoices(a, "s1")  # the invoicer issues the first invoice at once
    for n in range(150):  # 50 past the allowance: 5.00 of overage on the February invoice
        a.get("s1").record_usage([_usage(f"u{n}", month(1, 10))])
        a.save_batch([a.get("s1")], None)
    assert run(a, "s1", "apply_coupon", month(1, 15), coupon="TENOFF") == "applied"
    a.advance_clock(month(3, 1, 2), ["s1"])
    documents = invoices(a, "s1")
    assert [lines(d) for d in documents] == [
        [("Team (month)", "50.00")],
        [("Team (month)", "50.00"), ("api_calls over allowance", "5.00"),
         ("Coupon Ten off: 10.00 off the invoice", "-10.00")],
        [("Team (month)", "50.00")]]


def test_redemption_limit_expiry_plans_and_one_coupon_at_a_time_are_refused_with_codes(
) -> None:
    a = app()
    for sub in ("s1", "s2", "s3", "s4"):
        run(a, sub, "subscribe", JAN, plan="team")
    run(a, "s5", "subscribe", JAN, plan="solo")

    def refused(sub: str, coupon: str, at: datetime | None = None) -> str | None:
        try:
            run(a, sub, "apply_coupon", at or month(2), coupon=coupon)
        except BillingError as e:
            return e.code
        return None

    assert refused("s1", "TENOFF") is None
    assert refused("s1", "HALF") == "coupon_active"
    assert refused("s2", "TENOFF") is None
    assert refused("s3", "TENOFF") == "coupon_exhausted"  # redeemed twice already
    assert refused("s5", "TENOFF") == "coupon_not_applicable"
    assert refused("s3", "NOPE") == "unknown_coupon"
    assert refused("s3", "HALF") is None
    assert refused("s4", "TENOFF", month(7, 1, 1)) == "coupon_expired"
    redeemed = a.repository.get("coupon:shop:TENOFF")
    assert redeemed.redeemed_by == ["s1", "s2"]


def _usage(uid: str, at: datetime) -> Any:
    from domain.contracts.usage import UsageItem
    return UsageItem(uid, "s1", "api_calls", Decimal(1), at)


def test_a_fixed_amount_never_makes_an_invoice_negative_and_needs_a_plan_fee() -> None:
    coupon = {"id": "BIG", "name": "Big", "amount_off": "80.00", "applies_to": "plan",
              "periods": 1}
    fee = {"kind": "plan", "description": "Team (month)", "amount": "50.00"}
    pack = {"kind": "pack", "description": "Pack", "amount": "20.00"}
    assert [line["amount"] for line in discount_lines(coupon, [fee, pack])] == ["-50.00"]
    addon = {"kind": "addon", "description": "SSO", "amount": "20.00"}
    assert discount_lines({**coupon, "applies_to": "invoice"}, [fee, addon])[0]["amount"] == \
        "-70.00"
    # money bought in advance and usage charged during the cycle are not discounted
    on_use = {"kind": "overage", "description": "x", "amount": "9.00", "during_cycle": True}
    credits = {"kind": "credit_purchase", "description": "Prepaid credits", "amount": "900"}
    assert discount_lines({**coupon, "applies_to": "invoice"}, [fee, pack, on_use, credits]
                          )[0]["amount"] == "-50.00"
    assert discount_lines(coupon, [pack]) == []  # no period fee on this invoice
    percent = {"id": "P", "name": "P", "percent_off": "12.5", "applies_to": "invoice",
               "periods": None}
    assert discount_lines(percent, [fee, {**addon, "amount": "0.05"}])[0]["amount"] == "-6.26"


@pytest.mark.parametrize(("change", "message"), [
    (('percent_off = 20\n', ''), "percent_off or amount_off"),
    (('percent_off = 20\n', 'percent_off = 20\namount_off = 5\n'), "percent_off or amount_off"),
    (('percent_off = 20\n', 'percent_off = 120\n'), "at most 100"),
    (('periods = 3\n', ''), "goes with periods"),
    (('duration = "repeating"', 'duration = "weekly"'), "duration must be one of"),
    (('applies_to = "plan"', 'applies_to = "seats"'), "applies_to must be one of"),
    (('max_redemptions = 2', 'max_redemptions = 0'), "1 or more"),
    (('plans = ["team"]', 'plans = ["gold"]'), "no plan gold"),
    (('redeem_by = "2026-06-30T23:59:59Z"', 'redeem_by = "June"'), "RFC 3339"),
    (('amount_off = "10.00"', 'amount_off = "10.005"'), "two decimals"),
])
def test_the_catalog_refuses_unclear_coupons(change: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(CATALOG.replace(*change, 1))
