"""Calendar billing over a year (docs/domain.md, "Calendar billing"), pure domain on a simulated
clock: an account's second subscription starts on January 20 billed on the 1st, like its first.
Its first period runs to February 1, 12 of January's 31 days: 40.00 x 12/31 = 15.483870 ->
15.48, and 1,000 included API calls x 12/31 = 387.1 -> 387 whole calls; January's 500 calls are
113 past them at 0.05 = 5.65 on the February 1 invoice. From February 1 it bills 40.00 on the
1st of each month, as the account's other subscription does.
"""

from __future__ import annotations

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

TEAM = Catalog.from_toml("""
[catalog]
id = "team"
currency = "USD"

[plans.team]
name = "Team"
price = "40.00"
trial_days = 14

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"
""")


def test_a_calendar_subscription_starts_prorated_then_bills_on_its_day() -> None:
    j = Journey(TEAM, "cal-2", "team", utc(2026, 1, 20), US_BUSINESS, billing_day=1)
    assert j.sub.terms["allowances"]["api_calls"]["included"] == "387"
    j.use(utc(2026, 1, 25), "api_calls", 500)
    j.advance(utc(2026, 12, 1, 1))
    documents = [(d["issued_at"][:10], [(x["description"], x.get("fraction"), x["amount"])
                                        for x in d["lines"]]) for d in j.issued]
    assert documents[:3] == [
        ("2026-01-20", [("Team (month)", "0.387097", "15.48")]),
        ("2026-02-01", [("Team (month)", None, "40.00"),
                        ("api_calls over allowance", None, "5.65")]),
        ("2026-03-01", [("Team (month)", None, "40.00")])]
    assert [d for d, _ in documents[3:]] == [f"2026-{m:02d}-01" for m in range(4, 13)]
    assert j.sub.terms["allowances"]["api_calls"]["included"] == "1000"
    assert j.sub.billing_day == 1


def test_on_the_billing_day_itself_the_first_period_is_whole() -> None:
    j = Journey(TEAM, "cal-3", "team", utc(2026, 3, 15), US_BUSINESS, billing_day=15)
    assert (j.sub.cycle_end, j.issued[0]["lines"][0]["amount"]) == (utc(2026, 4, 15), "40.00")


@pytest.mark.parametrize("options", [{"billing_day": 29}, {"billing_day": 0},
                                     {"billing_day": 1, "trial": True}])
def test_a_billing_day_must_exist_every_month_and_not_follow_a_trial(options: dict) -> None:
    with pytest.raises(BillingError) as refused:
        Journey(TEAM, "cal-bad", "team", utc(2026, 1, 20), US_BUSINESS, **options)
    assert refused.value.code == "invalid_billing_day"


def test_an_accounts_subscriptions_on_one_billing_day_make_one_account_invoice() -> None:
    from projections.invoices.accounts import account_invoices

    first = Journey(TEAM, "cal-a", "team", utc(2026, 1, 1), US_BUSINESS)
    second = Journey(TEAM, "cal-b", "team", utc(2026, 1, 20), US_BUSINESS, billing_day=1)
    second.use(utc(2026, 1, 25), "api_calls", 500)
    for j in (first, second):
        j.advance(utc(2026, 3, 1, 1))
    numbered = [{**d, "number": f"{d['subscription']}/{d['number']}"}  # two test series
                for j in (first, second) for d in j.issued]
    grouped = account_invoices("acme", numbered)
    assert [(g["date"], [i["subscription"] for i in g["invoices"]], g["total"])
            for g in grouped] == [
        ("2026-01-01", ["cal-a"], "40.00"), ("2026-01-20", ["cal-b"], "15.48"),
        ("2026-02-01", ["cal-a", "cal-b"], "85.65"), ("2026-03-01", ["cal-a", "cal-b"], "80.00")]
    assert grouped[2]["invoices"][1]["lines"][1]["description"] == "api_calls over allowance"
