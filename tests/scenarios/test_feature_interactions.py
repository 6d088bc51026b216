"""Where the billing features meet (found by a review of their first version, each a scenario
that lost or wrongly charged money): custom prices and plan changes, refunds and what was
charged, coupons and purchases, automatic top-ups, pauses with scheduled changes, packs and user
plans across a pause or a new cycle, coupons redeemed twice."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

TEXT = """
[catalog]
id = "shop"
currency = "USD"

[plans.team]
name = "Team"
prices = { month = "100.00", year = "1000.00" }
user_plans = true

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"

[plans.scale]
name = "Scale"
rank = 1
price = "300.00"

[plans.scale.allowances.api_calls]
included = 5000
limit = "overage"
overage_unit_price = "0.05"

[packs.calls]
name = "10k calls"
metric = "api_calls"
quantity = 10000
price = "5.00"

[addons.sso]
name = "SSO"
price = "30.00"

[user_plans.sales]
premium = "75.00"

[coupons.FREE1]
name = "First month free"
percent_off = 100
applies_to = "plan"

[coupons.HALF]
name = "Half off"
percent_off = 50
duration = "forever"
"""
SHOP = Catalog.from_toml(TEXT)


def journey(name: str, **options: Any) -> Journey:
    return Journey(SHOP, name, "team", utc(2026, 1, 1), US_BUSINESS, **options)


def lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(x["description"], x["amount"]) for x in document["lines"]]


def refused(j: Journey, at: Any, kind: str, **fields: Any) -> str:
    with pytest.raises(BillingError) as error:
        j.command(at, kind, **fields)
    return error.value.code


def test_a_deal_scheduled_for_a_plan_is_left_behind_by_an_upgrade() -> None:
    j = journey("fi-1")
    j.command(utc(2026, 1, 5), "override_prices", overrides={"price": "50.00"})
    j.command(utc(2026, 1, 10), "change_plan", plan="scale")
    j.advance(utc(2026, 2, 1, 1))
    assert lines(j.issued[-1])[0] == ("Scale (month)", "300.00")
    assert "overrides" not in j.sub.terms


def test_unused_time_is_credited_from_what_was_charged() -> None:
    free = journey("fi-2", coupon="FREE1")  # January's fee discounted to 0.00
    free.command(utc(2026, 1, 16), "change_plan", plan="team", period="year")
    switch = free.issued[-1]
    # 100.00 - 100.00 of coupon, half of January left: the credit nets to nothing
    assert sum(Decimal(a) for d, a in lines(switch) if d.startswith("Unused")) == 0
    assert switch["total"] == "1000.00"
    calendar = Journey(SHOP, "fi-3", "team", utc(2026, 1, 31, 23), US_BUSINESS, billing_day=1)
    assert lines(calendar.issued[0]) == [("Team (month)", "0.13")]  # 1 hour of 744
    calendar.command(utc(2026, 1, 31, 23, 30), "change_plan", plan="team", period="year")
    assert lines(calendar.issued[-1])[0] == ("Unused time on Team (month)", "-0.07")


def test_an_invoice_coupon_does_not_discount_credits_bought_in_the_grace_window() -> None:
    j = journey("fi-4")
    j.command(utc(2026, 1, 2), "apply_coupon", coupon="HALF")
    j.advance(utc(2026, 2, 1, 0, 5))  # the roll, before the close an hour later
    j.command(utc(2026, 2, 1, 0, 10), "grant_credits", amount="1000.00", purchased=True)
    j.advance(utc(2026, 2, 1, 2))
    purchase = [d for d in j.issued if any(x["kind"] == "credit_purchase" for x in d["lines"])]
    assert purchase and all(x["kind"] != "discount" or Decimal(x["amount"]) == -50
                            for d in purchase for x in d["lines"])


def test_automatic_top_ups_reach_their_threshold_and_stop_with_the_subscription() -> None:
    j = journey("fi-5")
    assert refused(j, utc(2026, 1, 2), "configure_auto_top_up", threshold="100.00",
                   amount="10.00") == "invalid_amount"
    j.command(utc(2026, 1, 2), "grant_credits", amount="10.00")
    j.command(utc(2026, 1, 2), "configure_auto_top_up", threshold="20.00", amount="50.00")
    j.use(utc(2026, 1, 10), "api_calls", 2000)  # 50.00 past the allowance
    j.command(utc(2026, 1, 20), "terminate", refund=False)
    final = j.issued[-1]
    assert final["credits_applied"] == [{"grant": "g1", "amount": "10.00"}]
    # the balance is 0, under the threshold, but the subscription has ended: no top-up
    assert j.sub.ended and not any(x["kind"] == "credit_purchase"
                                   for d in j.issued for x in d["lines"])
    assert j.sub.credit_grants_now()[-1]["id"] == "g1"


def test_terminating_a_paused_subscription_bills_nothing_more() -> None:
    j = journey("fi-6")
    j.command(utc(2026, 1, 10), "pause")
    j.advance(utc(2026, 3, 1))
    count = len(j.issued)
    j.command(utc(2026, 4, 1), "terminate")
    j.advance(utc(2026, 6, 1))
    assert len(j.issued) == count and j.sub.ended


def test_a_pause_refuses_changes_meant_for_the_same_boundary_and_ends_packs() -> None:
    j = journey("fi-7")
    j.command(utc(2026, 1, 5), "buy_pack", pack="calls")
    j.command(utc(2026, 1, 6), "add_addon", addon="sso")
    j.command(utc(2026, 1, 10), "pause")
    assert refused(j, utc(2026, 1, 11), "remove_addon", addon="sso") == "pause_scheduled"
    assert refused(j, utc(2026, 1, 11), "change_plan", plan="scale") == "pause_scheduled"
    j.advance(utc(2026, 2, 5))
    j.command(utc(2026, 3, 1), "resume")
    assert j.sub.extra == {} and j.sub.limit_of("api_calls") == 1000


def test_a_user_plan_unassigned_then_assigned_after_a_new_cycle_is_charged() -> None:
    j = journey("fi-8")
    j.command(utc(2026, 1, 2), "assign_user_plan", member="ann", solution="sales",
              level="premium")
    j.command(utc(2026, 1, 3), "unassign_user_plan", member="ann", solution="sales")
    j.command(utc(2026, 1, 16), "change_plan", plan="team", period="year")
    j.command(utc(2026, 1, 17), "assign_user_plan", member="ann", solution="sales",
              level="premium")
    assert any(x["description"] == "sales-premium for ann" and Decimal(x["amount"]) > 0
               for x in j.issued[-1]["lines"])


def test_a_coupon_is_redeemed_once_per_subscription() -> None:
    j = journey("fi-9", coupon="FREE1")
    j.advance(utc(2026, 2, 1, 1))
    assert j.sub.coupon_now() is None
    assert refused(j, utc(2026, 2, 2), "apply_coupon", coupon="FREE1") == \
        "coupon_already_redeemed"


def test_no_full_credit_note_on_an_invoice_whose_unused_time_was_credited() -> None:
    j = journey("fi-10")
    j.command(utc(2026, 1, 16), "change_plan", plan="team", period="year")
    first = j.issued[0]["number"]
    with pytest.raises(BillingError) as refused_note:
        j.sub.issue_credit_note(first, "CN-1", j.invoicer.issuer, utc(2026, 1, 17))
    assert refused_note.value.code == "invoice_closed"


def test_a_refund_of_an_invoice_credits_paid_goes_back_to_the_credits() -> None:
    j = journey("fi-11")
    j.command(utc(2026, 1, 2), "grant_credits", amount="30.00")  # pays part of February
    j.advance(utc(2026, 2, 1, 1))
    february = j.issued[-1]
    assert february["credits_applied"] == [{"grant": "g1", "amount": "30.00"}]
    j.command(utc(2026, 2, 15), "terminate")  # 14 of 28 days left: 50.00 back
    note = j.issued[-1]
    assert (note["kind"], note["total"], note["credits_returned"], note["amount_due"]) == (
        "credit_note", "-50.00", [{"grant": "g1", "amount": "30.00"}], "-20.00")
    assert j.sub.credit_balance(utc(2026, 2, 16)) == Decimal("30.00")


def test_hostile_amounts_and_times_are_refused_with_codes() -> None:
    for fields, code in (({"amount": "1000000000.00"}, "invalid_amount"),
                         ({"amount": "5", "expires_at": "2026-01-01T00:00:00Z"},
                          "invalid_expiry")):
        assert refused(journey(f"fi-12-{code}"), utc(2026, 1, 2), "grant_credits",
                       **fields) == code
    for options, code in (({"period": "fortnight"}, "unknown_period"),
                          ({"period": "week"}, "period_not_offered"),
                          ({"overrides": {"price": "9" * 30}}, "invalid_override"),
                          ({"customer": {"country": "DE", "business": "false"}},
                           "invalid_customer"),
                          ({"customer": {"vat_id": 12345}}, "invalid_customer")):
        customer = options.pop("customer", US_BUSINESS)
        with pytest.raises(BillingError) as error:
            Journey(SHOP, "fi-13", "team", utc(2026, 1, 1), customer, **options)
        assert error.value.code == code, options
    with pytest.raises(BillingError) as error:
        Journey(SHOP, "fi-14", "team", utc(9999, 12, 15), US_BUSINESS)
    assert error.value.code == "invalid_timestamp"


def test_one_metric_is_grouped_or_counted_one_way_on_every_plan() -> None:
    from domain.shared.errors import CatalogError
    grouped = TEXT.split("[packs.calls]")[0].replace('''[plans.scale.allowances.api_calls]
included = 5000''', '''[plans.scale.allowances.api_calls]
group_by = "workspace"
included = 5000''')
    with pytest.raises(CatalogError, match="one per metric"):
        Catalog.from_toml(grouped)
