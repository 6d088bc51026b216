"""Pause and resume over a year (docs/domain.md, "Pause and resume"), pure domain on a
simulated clock: a US business on a 40.00 plan asks on February 10 to pause; the pause takes
effect when February's paid period ends, so nothing is refunded. Worked out by hand:
- January 1 and February 1: 40.00 each. February's 1,500 API calls are 500 past the 1,000
  included at 0.05 = 25.00, billed when February closes (March 1, 01:00), with no fee: the
  subscription is paused from March 1.
- Paused, usage and most commands are refused (`subscription_paused`); nothing is billed.
- April 15 it resumes: a new period from April 15, 40.00 at once, then on the 15th of each
  month to December 15.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import BillingError
from projections.quota.entitlements import Freshness, decide
from projections.quota.model import SubscriptionQuota, apply
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, replay, utc

TEAM = Catalog.from_toml("""
[catalog]
id = "team"
currency = "USD"

[plans.team]
name = "Team"
price = "40.00"

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"
""")
FEE = [("Team (month)", "40.00")]


def issued(j: Journey) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(d["issued_at"][:10], [(x["description"], x["amount"]) for x in d["lines"]])
            for d in j.issued]


def test_a_pause_at_the_periods_end_then_a_resume_that_starts_a_new_period() -> None:
    j = Journey(TEAM, "pz-austin", "team", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 2, 5), "api_calls", 1500)
    j.command(utc(2026, 2, 10), "pause")
    j.advance(utc(2026, 3, 20))
    assert j.sub.status == "paused"
    for attempt in (lambda: j.use(utc(2026, 3, 21), "api_calls", 10),
                    lambda: j.command(utc(2026, 3, 21), "add_seats", count=1)):
        with pytest.raises(BillingError) as refused:
            attempt()
        assert refused.value.code == "subscription_paused"
    j.command(utc(2026, 4, 15), "resume")
    j.advance(utc(2026, 12, 31))
    assert issued(j) == [
        ("2026-01-01", FEE), ("2026-02-01", FEE),
        ("2026-03-01", [("api_calls over allowance", "25.00")]),
        *((f"2026-{month:02d}-15", FEE) for month in range(4, 13))]
    replayed = replay(j.invoicer.history)
    assert replayed.invoices == j.sub.invoices and replayed.status == "active"


def test_resuming_before_the_pause_takes_effect_withdraws_it() -> None:
    j = Journey(TEAM, "pz-2", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 10), "pause")
    j.command(utc(2026, 1, 20), "resume")
    j.advance(utc(2026, 3, 2))
    assert [d for d, _ in issued(j)] == ["2026-01-01", "2026-02-01", "2026-03-01"]
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 3, 3), "resume")
    assert refused.value.code == "not_paused"


def test_the_quota_model_refuses_a_paused_then_an_ended_subscription() -> None:
    j = Journey(TEAM, "pz-3", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 10), "pause")
    j.advance(utc(2026, 2, 2))
    state = SubscriptionQuota("pz-3")
    reasons: list[Any] = []

    def project() -> None:
        for event in j.invoicer.history[len(reasons):]:
            apply(state, _message(event))
            row = state.metrics()["api_calls"]
            reasons.append(decide(vars(row), 0, 1, utc(2026, 2, 2), FRESH)["reason"])

    project()
    assert reasons[-1] == "subscription_paused"
    j.command(utc(2026, 2, 10), "resume")
    project()
    assert reasons[-1] is None
    j.command(utc(2026, 2, 11), "terminate")
    project()
    assert reasons[-1] == "subscription_ended"
    with pytest.raises(BillingError):
        j.sub.record_usage([UsageItem("x", "pz-3", "api_calls", 1, utc(2026, 2, 12))])


FRESH = Freshness(1, 1, None, utc(2026, 1, 1))


def _message(event: Any) -> dict[str, Any]:
    """The event as billing.events carries it (consumers/wire.py): data fields, times as
    text."""
    envelope = {"originator_id", "originator_version", "timestamp"}
    data = {k: v.isoformat() if hasattr(v, "isoformat") else v
            for k, v in vars(event).items() if k not in envelope}
    return {"subscription": event.originator_id, "version": event.originator_version,
            "type": type(event).__name__, "data": data}
