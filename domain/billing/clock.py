"""The billing clock: the persisted "now" of billing. Simulated in demos and tests (moved by
`billing clock advance --to TIME`, like a payment platform's test clock), driven by real time in
production. Moving it applies, to every subscription, whatever became due."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate, event

from domain.shared.errors import CommandRefused
from domain.shared.events import CreatedEvent, DomainEvent, Snapshot
from domain.shared.periods import require_aware
from domain.shared.topics import keep_topics

CLOCK_ID = "billing-clock"


class BillingClock(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    class Started(CreatedEvent):
        class_version = 1
        now: datetime

    class Advanced(DomainEvent):
        class_version = 1
        now: datetime
        subscriptions: int
        events: int

    @event(Started)
    def __init__(self, id: str, now: datetime, timestamp: datetime) -> None:
        self.now = now

    @classmethod
    def start(cls, now: datetime) -> BillingClock:
        require_aware(now)
        return cls(id=CLOCK_ID, now=now, timestamp=now)

    def check_forward(self, to: datetime) -> None:
        require_aware(to)
        if to < self.now:
            raise CommandRefused(f"the clock is at {self.now.isoformat()}; it never goes back",
                                 "clock_backwards")

    def advance(self, to: datetime, subscriptions: int, events: int) -> None:
        self.check_forward(to)
        self._advanced(now=to, subscriptions=subscriptions, events=events, timestamp=to)

    @event(Advanced)
    def _advanced(self, now: datetime, subscriptions: int, events: int,
                  timestamp: datetime) -> None:
        self.now = now


keep_topics("domain.clock", BillingClock)
