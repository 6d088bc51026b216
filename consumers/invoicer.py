"""The invoicer: finalizes drafts into numbered invoices when their charges are due.

Reads `billing.events`; which events issue an invoice is the domain's rule
(`Subscription.invoices_on`: a period's usage closing, the first period, a one-off purchase, a
change within a period as the plan says). The invoice, the numbers drawn from the gapless
series and the input position commit in one transaction (`BillingApplication.invoice_batch`).
Several invoicer processes can run on the partitions of `billing.events`: each loads and
drafts its batch in parallel, and they take turns (an advisory lock) to draw numbers and
commit. A writer outside that turn meets the series' version check and redoes its batch, so
the numbers stay gapless and unique.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from eventsourcing.persistence import Tracking
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.ports import DeadLetterSink
from consumers.positions import EventStorePositions, skip_record
from consumers.wire import decode
from domain.app.billing_app import BillingApplication
from domain.subscription.aggregate import Subscription

log = logging.getLogger(__name__)

class Invoicer:
    def __init__(self, app: BillingApplication, dead_letters: DeadLetterSink | None = None) -> None:
        self.app = app
        self.positions = EventStorePositions(app, "invoicer")
        self.dead_letters = dead_letters
        self.issued = 0
        self.skipped = 0  # triggers dead-lettered as unprocessable

    def quarantine(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                   message: str) -> None:
        """A trigger the loop found cannot be invoiced: the subscription's later triggers
        invoice every line still due, so nothing billable is lost by going past it."""
        assert self.dead_letters is not None
        if skip_record(self.app, self.dead_letters, self.positions.name(tp.topic, tp.partition),
                       record, code, message):
            self.skipped += 1

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        records = self.positions.not_yet_applied(tp, records)
        if not records:
            return
        triggers: list[tuple[str, int, datetime, str]] = []
        for record in records:
            try:
                message = decode(record.value)
            except Exception:  # the quota projector dead-letters undecodable events
                continue
            kind = message.get("type")
            if kind not in Subscription.INVOICE_TRIGGERS:
                continue
            triggers.append((message["subscription"], int(message["version"]),
                             datetime.fromisoformat(message["time"]), kind))
        tracking = Tracking(self.positions.name(tp.topic, tp.partition), records[-1].offset)
        issued = self.app.invoice_batch(triggers, tracking)
        self.issued += len(issued)
