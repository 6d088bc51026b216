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

    def mutate(self, aggregate: None) -> Any:
        """The aggregate as snapshotted; one that shares values between aggregates in memory
        (domain.shared.shared_values) takes them back in `restored`."""
        restored = super().mutate(aggregate)
        hook = getattr(restored, "restored", None)
        if hook is not None:
            hook()
        return restored


keep_topic(Snapshot, "domain.subscription:SubscriptionSnapshot")
