"""The base classes of the events and snapshots of every aggregate (string ids)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import (
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
)

from domain.shared.topics import keep_topic


class DomainEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime


class CreatedEvent(DomainEvent, CanInitAggregate[str]):
    originator_topic: str


class Snapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> Any:
        """The aggregate's state but what only its writer keeps: usage recorded buffered since
        the last save, and the count of its held-usage row. Usage still held is not in a
        snapshot either: a subscription is settled before one is taken."""
        snapshot = super().take(aggregate)
        for name in ("_fresh_usage", "_held_seq"):
            snapshot.state.pop(name, None)
        if snapshot.state.pop("unsettled", None):
            raise ValueError(f"{aggregate.id}: a snapshot with usage still held")
        return snapshot

    def mutate(self, aggregate: None) -> Any:
        """The aggregate as snapshotted; one that shares values between aggregates in memory
        (domain.shared.shared_values) takes them back in `restored`."""
        restored = super().mutate(aggregate)
        hook = getattr(restored, "restored", None)
        if hook is not None:
            hook()
        return restored


keep_topic(Snapshot, "domain.subscription:SubscriptionSnapshot")
