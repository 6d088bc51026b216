"""Termination now (docs/domain.md, "Termination now"), pure domain on a simulated clock: a US
business on a 40.00 plan with one extra seat (10.00, three members on two included seats)
terminates on March 11. Worked out by hand:
- January 1: 40.00 + 10.00; February 1 and March 1 the same (no usage past the allowance).
- March 5: 1,500 API calls, 500 past the 1,000 included at 0.05 = 25.00, invoiced on March 11
  when the subscription ends (its usage closes at once).
- The unused rest of March, 21 of 31 days, comes back on a credit note referencing the March 1
  invoice: 40.00 x 21/31 = 27.096774 -> 27.10 and 10.00 x 21/31 = 6.774193 -> 6.77.
- Nothing is billed after: the clock runs to the end of the year without another document.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, replay, utc

TEAM_TEXT = """
[catalog]
id = "team"
currency = "USD"

[plans.team]
name = "Team"
price = "40.00"
included_seats = 2
extra_seat_price = "10.00"
trial_days = 14

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"
"""
TEAM = Catalog.from_toml(TEAM_TEXT)


def documents(j: Journey) -> list[tuple[Any, ...]]:
    return [(d["number"], d["kind"], d["issued_at"][:10], d.get("references"),
             [(x["description"], x["amount"]) for x in d["lines"]], d["total"])
            for d in j.issued]


def test_a_termination_bills_usage_at_once_and_refunds_the_unused_rest_by_credit_note() -> None:
    j = Journey(TEAM, "tm-austin", "team", utc(2026, 1, 1), US_BUSINESS, seats=3)
    for member in ("ann", "bob", "cid"):  # a renewal keeps the seats its members use
        j.command(utc(2026, 1, 2), "add_member", member=member)
    j.advance(utc(2026, 3, 1, 1))
    j.use(utc(2026, 3, 5), "api_calls", 1500)
    j.command(utc(2026, 3, 11), "terminate")
    j.advance(utc(2026, 12, 31))
    fee = [("Team (month)", "40.00"), ("Extra seats", "10.00")]
    assert documents(j) == [
        ("INV-2026-000001", "invoice", "2026-01-01", None, fee, "50.00"),
        ("INV-2026-000002", "invoice", "2026-02-01", None, fee, "50.00"),
        ("INV-2026-000003", "invoice", "2026-03-01", None, fee, "50.00"),
        ("INV-2026-000004", "invoice", "2026-03-11", None,
         [("api_calls over allowance", "25.00")], "25.00"),
        ("CN-2026-000001", "credit_note", "2026-03-11", "INV-2026-000003",
         [("Unused time on Team (month)", "-27.10"), ("Unused time on Extra seats", "-6.77")],
         "-33.87"),
    ]
    sub = j.sub
    assert sub.ended and sub.refund_due_now() is None
    assert sub.invoices["INV-2026-000003"]["status"] == "issued"  # a refund, not a credit
    with pytest.raises(BillingError) as refused:
        sub.record_usage([UsageItem("late", sub.id, "api_calls", 1, utc(2026, 3, 10))])
    assert refused.value.code == "subscription_ended"
    replayed = replay(j.invoicer.history)
    assert replayed.invoices == sub.invoices and replayed.status == "cancelled"


def test_a_trial_terminates_without_charge_or_refund() -> None:
    j = Journey(TEAM, "tm-trial", "team", utc(2026, 1, 1), US_BUSINESS, trial=True)
    j.use(utc(2026, 1, 5), "api_calls", 5000)
    j.command(utc(2026, 1, 8), "terminate")
    assert documents(j) == []
    assert j.sub.ended


def test_without_refund_the_period_stays_paid() -> None:
    j = Journey(TEAM, "tm-norefund", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 20), "terminate", refund=False)
    assert [d[1] for d in documents(j)] == ["invoice"]


def test_an_agreement_is_not_terminated_before_its_end() -> None:
    committed = Catalog.from_toml(TEAM_TEXT.replace("trial_days = 14",
                                                    "commitment_months = 12"))
    j = Journey(committed, "tm-agreement", "team", utc(2026, 1, 1), US_BUSINESS)
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 5, 1), "terminate")
    assert refused.value.code == "in_commitment"
