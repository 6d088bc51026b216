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


keep_topic(Snapshot, "domain.subscription:SubscriptionSnapshot")
