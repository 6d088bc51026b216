"""Usage recorded buffered (`record_usage(..., buffered=True)`, docs/usage-journal.md): held by
the subscription instead of becoming a UsageRecorded event, and carried into the stream by one
UsageSettled event before any other event. Whatever the usage, the commands and the clock, a
buffered subscription must be the unbuffered one: the same state, the same other events, and
its stream (plus what it still holds) must replay to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import BillingError
from domain.subscription.aggregate import Subscription
from domain.subscription.events import UsageRecorded, UsageSettled

PURE = settings(database=None, deadline=None, max_examples=80)

CATALOG = Catalog.from_toml("""
[catalog]
id = "buffered"
currency = "EUR"

[plans.team]
name = "Team"
price = "100.00"
allowances.tokens = { included = 1000, limit = "hard" }
allowances.conversations = { included = "50", limit = "overage", overage_unit_price = "0.01" }

[plans.team.allowances.storage_gb]
included = 5
limit = "overage"
overage_unit_price = "1.00"
aggregation = "max"

[plans.team.allowances.credits]
included = 30
limit = "overage"
overage_unit_price = "0.10"
daily_cap = 40

[packs.credits-100]
name = "100 credits"
metric = "credits"
quantity = 100
price = "8.00"
lasts_days = 45
""")

START = datetime(2026, 1, 1, 9, tzinfo=UTC)
METRICS = ("tokens", "conversations", "storage_gb", "credits")

steps = st.lists(st.one_of(
    st.tuples(st.just("use"), st.sampled_from(METRICS), st.integers(1, 400),
              st.integers(0, 30)),  # hours after the previous step
    st.tuples(st.just("settle")),
    st.tuples(st.just("pack")),
    st.tuples(st.just("clock"), st.integers(1, 40)),  # days
    st.tuples(st.just("late"), st.sampled_from(METRICS), st.integers(1, 50)),
), min_size=1, max_size=40)


def twins() -> tuple[Subscription, Subscription]:
    return (Subscription.subscribe("sub-1", "acct-1", "team", CATALOG, START),
            Subscription.subscribe("sub-1", "acct-1", "team", CATALOG, START))


def state(sub: Subscription) -> dict[str, Any]:
    """All but what counts events: a charge line notes the version of the event that made it,
    and a buffered subscription has fewer events."""
    skip = {"_pending_events", "_version", "_modified_on", "unsettled", "invoiced_through",
            "_fresh_usage", "_held_seq"}
    found = {k: v for k, v in vars(sub).items() if k not in skip}
    found["uninvoiced"] = [{k: v for k, v in line.items() if k != "event_version"}
                           for line in sub.uninvoiced]
    return found


def others(sub: Subscription) -> list[tuple[str, dict[str, Any]]]:
    """The events other than usage's own, each with its payload."""
    return [(type(e).__name__, {k: v for k, v in vars(e).items()
                                if k not in ("originator_version", "originator_id")})
            for e in sub.pending_events if not isinstance(e, UsageRecorded | UsageSettled)]


def replayed(sub: Subscription) -> Subscription:
    """The stream from its first event, then what the subscription still holds (as a load
    from the store does)."""
    aggregate: Any = None
    for event in sub.pending_events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Subscription)
    aggregate.hold_unsettled([dict(b) for b in sub.__dict__.get("unsettled") or ()])
    return aggregate


def run(subscription: Subscription, plan: list[tuple[Any, ...]], buffered: bool) -> list[str]:
    """Apply the steps as ingestion and the clock would; the refusals' codes."""
    at, n, refused = START, 0, []
    for step in plan:
        try:
            if step[0] == "use":
                at += timedelta(hours=step[3])
                subscription.advance_to(at, CATALOG)
                n += 1
                subscription.record_usage([UsageItem(f"u-{n}", "sub-1", step[1],
                                                     Decimal(step[2]), at)], buffered=buffered)
            elif step[0] == "late":
                n += 1
                subscription.record_usage([UsageItem(
                    f"u-{n}", "sub-1", step[1], Decimal(step[2]),
                    subscription.cycle_start - timedelta(hours=1))], buffered=buffered)
            elif step[0] == "settle":
                if buffered:
                    subscription.settle_usage()
            elif step[0] == "pack":
                subscription.buy_pack("credits-100", at, CATALOG)
            else:
                at += timedelta(days=step[1])
                subscription.advance_to(at, CATALOG)
        except BillingError as error:
            refused.append(error.code)
    return refused


@PURE
@given(steps)
def test_buffered_usage_is_the_same_subscription_and_replays_to_it(plan: list[Any]) -> None:
    plain, buffered = twins()
    assert run(plain, plan, buffered=False) == run(buffered, plan, buffered=True)
    assert state(buffered) == state(plain)
    assert others(buffered) == others(plain)
    assert state(replayed(buffered)) == state(buffered)


def test_usage_is_held_until_another_event_settles_it_first() -> None:
    sub, _ = twins()
    sub.collect_events()
    sub.record_usage([UsageItem("u1", "sub-1", "tokens", Decimal(100), START)], buffered=True)
    sub.record_usage([UsageItem("u2", "sub-1", "tokens", Decimal(200), START)], buffered=True)
    assert sub.pending_events == [] and sub.unsettled_items() == 2
    assert sub.used["tokens"] == Decimal(300)
    # 800 of 1,000 is the 80 % threshold: its event comes after the usage that crossed it.
    sub.record_usage([UsageItem("u3", "sub-1", "tokens", Decimal(500), START)], buffered=True)
    kinds = [type(e).__name__ for e in sub.pending_events]
    assert kinds == ["UsageSettled", "QuotaThresholdCrossed"]
    settled = sub.pending_events[0]
    assert [len(b["items"]) for b in settled.batches] == [1, 1, 1]
    assert sub.unsettled_items() == 0 and sub.used["tokens"] == Decimal(800)


def test_settling_nothing_writes_nothing() -> None:
    sub, _ = twins()
    sub.collect_events()
    sub.settle_usage()
    assert sub.pending_events == []
