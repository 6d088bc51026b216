"""The usage journal: usage that subscriptions hold outside their streams (recorded buffered,
docs/usage-journal.md) is also written, once, here: one event per write of the ingestion, in a
stream of its own, with each subscription's new usage and where it stands (the version of its
stream and the count of its held-usage row). The relay turns each entry into a `UsageRecorded`
message of its subscription, so read models see usage as soon as it is committed, and the audit
chain covers it like any other event. A subscription's UsageSettled event later carries the
same usage into its own stream, for its replay; read models do not count it again."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

from eventsourcing.domain import BaseAggregate, event

from domain.shared.events import CreatedEvent, DomainEvent, Snapshot
from domain.shared.topics import keep_topics

JOURNAL_PREFIX = "usage-journal-"


class UsageJournal(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    class Journaled(CreatedEvent):
        """`entries`: per subscription, {"subscription", "version", "seq", "items",
        "totals"}. Its usage comes after the event `version` of its stream, as the `seq`-th
        write of its held usage; items and totals as a UsageRecorded event carries them."""

        class_version = 1
        entries: list[dict[str, Any]]

    @event(Journaled)
    def __init__(self, id: str, entries: list[dict[str, Any]], timestamp: datetime) -> None:
        self.entries = entries

    @classmethod
    def write(cls, entries: list[dict[str, Any]], at: datetime) -> UsageJournal:
        """A stream of one event: each write's own, so writers never meet on a version and a
        failed write leaves nothing to continue from."""
        return cls(id=f"{JOURNAL_PREFIX}{uuid4()}", entries=entries, timestamp=at)


def journal_entry(subscription: str, version: int, seq: int,
                  batches: list[dict[str, Any]]) -> dict[str, Any]:
    """One subscription's usage of a write: its batches' items in order, totals summed (the
    totals of a measured metric are changes, so they add up too)."""
    items: list[dict[str, str]] = []
    totals: dict[str, Decimal] = {}
    for batch in batches:
        items.extend(batch["items"])
        for metric, quantity in batch["totals"].items():
            totals[metric] = totals.get(metric, Decimal(0)) + Decimal(quantity)
    return {"subscription": subscription, "version": version, "seq": seq, "items": items,
            "totals": {m: str(q) for m, q in sorted(totals.items())}}


keep_topics("domain.usage_journal", UsageJournal)
