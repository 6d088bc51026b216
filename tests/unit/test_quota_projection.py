"""The quota read model (projections/quota/model.py) fed with hand-built event messages."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from projections.quota.model import SubscriptionQuota, apply, apply_all

JAN = "2025-01-31T00:00:00+00:00"
FEB = "2025-02-28T00:00:00+00:00"
MAR = "2025-03-31T00:00:00+00:00"
ALLOWANCES = {
    "tokens": {"included": "100", "limit": "hard"},
    "conversations": {"included": "10", "limit": "overage", "overage_unit_price": "0.01"},
}


TERMS = {"plan_id": "team", "allowances": ALLOWANCES}


def msg(version: int, kind: str, data: dict[str, Any], sub: str = "sub-1") -> dict[str, Any]:
    return {"subscription": sub, "version": version, "type": kind, "data": data}


def subscribed(version: int = 1, sub: str = "sub-1") -> dict[str, Any]:
    return msg(version, "Subscribed", {"account": "acct-1", "terms": TERMS,
                                       "cycle_start": JAN, "cycle_end": FEB}, sub)


def usage(version: int, sub: str = "sub-1", **totals: str) -> dict[str, Any]:
    return msg(version, "UsageRecorded", {"items": [], "totals": totals}, sub)


def rolled(version: int) -> dict[str, Any]:
    return msg(version, "CycleRolled", {"closed_start": JAN, "closed_end": FEB,
                                        "closed_usage": {"tokens": "5"}, "terms": TERMS,
                                        "cycle_start": FEB, "cycle_end": MAR})


def state_after(*messages: dict[str, Any]) -> SubscriptionQuota:
    state = SubscriptionQuota("sub-1")
    for m in messages:
        apply(state, m)
    return state


def test_subscribed_creates_rows_with_nothing_used() -> None:
    rows = state_after(subscribed()).metrics()
    assert set(rows) == {"tokens", "conversations"}
    tokens = rows["tokens"]
    assert (tokens.account, tokens.plan_id, tokens.limit_kind) == ("acct-1", "team", "hard")
    assert (tokens.included, tokens.used) == (Decimal(100), Decimal(0))
    assert tokens.remaining == Decimal(100)
    assert tokens.cycle_start == datetime(2025, 1, 31, tzinfo=UTC)
    assert tokens.cycle_end == datetime(2025, 2, 28, tzinfo=UTC)
    assert not tokens.exhausted


def test_remaining_is_included_minus_used_floored_at_zero() -> None:
    state = state_after(subscribed(), usage(2, tokens="30.5", conversations="4"))
    assert state.metrics()["tokens"].remaining == Decimal("69.5")
    assert state.metrics()["conversations"].remaining == Decimal(6)
    apply(state, usage(3, tokens="80", conversations="20"))
    assert state.metrics()["tokens"].used == Decimal("110.5")
    assert state.metrics()["tokens"].remaining == Decimal(0)
    assert state.metrics()["conversations"].remaining == Decimal(0)


def test_exhausted_only_for_hard_limits_at_or_over_included() -> None:
    state = state_after(subscribed(), usage(2, tokens="99.999", conversations="10"))
    assert not state.metrics()["tokens"].exhausted
    assert not state.metrics()["conversations"].exhausted  # overage: never exhausted
    apply(state, usage(3, tokens="0.001", conversations="50"))
    assert state.metrics()["tokens"].used == Decimal(100)
    assert state.metrics()["tokens"].exhausted
    assert not state.metrics()["conversations"].exhausted


def test_redelivered_message_changes_nothing() -> None:
    state = state_after(subscribed(), usage(2, tokens="5"), usage(3, tokens="7"))
    before = copy.deepcopy(state)
    assert apply(state, usage(3, tokens="7")) is False  # same version
    assert apply(state, usage(2, tokens="5")) is False  # lower version
    assert apply(state, subscribed()) is False
    assert state == before
    assert state.version == 3
    assert state.metrics()["tokens"].used == Decimal(12)


def test_new_version_is_applied_and_returns_true() -> None:
    state = state_after(subscribed())
    assert apply(state, usage(2, tokens="1")) is True
    assert state.version == 2


def test_cycle_rolled_resets_used_and_moves_bounds() -> None:
    state = state_after(subscribed(), usage(2, tokens="100", conversations="3"), rolled(3))
    rows = state.metrics()
    assert set(rows) == {"tokens", "conversations"}
    for row in rows.values():
        assert row.used == Decimal(0)
        assert row.cycle_start == datetime(2025, 2, 28, tzinfo=UTC)
        assert row.cycle_end == datetime(2025, 3, 31, tzinfo=UTC)
        assert (row.account, row.plan_id) == ("acct-1", "team")
    assert not rows["tokens"].exhausted
    assert rows["tokens"].remaining == Decimal(100)
    assert state.version == 3


def test_usage_for_metric_without_allowance_is_ignored() -> None:
    state = state_after(subscribed(), usage(2, gpu_hours="3", tokens="1"))
    assert set(state.metrics()) == {"tokens", "conversations"}
    assert state.metrics()["tokens"].used == Decimal(1)


STREAM = [
    subscribed(1, "a"), subscribed(1, "b"), usage(2, "a", tokens="40"),
    usage(2, "b", conversations="12"), usage(3, "a", tokens="70"),
    msg(4, "CycleRolled", {"terms": TERMS, "cycle_start": FEB, "cycle_end": MAR}, "b"),
]


def test_apply_all_counts_applied_and_keeps_subscriptions_apart() -> None:
    states: dict[str, SubscriptionQuota] = {}
    assert apply_all(states, STREAM) == 6
    assert set(states) == {"a", "b"}
    assert states["a"].metrics()["tokens"].used == Decimal(110)
    assert states["a"].metrics()["tokens"].exhausted
    assert states["b"].metrics()["conversations"].used == Decimal(0)
    assert states["b"].version == 4


def test_applying_the_stream_twice_equals_once() -> None:
    once: dict[str, SubscriptionQuota] = {}
    apply_all(once, STREAM)
    twice: dict[str, SubscriptionQuota] = {}
    apply_all(twice, STREAM)
    assert apply_all(twice, STREAM) == 0
    assert twice == once


def test_a_grouped_charge_keeps_each_groups_use_and_its_own_allowance() -> None:
    grouped = {"plan_id": "team", "allowances": {"calls": {
        "included": "100", "limit": "overage", "overage_unit_price": "0.10",
        "group_by": "workspace"}, "tokens": {"included": "5", "limit": "hard"}}}
    item = {"metric": "calls", "quantity": "7", "at": "2025-02-01T00:00:00+00:00"}
    state = state_after(
        msg(1, "Subscribed", {"account": "acct-1", "terms": grouped, "cycle_start": JAN,
                              "cycle_end": FEB}),
        msg(2, "UsageRecorded", {"items": [{**item, "workspace": "ws-a"},
                                           {**item, "workspace": "ws-a"}, item,
                                           {**item, "metric": "tokens", "workspace": "ws-a"}],
                                 "totals": {"calls": "21", "tokens": "7"}}))
    start = datetime(2025, 1, 31, tzinfo=UTC)
    assert state.by_group == {("calls", start, "ws-a"): Decimal(14),
                              ("calls", start, ""): Decimal(7)}  # "": without a workspace
    rows = state.metrics()
    assert (rows["calls"].group_by, rows["calls"].used) == ("workspace", Decimal(21))
    assert rows["tokens"].group_by is None


def test_a_plan_without_metrics_keeps_what_a_later_plan_with_metrics_needs() -> None:
    """Rows carry the account and the cycle; a plan metering nothing has no rows, so they are
    kept apart (`unmetered`), and moving on to a plan with metrics makes its rows."""
    bare = {"plan_id": "seats-only", "allowances": {}}
    state = state_after(
        msg(1, "Subscribed", {"account": "acct-1", "terms": bare, "cycle_start": JAN,
                              "cycle_end": FEB}),
        msg(2, "CycleRolled", {"terms": bare, "cycle_start": FEB, "cycle_end": MAR}))
    assert state.rows == {}
    assert state.unmetered == ("acct-1", datetime(2025, 2, 28, tzinfo=UTC),
                               datetime(2025, 3, 31, tzinfo=UTC))
    apply(state, msg(3, "PlanUpgraded", {"terms": TERMS}))  # same cycle, prorated
    rows = state.metrics()
    assert sorted(rows) == ["conversations", "tokens"]
    assert (rows["tokens"].account, rows["tokens"].cycle_end) == (
        "acct-1", datetime(2025, 3, 31, tzinfo=UTC))
    assert state.unmetered is None
