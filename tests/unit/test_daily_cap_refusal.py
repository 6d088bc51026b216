"""A daily cap that refuses usage (`on_daily_cap = "refuse"`, pricing model 4): an event that
would take the UTC day's usage past the cap is refused whole with `daily_cap_reached`, in one
batch as across batches; the next UTC day starts again; `record` (the default) records it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.app.billing_app import BillingApplication
from domain.app.record_usage import prepare_usage_batch
from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import CatalogError, CommandRefused

START = datetime(2026, 3, 1, 8, tzinfo=UTC)


def catalog(on_daily_cap: str = "refuse") -> Catalog:
    return Catalog.from_toml(f"""
[catalog]
id = "credits"
currency = "USD"
[plans.free]
name = "Free"
price = 0
[plans.free.allowances.credits]
included = 30
daily_cap = 5
on_daily_cap = "{on_daily_cap}"
""")


def app_with_subscription(on_daily_cap: str = "refuse") -> BillingApplication:
    app = BillingApplication(catalog(on_daily_cap),
                             env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.subscribe("cr-1", "acct", "free", START)
    return app


def use(n: int, quantity: int | str, hour: int, day: int = 1) -> UsageItem:
    return UsageItem(f"u{n}", "cr-1", "credits", Decimal(quantity),
                     datetime(2026, 3, day, hour, tzinfo=UTC))


def batch(app: BillingApplication, *items: UsageItem) -> list[tuple[int, str]]:
    """Apply one batch as the ingestion does; the refused items' positions and codes."""
    prepared = prepare_usage_batch(app, list(items), in_ledger=set())
    app.save_batch(prepared.aggregates, None)
    return sorted((index, error.code) for index, error in prepared.rejected)


def test_an_event_passing_the_days_cap_is_refused_whole_and_later_smaller_ones_fit() -> None:
    app = app_with_subscription()
    # 2 + 2 fit; 2 more would make 6 > 5: refused whole; then 1 fits exactly (5).
    assert batch(app, use(1, 2, 9), use(2, 2, 10), use(3, 2, 11), use(4, 1, 12)) == \
        [(2, "daily_cap_reached")]
    assert app.get("cr-1").used["credits"] == Decimal(5)
    # A later batch the same day: nothing left, even 0.5.
    assert batch(app, use(5, "0.5", 13)) == [(0, "daily_cap_reached")]
    # The next UTC day starts again (the earlier day's refusal does not carry over).
    assert batch(app, use(6, 5, 0, day=2), use(7, 1, 1, day=2)) == [(1, "daily_cap_reached")]
    assert app.get("cr-1").used["credits"] == Decimal(10)


def test_the_refusal_says_how_much_of_the_cap_is_used() -> None:
    app = app_with_subscription()
    sub = app.get("cr-1")
    sub.record_usage([use(1, 4, 9)])
    with pytest.raises(CommandRefused, match=r"credits on 2026-03-01: 4 of the daily cap of "
                                             r"5 used; 2 more would pass it") as refused:
        sub.record_usage([use(2, 2, 10)])
    assert refused.value.code == "daily_cap_reached"
    # Checked one by one without the batch path too: the second of two items is judged with
    # the first counted.
    with pytest.raises(CommandRefused):
        app.get("cr-1").record_usage([use(3, 1, 11), use(4, 1, 12)])


def test_usage_on_an_earlier_day_than_the_last_recorded_is_recorded() -> None:
    app = app_with_subscription()
    assert batch(app, use(1, 5, 9, day=2)) == []
    assert batch(app, use(2, 5, 23, day=1)) == []  # day 1's total is not kept: recorded
    assert app.get("cr-1").used["credits"] == Decimal(10)


def test_record_keeps_recording_past_the_cap() -> None:
    app = app_with_subscription("record")
    assert batch(app, use(1, 4, 9), use(2, 4, 10)) == []
    assert app.get("cr-1").used["credits"] == Decimal(8)
    assert app.get("cr-1").daily_capped == ["credits"]  # reported (DailyCapReached)


def test_the_terms_say_refuse_only_when_the_catalog_does() -> None:
    refuse = catalog().plans["free"].terms("month")["allowances"]["credits"]
    record = catalog("record").plans["free"].terms("month")["allowances"]["credits"]
    assert refuse["on_daily_cap"] == "refuse" and "on_daily_cap" not in record


@pytest.mark.parametrize(("allowance", "message"), [
    ('included = 30\ndaily_cap = 5\non_daily_cap = "block"', "on_daily_cap must be one of"),
    ('included = 30\non_daily_cap = "refuse"', "on_daily_cap needs a daily_cap"),
])
def test_a_wrong_daily_cap_action_is_refused(allowance: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(f"""
[catalog]
id = "c"
currency = "USD"
[plans.free]
name = "Free"
price = 0
[plans.free.allowances.credits]
{allowance}
""")
