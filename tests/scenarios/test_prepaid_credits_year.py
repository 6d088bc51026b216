"""Prepaid credits over a year (docs/domain.md, "Prepaid credits"), pure domain on a simulated
clock: a US business on a 40.00 plan with metered API calls gets a 30.00 goodwill grant
expiring at the end of March and buys 100.00 of credits; an automatic top-up of 50.00 when
fewer than 20.00 are left. Every invoice says which grant paid how much. Worked out by hand
(no tax: the customer is outside the scope of VAT):
- Jan 1: the first invoice (40.00) is issued before any credit: 40.00 due.
- Jan 5: the 100.00 purchase is invoiced (credits never pay for credits): 100.00 due.
- Jan 6: the goodwill grant g2 (priority 0, expires Mar 31) and the bought g1 (priority 1).
- Feb 1: 40.00 + January's 200 calls past the allowance at 0.10 = 60.00: g2 pays 30.00 (it
  comes first), g1 30.00 -> due 0.00, paid; 70.00 left of g1.
- Mar 1: 40.00 from g1 -> 30.00 left. Apr 1: 40.00: g1 pays 30.00, 10.00 due; the balance is
  0 < 20.00: the automatic top-up g3 (50.00) is bought, invoiced at once (50.00 due).
- May 1: 40.00 from g3 -> 10.00 left < 20.00: top-up g4. Jun 1: 40.00: g3 10.00 + g4 30.00;
  20.00 left, not under the threshold. Jul 1: g4 pays 20.00, 20.00 due; top-up g5 ...
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, replay, utc

SHOP = Catalog.from_toml("""
[catalog]
id = "shop"
currency = "USD"

[plans.team]
name = "Team"
price = "40.00"

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.10"
""")


def summary(document: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]], str]:
    return (document["issued_at"][:10], document["total"],
            [(a["grant"], a["amount"]) for a in document.get("credits_applied", [])],
            document.get("amount_due", document["total"]))


def test_grants_pay_invoices_in_priority_order_and_the_balance_is_topped_up() -> None:
    j = Journey(SHOP, "pc-austin", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 5), "grant_credits", amount="100.00", purchased=True, priority=1)
    j.command(utc(2026, 1, 6), "grant_credits", amount=30, reason="outage on Jan 3",
              expires_at="2026-03-31T23:59:59Z")
    j.command(utc(2026, 1, 7), "configure_auto_top_up", threshold="20.00", amount="50.00")
    j.use(utc(2026, 1, 20), "api_calls", 1200)
    for month in range(1, 8):
        j.advance(utc(2026, month + 1, 1, 1))
    assert [summary(d) for d in j.issued] == [
        ("2026-01-01", "40.00", [], "40.00"),
        ("2026-01-05", "100.00", [], "100.00"),
        ("2026-02-01", "60.00", [("g2", "30.00"), ("g1", "30.00")], "0.00"),
        ("2026-03-01", "40.00", [("g1", "40.00")], "0.00"),
        ("2026-04-01", "40.00", [("g1", "30.00")], "10.00"),
        ("2026-04-01", "50.00", [], "50.00"),  # the automatic top-up g3
        ("2026-05-01", "40.00", [("g3", "40.00")], "0.00"),
        ("2026-05-01", "50.00", [], "50.00"),  # g4
        ("2026-06-01", "40.00", [("g3", "10.00"), ("g4", "30.00")], "0.00"),
        ("2026-07-01", "40.00", [("g4", "20.00")], "20.00"),
        ("2026-07-01", "50.00", [], "50.00"),  # g5
        ("2026-08-01", "40.00", [("g5", "40.00")], "0.00"),
        ("2026-08-01", "50.00", [], "50.00"),  # g6
    ]
    assert [line["description"] for line in j.issued[5]["lines"]] == [
        "Prepaid credits (automatic top-up)"]
    sub = j.sub
    assert [(g["id"], g["remaining"]) for g in sub.credit_grants_now()] == [
        ("g1", "0.00"), ("g2", "0.00"), ("g3", "0.00"), ("g4", "0.00"), ("g5", "10.00"),
        ("g6", "50.00")]
    assert sub.credit_balance(utc(2026, 8, 2)) == Decimal("60.00")
    assert sub.invoices[j.issued[2]["number"]]["status"] == "paid"  # nothing left to pay
    replayed = replay(j.invoicer.history)
    assert replayed.credit_grants_now() == sub.credit_grants_now()
    from infra.ops.audit import state_summary  # what the API and `billing state` show
    shown = state_summary(sub)
    assert shown["credits"]["usable_at_cycle_end"] == "60.00"
    assert shown["credits"]["auto_top_up"] == {"threshold": "20.00", "amount": "50.00"}
    assert shown["coupon"] is None and shown["pause_at"] is None


def test_an_expired_grant_pays_nothing_and_a_credit_note_gives_credits_back() -> None:
    j = Journey(SHOP, "pc-2", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_credits", amount="25.00", expires_at="2026-01-31T00:00:00Z")
    j.command(utc(2026, 1, 3), "grant_credits", amount="15.00")
    j.advance(utc(2026, 2, 1, 1))
    february = j.issued[-1]
    assert summary(february) == ("2026-02-01", "40.00", [("g2", "15.00")], "25.00")
    j.sub.issue_credit_note(february["number"], "CN-1", j.invoicer.issuer, utc(2026, 2, 3))
    assert j.sub.credit_balance(utc(2026, 2, 3)) == Decimal("15.00")  # g2 back; g1 expired


@pytest.mark.parametrize(("fields", "code"), [
    ({"amount": "0"}, "invalid_amount"),
    ({"amount": "10.005"}, "invalid_amount"),
    ({"amount": "10", "expires_at": "2026-01-01T00:00:00Z"}, "invalid_expiry"),
    ({"amount": "10", "expires_at": "soon"}, "invalid_field"),
])
def test_unclear_grants_are_refused_with_codes(fields: dict[str, Any], code: str) -> None:
    j = Journey(SHOP, "pc-3", "team", utc(2026, 1, 1), US_BUSINESS)
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 1, 2), "grant_credits", **fields)
    assert refused.value.code == code
