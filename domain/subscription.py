"""The Subscription aggregate: one per customer subscription, keyed by its external id.

Every event's `timestamp` is business time passed in by the caller (the clock or the usage
event's own time): the domain never reads the wall clock. The time an event was recorded is kept
by the event store next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
    event,
)

from domain.catalog import Catalog, Plan
from domain.errors import CycleNotOver, InvalidUsage, UnknownMetric, UsageTooLate
from domain.periods import add_months, require_aware
from domain.usage import UsageItem


class SubscriptionEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime


class SubscriptionCreated(SubscriptionEvent, CanInitAggregate[str]):
    originator_topic: str


class SubscriptionSnapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]


def allowances_of(plan: Plan) -> dict[str, dict[str, str]]:
    return {metric: a.as_dict() for metric, a in sorted(plan.allowances.items())}


class Subscription(BaseAggregate[str]):
    Snapshot = SubscriptionSnapshot
    Event = SubscriptionEvent

    class Subscribed(SubscriptionCreated):
        """v1. The plan's allowances are copied in, so replay never needs the catalog."""

        class_version = 1
        account: str
        plan_id: str
        catalog_id: str
        catalog_version: str
        period_months: int
        cycle_start: datetime
        cycle_end: datetime
        allowances: dict[str, dict[str, str]]

    class UsageRecorded(SubscriptionEvent):
        """v1. One event per subscription per ingested batch: every accepted usage item
        (id, metric, quantity, at, member, workspace) and the batch totals per metric."""

        class_version = 1
        items: list[dict[str, str]]
        totals: dict[str, str]

    class CycleRolled(SubscriptionEvent):
        """v1. Closes [closed_start, closed_end) with its usage and opens the next cycle with
        fresh allowances (unused allowance does not roll over)."""

        class_version = 1
        closed_start: datetime
        closed_end: datetime
        closed_usage: dict[str, str]
        cycle_start: datetime
        cycle_end: datetime
        allowances: dict[str, dict[str, str]]

    @event(Subscribed)
    def __init__(
        self,
        id: str,
        account: str,
        plan_id: str,
        catalog_id: str,
        catalog_version: str,
        period_months: int,
        cycle_start: datetime,
        cycle_end: datetime,
        allowances: dict[str, dict[str, str]],
        timestamp: datetime,
    ) -> None:
        self.account = account
        self.plan_id = plan_id
        self.catalog_id = catalog_id
        self.catalog_version = catalog_version
        self.period_months = period_months
        self.anchor = cycle_start
        self.cycle_start = cycle_start
        self.cycle_end = cycle_end
        self.allowances = allowances
        self.used: dict[str, Decimal] = {}

    @classmethod
    def subscribe(cls, subscription_id: str, account: str, plan_id: str, catalog: Catalog,
                  at: datetime) -> Subscription:
        require_aware(at)
        plan = catalog.plan(plan_id)
        return cls(
            id=subscription_id,
            account=account,
            plan_id=plan.id,
            catalog_id=catalog.id,
            catalog_version=catalog.version,
            period_months=plan.period_months,
            cycle_start=at,
            cycle_end=add_months(at, plan.period_months),
            allowances=allowances_of(plan),
            timestamp=at,
        )

    # --- usage -------------------------------------------------------------------------------

    def check_usage(self, item: UsageItem) -> None:
        if item.subscription != self.id:
            raise InvalidUsage(f"usage for {item.subscription!r} sent to {self.id!r}",
                               "wrong_subscription")
        if item.metric not in self.allowances:
            raise UnknownMetric(f"plan {self.plan_id} has no metric {item.metric!r}")
        if item.at < self.cycle_start:
            raise UsageTooLate(
                f"usage at {item.at.isoformat()} is before the open cycle "
                f"({self.cycle_start.isoformat()})"
            )

    def record_usage(self, items: Sequence[UsageItem]) -> None:
        """Record accepted usage; items must have passed `check_usage` (checked again here)."""
        if not items:
            return
        for item in items:
            self.check_usage(item)
        totals: dict[str, Decimal] = {}
        for item in items:
            totals[item.metric] = totals.get(item.metric, Decimal(0)) + item.quantity
        self._usage_recorded(
            items=[item.as_record() for item in items],
            totals={m: str(q) for m, q in sorted(totals.items())},
            timestamp=max(item.at for item in items),
        )

    @event(UsageRecorded)
    def _usage_recorded(self, items: list[dict[str, str]], totals: dict[str, str],
                        timestamp: datetime) -> None:
        for metric, quantity in totals.items():
            self.used[metric] = self.used.get(metric, Decimal(0)) + Decimal(quantity)

    # --- cycles ------------------------------------------------------------------------------

    def check_cycle_over(self, at: datetime) -> None:
        if at < self.cycle_end:
            raise CycleNotOver(f"cycle ends {self.cycle_end.isoformat()}, it is {at.isoformat()}")

    def roll_cycle(self, at: datetime) -> None:
        """Close the open cycle at its end and open the next one (allowances reset)."""
        require_aware(at)
        self.check_cycle_over(at)
        self._cycle_rolled(
            closed_start=self.cycle_start,
            closed_end=self.cycle_end,
            closed_usage={m: str(q) for m, q in sorted(self.used.items())},
            cycle_start=self.cycle_end,
            cycle_end=self._next_boundary(self.cycle_end),
            allowances=self.allowances,
            timestamp=self.cycle_end,
        )

    def roll_cycles_until(self, at: datetime) -> int:
        """Roll as many cycles as have ended by `at`; returns how many."""
        require_aware(at)
        rolled = 0
        while at >= self.cycle_end:
            self.roll_cycle(at)
            rolled += 1
        return rolled

    def _next_boundary(self, boundary: datetime) -> datetime:
        # Count periods from the anchor so that a 31st-anchored cycle returns to the 31st.
        n = 1
        while (nxt := add_months(self.anchor, n * self.period_months)) <= boundary:
            n += 1
        return nxt

    @event(CycleRolled)
    def _cycle_rolled(self, closed_start: datetime, closed_end: datetime,
                      closed_usage: dict[str, str], cycle_start: datetime, cycle_end: datetime,
                      allowances: dict[str, dict[str, str]], timestamp: datetime) -> None:
        self.cycle_start = cycle_start
        self.cycle_end = cycle_end
        self.allowances = allowances
        self.used = {}

    # --- queries -----------------------------------------------------------------------------

    def remaining(self, metric: str) -> Decimal:
        if metric not in self.allowances:
            raise UnknownMetric(f"plan {self.plan_id} has no metric {metric!r}")
        included = Decimal(self.allowances[metric]["included"])
        return max(included - self.used.get(metric, Decimal(0)), Decimal(0))

    def metrics(self) -> Iterable[str]:
        return self.allowances.keys()
