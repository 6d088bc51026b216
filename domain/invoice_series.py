"""Gapless invoice numbers: one aggregate per issuer prefix and year. Each number is one event of
the series, so two processes drawing numbers at once meet in the event store's version check:
one retries, and the sequence has no gap and no duplicate. The numbers live in the event store,
so rebuilding read models reproduces them exactly."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate, event

from domain.invoicing import invoice_number
from domain.subscription import SubscriptionCreated, SubscriptionEvent, SubscriptionSnapshot


def series_id(prefix: str, year: int) -> str:
    return f"series:{prefix}:{year}"


class InvoiceSeries(BaseAggregate[str]):
    Snapshot = SubscriptionSnapshot
    Event = SubscriptionEvent

    class Opened(SubscriptionCreated):
        class_version = 1
        prefix: str
        year: int

    class NumberAssigned(SubscriptionEvent):
        class_version = 1
        number: str
        subscription: str

    @event(Opened)
    def __init__(self, id: str, prefix: str, year: int, timestamp: datetime) -> None:
        self.prefix = prefix
        self.year = year
        self.last = 0

    @classmethod
    def open(cls, prefix: str, year: int, at: datetime) -> InvoiceSeries:
        return cls(id=series_id(prefix, year), prefix=prefix, year=year, timestamp=at)

    def assign(self, subscription: str, at: datetime) -> str:
        number = invoice_number(self.prefix, self.year, self.last + 1)
        self._number_assigned(number=number, subscription=subscription, timestamp=at)
        return number

    @event(NumberAssigned)
    def _number_assigned(self, number: str, subscription: str, timestamp: datetime) -> None:
        self.last += 1
