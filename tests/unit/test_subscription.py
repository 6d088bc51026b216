"""The Subscription aggregate (domain/subscription/aggregate.py), in memory only: no event store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import CycleNotOver, TimeTooFarAhead, UnknownMetric, UsageTooLate
from domain.subscription.aggregate import Subscription

PURE = settings(database=None, deadline=None, max_examples=60)

CATALOG = Catalog.from_toml("""
[catalog]
id = "unit"
version = "7"
currency = "EUR"

[plans.team]
name = "Team"
price = "100.00"
allowances.tokens = { included = 1000, limit = "hard" }
allowances.conversations = { included = "50", limit = "overage", overage_unit_price = "0.01" }
""")

ANCHOR = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)


def subscribe(at: datetime = ANCHOR) -> Subscription:
    return Subscription.subscribe("sub-1", "acct-1", "team", CATALOG, at)


def usage(
    metric: str, quantity: str | int | Decimal, at: datetime = ANCHOR, uid: str = "u"
) -> UsageItem:
    return UsageItem(uid, "sub-1", metric, Decimal(quantity), at)


def roll_until(sub: Subscription, at: datetime) -> int:
    rolled = 0
    while at >= sub.cycle_end:
        sub.roll_cycle(sub.cycle_end, CATALOG)
        rolled += 1
    return rolled


def events_of(sub: Subscription, kind: type) -> list[Any]:
    return [e for e in sub.pending_events if isinstance(e, kind)]


def test_subscribe_uses_business_time_and_copies_allowances() -> None:
    sub = subscribe()
    (event,) = sub.collect_events()
    assert isinstance(event, Subscription.Subscribed)
    assert event.timestamp == ANCHOR
    assert event.cycle_start == ANCHOR
    assert event.cycle_end == datetime(2025, 2, 28, 9, 30, tzinfo=UTC)
    assert event.terms["allowances"] == {
        "conversations": {"included": "50", "limit": "overage", "overage_unit_price": "0.01"},
        "tokens": {"included": "1000", "limit": "hard"},
    }
    terms = event.terms
    assert (event.account, terms["plan_id"], terms["catalog_id"], terms["catalog_version"]) == (
        "acct-1", "team", "unit", "7")
    assert event.charges[0]["amount"] == "100.00"  # the first month, billed in advance
    assert sub.used == {}
    assert sub.version == 1


def test_subscribe_refuses_naive_time() -> None:
    with pytest.raises(ValueError):
        subscribe(datetime(2025, 1, 31))  # noqa: DTZ001 - deliberately naive


def test_record_usage_sums_per_metric_one_event_per_call() -> None:
    sub = subscribe()
    later = ANCHOR + timedelta(hours=1)
    sub.record_usage([usage("tokens", 3, uid="a"), usage("tokens", "2.5", later, uid="b"),
                      usage("conversations", 1, uid="c")])
    sub.record_usage([usage("tokens", 10, uid="d")])
    recorded = events_of(sub, Subscription.UsageRecorded)
    assert len(recorded) == 2
    first = recorded[0]
    assert first.totals == {"conversations": "1", "tokens": "5.5"}
    assert [i["id"] for i in first.items] == ["a", "b", "c"]
    assert first.items[1] == {"id": "b", "metric": "tokens", "quantity": "2.5",
                              "at": later.isoformat()}
    assert first.timestamp == later
    assert recorded[1].totals == {"tokens": "10"}
    assert sub.used == {"tokens": Decimal("15.5"), "conversations": Decimal(1)}


def test_record_usage_of_nothing_emits_nothing() -> None:
    sub = subscribe()
    sub.record_usage([])
    assert events_of(sub, Subscription.UsageRecorded) == []


def test_unknown_metric_refused_and_nothing_recorded() -> None:
    sub = subscribe()
    with pytest.raises(UnknownMetric) as info:
        sub.record_usage([usage("tokens", 1), usage("gpu_hours", 1)])
    assert info.value.code == "unknown_metric"
    assert sub.used == {}
    assert sub.version == 1
    assert len(sub.pending_events) == 1


def test_usage_before_cycle_start_is_too_late() -> None:
    sub = subscribe()
    with pytest.raises(UsageTooLate) as info:
        sub.record_usage([usage("tokens", 1), usage("tokens", 1, ANCHOR - timedelta(seconds=1))])
    assert info.value.code == "too_late"
    assert sub.used == {}
    assert sub.version == 1


def test_roll_cycle_before_end_is_refused() -> None:
    sub = subscribe()
    with pytest.raises(CycleNotOver) as info:
        sub.roll_cycle(sub.cycle_end - timedelta(microseconds=1), CATALOG)
    assert info.value.code == "cycle_not_over"
    assert sub.version == 1
    assert sub.advance_to(sub.cycle_end - timedelta(seconds=1), CATALOG) == 0


def test_roll_cycles_over_13_months_from_jan_31() -> None:
    sub = subscribe()
    sub.record_usage([usage("tokens", 7)])
    rolled = roll_until(sub, datetime(2026, 3, 1, tzinfo=UTC))
    assert rolled == 13
    days = [(2025, 1, 31), (2025, 2, 28), (2025, 3, 31), (2025, 4, 30), (2025, 5, 31),
            (2025, 6, 30), (2025, 7, 31), (2025, 8, 31), (2025, 9, 30), (2025, 10, 31),
            (2025, 11, 30), (2025, 12, 31), (2026, 1, 31), (2026, 2, 28), (2026, 3, 31)]
    bounds = [datetime(y, m, d, 9, 30, tzinfo=UTC) for y, m, d in days]
    rolls = events_of(sub, Subscription.CycleRolled)
    assert len(rolls) == 13
    for k, roll in enumerate(rolls):
        assert (roll.closed_start, roll.closed_end) == (bounds[k], bounds[k + 1])
        assert (roll.cycle_start, roll.cycle_end) == (bounds[k + 1], bounds[k + 2])
        assert roll.timestamp == bounds[k + 1]
        assert roll.terms["allowances"]["tokens"] == {"included": "1000", "limit": "hard"}
        assert roll.charges[0]["amount"] == "100.00"  # each new month billed in advance
    assert rolls[0].closed_usage == {"tokens": "7"}
    assert all(roll.closed_usage == {} for roll in rolls[1:])
    assert (sub.cycle_start, sub.cycle_end) == (bounds[13], bounds[14])
    assert sub.used == {}


def test_each_roll_resets_usage_without_rollover() -> None:
    sub = subscribe()
    for month in range(3):
        sub.record_usage([usage("tokens", 100 + month, sub.cycle_start, uid=f"u{month}")])
        assert sub.remaining("tokens") == Decimal(900 - month)
        sub.roll_cycle(sub.cycle_end, CATALOG)
        assert sub.used == {}
        assert sub.remaining("tokens") == Decimal(1000)
    closed = [e.closed_usage for e in events_of(sub, Subscription.CycleRolled)]
    assert closed == [{"tokens": "100"}, {"tokens": "101"}, {"tokens": "102"}]


def test_remaining_is_never_negative() -> None:
    sub = subscribe()
    sub.record_usage([usage("tokens", 999), usage("conversations", 60)])
    assert sub.remaining("tokens") == Decimal(1)
    sub.record_usage([usage("tokens", 5)])
    assert sub.remaining("tokens") == Decimal(0)
    assert sub.remaining("conversations") == Decimal(0)


def replay(events: Sequence[Any]) -> Subscription:
    agg = None
    for e in events:
        agg = e.mutate(agg)
    assert isinstance(agg, Subscription)
    return agg


def test_replay_of_pending_events_rebuilds_same_state() -> None:
    sub = subscribe()
    sub.record_usage([usage("tokens", "1.5"), usage("conversations", 2)])
    roll_until(sub, datetime(2025, 4, 1, tzinfo=UTC))
    sub.record_usage([usage("tokens", 4, sub.cycle_start)])
    events = sub.collect_events()
    assert len(events) == sub.version
    rebuilt = replay(events)
    assert rebuilt.used == sub.used == {"tokens": Decimal(4)}
    assert (rebuilt.cycle_start, rebuilt.cycle_end) == (sub.cycle_start, sub.cycle_end)
    assert rebuilt.version == sub.version
    assert rebuilt.allowances == sub.allowances
    assert rebuilt.id == "sub-1"


QUANTITIES = st.lists(
    st.one_of(st.integers(min_value=1, max_value=10**9),
              st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**6), places=3)),
    max_size=20,
)


@PURE
@given(QUANTITIES, st.data())
def test_usage_sum_is_independent_of_batching(quantities: list[Any], data: st.DataObject) -> None:
    # cut points may repeat, which makes empty batches
    cuts = sorted(data.draw(st.lists(st.integers(0, len(quantities)), max_size=6)))
    edges = [0, *cuts, len(quantities)]
    batches = [quantities[a:b] for a, b in pairwise(edges)]
    sub = subscribe()
    for b, batch in enumerate(batches):
        sub.record_usage([usage("tokens", q, uid=f"{b}.{i}") for i, q in enumerate(batch)])
    assert sub.used.get("tokens", Decimal(0)) == sum(map(Decimal, quantities), Decimal(0))
    recorded = events_of(sub, Subscription.UsageRecorded)
    assert len(recorded) == sum(1 for batch in batches if batch)
    assert sum(len(e.items) for e in recorded) == len(quantities)
    assert replay(sub.collect_events()).used == sub.used


def test_input_more_than_a_period_ahead_is_refused_before_it_rolls_anything() -> None:
    sub = subscribe()
    # The open cycle is Jan 31 .. Feb 28: input may reach into the next one, not beyond.
    sub.check_not_too_far_ahead(sub.cycle_end + timedelta(days=20))
    for far in (sub.cycle_end + (sub.cycle_end - sub.cycle_start),
                datetime(9999, 12, 31, tzinfo=UTC)):
        with pytest.raises(TimeTooFarAhead) as info:
            sub.check_not_too_far_ahead(far)
        assert info.value.code == "time_too_far_ahead"
    assert sub.cycle_start == ANCHOR  # nothing moved


def test_optional_command_fields_given_as_null_are_absent() -> None:
    """The published schema allows null for an optional field: the engine reads it as absent
    (it used to refuse it with invalid_field after parsing had accepted it)."""
    from domain.catalog.model import Catalog
    from domain.contracts.commands import execute, parse_command

    catalog = Catalog.from_toml("""
[catalog]
id = "nulls"
currency = "EUR"
[plans.team]
name = "Team"
price = "10.00"
included_seats = 2
extra_seat_price = "5.00"
trial_days = 7
""")
    created, _ = execute(None, parse_command({
        "id": "n1", "type": "subscribe", "subscription": "s-null", "plan": "team",
        "at": "2026-01-01T00:00:00Z", "trial": None, "seats": None, "customer": None,
        "coupon": None, "overrides": None, "billing_day": None}), catalog)
    assert (created.status, created.seats) == ("active", 2)
    changed, outcome = execute(created, parse_command({
        "id": "n2", "type": "grant_credits", "subscription": "s-null", "amount": "5",
        "at": "2026-01-02T00:00:00Z", "priority": None, "purchased": None}), catalog)
    assert outcome.result == "applied" and changed.credit_grants_now()[0]["priority"] == 0
