"""Unit credits over a year (docs/domain.md, "Unit credits"), pure domain on a simulated clock.
An assistant sells credits (pricing model 4): Pro includes 100 a month, then 0.10 each;
Starter 20 a month, a hard limit. A pack of 500 credits lasts 90 days across cycles. Worked out
by hand:

- Pro from 2026-01-01. Jan 2: 50 credits given (priority 1, expiring Feb 15). Jan 3: the
  500-credit pack bought (priority 0, expires Apr 3): 40.00 at once.
- Jan 10: 400 used, 300 past the 100 included: drawn from the pack first (lower priority
  number), which keeps 200. Nothing over: the Feb 1 invoice is the fee, 20.00.
- Feb 10: 300 used, 200 past: the pack's last 200. Feb 15: the 50 given expire unused. Feb 20:
  60 more, nothing left to draw: 60 over at 0.10 = 6.00 with the Mar 1 fee, 26.00.
- Then the fee each month: 12 fees, the pack, 6.00 of overage: 286.00 in 2026.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError, CatalogError
from projections.quota.model import SubscriptionQuota, apply_all
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc
from tests.scenarios.test_read_models_year import to_message

ASSISTANT_TOML = """
[catalog]
id = "assistant"
currency = "USD"

[plans.starter]
name = "Starter"
price = "5.00"
allowances.credits = { included = 20, limit = "hard" }

[plans.pro]
name = "Pro"
rank = 1
price = "20.00"
trial_days = 7
allowances.credits = { included = 100, limit = "overage", overage_unit_price = "0.10" }

[plans.pro.allowances.storage_gb]
included = 5
limit = "overage"
overage_unit_price = "1.00"
aggregation = "max"

[packs.credits-500]
name = "500 credits"
metric = "credits"
quantity = 500
price = "40.00"
lasts_days = 90
"""
ASSISTANT = Catalog.from_toml(ASSISTANT_TOML)


def events_of(j: Journey, kind: str) -> list[Any]:
    return [e for e in j.invoicer.history if type(e).__name__ == kind]


def test_unit_credits_are_drawn_in_order_as_usage_needs_them_and_expire() -> None:
    j = Journey(ASSISTANT, "as-1", "pro", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=50, priority=1,
              expires_at="2026-02-15T00:00:00Z", reason="welcome")
    bought = j.command(utc(2026, 1, 3), "buy_pack", pack="credits-500")
    assert [(x["description"], x["amount"]) for x in bought[0]["lines"]] == [
        ("500 credits (lasts 90 days)", "40.00")]
    assert [(g["id"], g["remaining"], g["expires_at"]) for g in j.sub.unit_grants_now()] == [
        ("u1", "50", "2026-02-15T00:00:00+00:00"), ("u2", "500", "2026-04-03T00:00:00+00:00")]
    j.use(utc(2026, 1, 10), "credits", 400)
    j.use(utc(2026, 2, 10), "credits", 300)
    j.use(utc(2026, 2, 20), "credits", 60)
    j.advance(utc(2026, 12, 31))
    assert [(e.timestamp, e.drawn, e.balance) for e in events_of(j, "UnitsDrawn")] == [
        (utc(2026, 1, 10), [{"grant": "u2", "quantity": "300"}], "250"),
        (utc(2026, 2, 10), [{"grant": "u2", "quantity": "200"}], "50")]
    assert [(e.timestamp, e.expired, e.balances) for e in events_of(j, "UnitsExpired")] == [
        (utc(2026, 2, 15), [{"grant": "u1", "metric": "credits", "quantity": "50"}],
         {"credits": "0"})]
    totals = [(d["issued_at"][:10], d["total"]) for d in j.issued]
    assert totals[:5] == [("2026-01-01", "20.00"), ("2026-01-03", "40.00"),
                          ("2026-02-01", "20.00"), ("2026-03-01", "26.00"),
                          ("2026-04-01", "20.00")]
    assert ("credits over allowance", "6.00") in [
        (x["description"], x["amount"]) for x in j.issued[3]["lines"]]
    assert sum(Decimal(t) for _, t in totals) == Decimal("286.00")

    # The quota model holds the balance not drawn yet beside the packs drawn into the cycle.
    state = SubscriptionQuota("as-1")
    history = [to_message(e) for e in j.invoicer.history]
    apply_all({"as-1": state}, [m for m in history if m["time"] < "2026-01-11"])
    row = state.metrics()["credits"]
    assert (row.used, row.packs, row.credits, row.remaining) == (
        Decimal(400), Decimal(300), Decimal(250), Decimal(250))


def test_a_hard_limit_goes_on_while_unit_credits_last() -> None:
    j = Journey(ASSISTANT, "as-2", "starter", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=30)
    j.use(utc(2026, 1, 5), "credits", 35)  # 15 past the 20 included: drawn
    assert (j.sub.extra["credits"], j.sub.unit_grants_now()[0]["remaining"]) == (
        Decimal(15), "15")
    state = SubscriptionQuota("as-2")
    apply_all({"as-2": state}, [to_message(e) for e in j.invoicer.history])
    row = state.metrics()["credits"]
    assert (row.remaining, row.exhausted) == (Decimal(15), False)
    j.use(utc(2026, 1, 6), "credits", 20)  # 15 drawn, 5 past everything: exhausted
    apply_all({"as-2": state}, [to_message(e) for e in j.invoicer.history])
    assert (state.metrics()["credits"].remaining, state.metrics()["credits"].exhausted) == (
        Decimal(0), True)
    j.advance(utc(2026, 2, 1, 2))  # a new cycle: the drawn units are spent, none left
    assert j.sub.extra == {} and j.sub.unit_grants_now() == []  # spent grants leave
    assert [d["total"] for d in j.issued] == ["5.00", "5.00"]  # a hard limit bills nothing


def test_late_usage_draws_into_its_closed_cycle_and_a_trial_draws_nothing() -> None:
    j = Journey(ASSISTANT, "as-3", "pro", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=100)
    j.use(utc(2026, 1, 31, 23, 30), "credits", 100)  # within the 100 included
    j.advance(utc(2026, 2, 1, 0, 10))  # the cycle rolled; January's grace window is open
    j.use(utc(2026, 1, 31, 23, 50), "credits", 30)  # late: 30 past January's allowance
    late = events_of(j, "UnitsDrawn")
    assert [(e.closing, e.drawn) for e in late] == [(True, [{"grant": "u1",
                                                              "quantity": "30"}])]
    j.advance(utc(2026, 2, 1, 2))
    closed = events_of(j, "UsagePeriodClosed")[-1]
    assert closed.charges == []  # the 30 were paid by units: no overage

    trial = Journey(ASSISTANT, "as-4", "pro", utc(2026, 1, 1), US_BUSINESS, trial=True)
    trial.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=100)
    trial.use(utc(2026, 1, 3), "credits", 150)  # usage in a trial is free: nothing drawn
    assert trial.sub.unit_grants_now()[0]["remaining"] == "100"


@pytest.mark.parametrize(("fields", "code"), [
    ({"metric": "storage_gb", "quantity": 5}, "units_not_applicable"),  # a level (max)
    ({"metric": "minutes", "quantity": 5}, "units_not_applicable"),
    ({"metric": "credits", "quantity": 0}, "invalid_quantity"),
    ({"metric": "credits", "quantity": "0.0000000001"}, "invalid_quantity"),
    ({"metric": "credits", "quantity": 5, "expires_at": "2026-01-01T00:00:00Z"},
     "invalid_expiry"),
])
def test_unit_grants_are_checked(fields: dict[str, Any], code: str) -> None:
    j = Journey(ASSISTANT, "as-5", "pro", utc(2026, 1, 1), US_BUSINESS)
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 1, 2), "grant_units", **fields)
    assert refused.value.code == code


def test_a_lasting_pack_needs_a_metric_summed_or_counted() -> None:
    with pytest.raises(CatalogError, match="summed or counted"):
        Catalog.from_toml(ASSISTANT_TOML.replace('metric = "credits"', 'metric = "storage_gb"'))
    with pytest.raises(CatalogError, match="lasts_days: from 1"):
        Catalog.from_toml(ASSISTANT_TOML.replace("lasts_days = 90", "lasts_days = 0"))


ADVANCE_TOML = ASSISTANT_TOML.replace(
    'allowances.credits = { included = 100, limit = "overage", overage_unit_price = "0.10" }',
    'allowances.credits = { included = 100, limit = "overage", overage_unit_price = "1.00", '
    'billed = "in_advance" }')


def test_a_grant_pays_only_for_usage_recorded_after_it() -> None:
    """Billed on use: 130 on Jan 5 are charged 30.00 at once; 50 units given on Jan 6 pay for
    the next 20 only, never again for the 30 already charged."""
    j = Journey(Catalog.from_toml(ADVANCE_TOML), "as-6", "pro", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 5), "credits", 130)
    j.command(utc(2026, 1, 6), "grant_units", metric="credits", quantity=50)
    j.use(utc(2026, 1, 7), "credits", 20)
    assert [e.drawn for e in events_of(j, "UnitsDrawn")] == [[{"grant": "u1",
                                                                 "quantity": "20"}]]
    assert [d["total"] for d in j.issued] == ["20.00", "30.00"]
    assert j.sub.unit_grants_now()[0]["remaining"] == "30"


def test_thresholds_count_the_units_not_drawn_yet() -> None:
    """Starter: 20 included and 1,000 units. 80 % of 1,020 is 816: using 10, 15, 5 and 1
    crosses nothing (the allowance's own 100 % is not the end any more)."""
    j = Journey(ASSISTANT, "as-7", "starter", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=1000)
    for day, quantity in ((3, 10), (4, 15), (5, 5), (6, 1)):
        j.use(utc(2026, 1, day), "credits", quantity)
    assert events_of(j, "QuotaThresholdCrossed") == []
    j.use(utc(2026, 1, 7), "credits", 800)
    assert [(e.threshold, e.used, e.limit) for e in events_of(j, "QuotaThresholdCrossed")] == [
        (80, "831", "1020")]


def test_the_quota_model_keeps_units_through_a_plan_without_the_metric() -> None:
    catalog = Catalog.from_toml(ASSISTANT_TOML.replace(
        'name = "Starter"\n', 'name = "Starter"\nrank = 1\n').replace(
        'rank = 1\nprice = "20.00"', 'rank = 2\nprice = "20.00"') + """
[plans.lite]
name = "Lite"
price = "0.00"
allowances.storage_gb = { included = 1, limit = "hard", aggregation = "max" }
""")
    j = Journey(catalog, "as-8", "starter", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=500)
    j.command(utc(2026, 1, 3), "change_plan", plan="lite")
    j.advance(utc(2026, 2, 2))
    j.command(utc(2026, 2, 3), "change_plan", plan="starter")
    j.advance(utc(2026, 3, 2))
    assert j.sub.plan_id == "starter"
    state = SubscriptionQuota("as-8")
    apply_all({"as-8": state}, [to_message(e) for e in j.invoicer.history])
    row = state.metrics()["credits"]
    assert (row.credits, row.remaining) == (Decimal(500), Decimal(520))


def test_grants_are_drawn_by_expiry_whatever_its_offset() -> None:
    j = Journey(ASSISTANT, "as-9", "pro", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=10,
              expires_at="2026-02-01T06:00:00Z")
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=10,
              expires_at="2026-02-01T10:00:00+05:00")  # 05:00 UTC: sooner
    j.use(utc(2026, 1, 5), "credits", 105)
    assert events_of(j, "UnitsDrawn")[0].drawn == [{"grant": "u2", "quantity": "5"}]
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 1, 6), "grant_credits", amount="5",
                  expires_at="9999-12-31T23:59:59-23:59")
    assert refused.value.code == "invalid_expiry"


def test_late_usage_timed_before_an_expiry_still_draws_the_grant() -> None:
    """50 units expiring Feb 1 00:30, in January's grace window: usage timed Jan 31 23:59 that
    arrives at 00:40, after the expiry, is paid by them; usage timed after it is not."""
    j = Journey(ASSISTANT, "as-10", "pro", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=50,
              expires_at="2026-02-01T00:30:00Z")
    j.use(utc(2026, 1, 31, 23, 59), "credits", 100)
    j.advance(utc(2026, 2, 1, 0, 40))
    assert [e.balances for e in events_of(j, "UnitsExpired")] == [{"credits": "0"}]
    j.use(utc(2026, 1, 31, 23, 59), "credits", 20)
    assert [(e.closing, e.drawn, e.balance) for e in events_of(j, "UnitsDrawn")] == [
        (True, [{"grant": "u1", "quantity": "20"}], "0")]
    j.advance(utc(2026, 2, 1, 2))
    assert events_of(j, "UsagePeriodClosed")[-1].charges == []


def test_grants_held_are_capped_and_expire_while_paused_in_time_order() -> None:
    j = Journey(ASSISTANT, "as-11", "pro", utc(2026, 1, 1), US_BUSINESS)
    for _ in range(200):
        j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=1,
                  expires_at="2026-03-15T00:00:00Z")
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 1, 2), "grant_units", metric="credits", quantity=1)
    assert refused.value.code == "too_many_grants"
    j.command(utc(2026, 1, 3), "pause")  # from Feb 1
    j.advance(utc(2026, 4, 1))
    j.command(utc(2026, 4, 2), "resume")
    kinds = [(type(e).__name__, e.timestamp) for e in j.invoicer.history
             if type(e).__name__ in ("Paused", "UnitsExpired", "Resumed")]
    assert kinds == [("Paused", utc(2026, 2, 1)), ("UnitsExpired", utc(2026, 3, 15)),
                     ("Resumed", utc(2026, 4, 2))]
