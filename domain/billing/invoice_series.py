"""Gapless invoice numbers: one aggregate per issuer prefix and year. Each number is one event of
the series, so two processes drawing numbers at once meet in the event store's version check:
one retries, and the sequence has no gap and no duplicate. The numbers live in the event store,
so rebuilding read models reproduces them exactly."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate, event

from domain.billing.invoice_document import invoice_number
from domain.shared.events import CreatedEvent, DomainEvent, Snapshot
from domain.shared.topics import keep_topics


def series_id(prefix: str, year: int) -> str:
    return f"series:{prefix}:{year}"


class InvoiceSeries(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    class Opened(CreatedEvent):
        class_version = 1
        prefix: str
        year: int

    class NumbersAssigned(DomainEvent):
        """One event per batch of invoices: the consecutive numbers and who got each."""

        class_version = 1
        first: int
        numbers: list[str]
        subscriptions: list[str]

    @event(Opened)
    def __init__(self, id: str, prefix: str, year: int, timestamp: datetime) -> None:
        self.prefix = prefix
        self.year = year
        self.last = 0

    @classmethod
    def open(cls, prefix: str, year: int, at: datetime) -> InvoiceSeries:
        return cls(id=series_id(prefix, year), prefix=prefix, year=year, timestamp=at)

    def assign(self, subscription: str, at: datetime) -> str:
        return self.assign_many([subscription], at)[0]

    def assign_many(self, subscriptions: list[str], at: datetime) -> list[str]:
        """The next numbers, one per subscription in order, recorded as one event."""
        numbers = [invoice_number(self.prefix, self.year, self.last + 1 + i)
                   for i in range(len(subscriptions))]
        if numbers:
            self._numbers_assigned(first=self.last + 1, numbers=numbers,
                                   subscriptions=list(subscriptions), timestamp=at)
        return numbers

    @property
    def issued_through(self) -> datetime | None:
        """The issue date of the series' latest invoice: no later number may be dated before
        it (numbers rise with issue dates)."""
        return getattr(self, "_issued_through", None)

    def issue_dates(self, wanted: list[datetime]) -> list[datetime]:
        """The issue date of each next invoice, in number order: the date it is due at, or the
        latest date already issued if that is later (an invoice due at a backdated time is
        issued now, never dated before one numbered ahead of it)."""
        floor = self.issued_through
        dates = []
        for at in wanted:
            floor = at if floor is None or at > floor else floor
            dates.append(floor)
        return dates

    @event(NumbersAssigned)
    def _numbers_assigned(self, first: int, numbers: list[str], subscriptions: list[str],
                          timestamp: datetime) -> None:
        self.last = first + len(numbers) - 1
        if self.issued_through is None or timestamp > self.issued_through:
            self._issued_through = timestamp


keep_topics("domain.invoice_series", InvoiceSeries)
