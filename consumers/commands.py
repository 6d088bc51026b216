"""Command ingestion: `billing.commands` -> Subscription events, exactly once per command id.

parse (orjson) -> validate (the command contract) -> command (in order, per partition batch)
-> dispatch (one transaction: the new events, the command ids and the Kafka position).
A refused command is dead-lettered with its code and its id is recorded, so a redelivery has no
second effect (not even a second dead letter); the consumer carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import Tracking
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers import input as record_input
from consumers.ports import DeadLetterSink
from consumers.positions import EventStorePositions, skip_record
from domain.app.billing_app import BillingApplication
from domain.app.ports import CommandOutcome, UsageKey
from domain.app.run_command import command_key
from domain.catalog.redemptions import CouponRedemptions
from domain.contracts.commands import Command, execute, parse_command
from domain.shared.errors import BillingError
from domain.subscription.aggregate import Subscription

log = logging.getLogger(__name__)


@dataclass
class CommandStats:
    messages: int = 0
    applied: int = 0
    unchanged: int = 0
    duplicates: int = 0
    refused: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class CommandIngestor:
    def __init__(self, app: BillingApplication, dead_letters: DeadLetterSink,
                 max_message_bytes: int = record_input.DEFAULT_MAX_BYTES) -> None:
        self.app = app
        self.positions = EventStorePositions(app)
        self.dead_letters = dead_letters
        self.max_message_bytes = max_message_bytes
        self.stats = CommandStats()

    def quarantine(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                   message: str) -> None:
        """A record the loop found cannot be applied (consumers.loop)."""
        if skip_record(self.app, self.dead_letters, self.positions.name(tp.topic, tp.partition),
                       record, code, message):
            self.stats.messages += 1
            self.stats.refused += 1
            self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        records = self.positions.not_yet_applied(tp, records)
        if not records:
            return
        parsed: list[tuple[ConsumerRecord, Command]] = []
        letters: list[tuple[ConsumerRecord, str, str]] = []
        for record in records:
            try:
                parsed.append((record, parse_command(
                    record_input.decode(record, self.max_message_bytes))))
            except BillingError as e:
                letters.append((record, e.code, str(e)))
        keys = [command_key(c) for _, c in parsed]
        seen = self.app.usage_ledger().seen_usage(keys)
        touched: dict[str, Subscription] = {}
        recorded: list[UsageKey] = []
        outcomes: list[CommandOutcome] = []
        self.app.revalidate(c.subscription for _, c in parsed)
        redemptions: dict[str, CouponRedemptions] = {}  # the coupons redeemed in this batch
        redeem = self.app.redeemer(redemptions)
        stats = CommandStats()
        try:
            for (record, command), key in zip(parsed, keys, strict=True):
                if key in seen or key in recorded:
                    stats.duplicates += 1
                    continue
                recorded.append(key)
                current = touched.get(command.subscription) or self.app.find(command.subscription)
                try:
                    subscription, outcome = execute(current, command, self.app.catalog, redeem)
                except BillingError as e:
                    letters.append((record, e.code, str(e)))
                    outcomes.append(refused(command, current, e))
                    if current is not None:
                        touched[command.subscription] = current  # time may have advanced it
                    continue
                touched[command.subscription] = subscription
                outcomes.append(CommandOutcome(command.subscription, command.id, command.type,
                                               subscription.account, outcome.result,
                                               events=outcome.events))
                if outcome.result == "unchanged":
                    stats.unchanged += 1
                else:
                    stats.applied += 1
            for record, code, message in letters:
                self.dead_letters.send(record, code, message)
            self.dead_letters.flush()
            changed = [s for s in touched.values() if s.pending_events]
            tracking = Tracking(self.positions.name(tp.topic, tp.partition), records[-1].offset)
            self.app.save_batch([*changed, *redemptions.values()], tracking, recorded, outcomes)
        except Exception:
            self.app.evict(touched)
            raise
        s = self.stats
        s.messages += len(records)
        s.applied += stats.applied
        s.unchanged += stats.unchanged
        s.duplicates += stats.duplicates
        s.refused += len(letters)
        for _, code, _ in letters:
            s.by_code[code] = s.by_code.get(code, 0) + 1


def refused(command: Command, current: Subscription | None, error: BillingError
            ) -> CommandOutcome:
    account = current.account if current is not None else command.fields.get("account")
    return CommandOutcome(command.subscription, command.id, command.type,
                          account if isinstance(account, str) else None, "refused",
                          error.code, str(error)[:1000])
