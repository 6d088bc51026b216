"""Usage ingestion: `billing.usage` -> Subscription events, exactly once.

parse (orjson) -> validate (the usage contract) -> command (record the batch) -> dispatch (one
transaction with the Kafka position and the applied usage ids). Refused messages go to the DLQ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers import input as record_input
from consumers.loop import RedoBatch
from consumers.ports import DeadLetterSink
from consumers.positions import EventStorePositions, skip_record
from consumers.write_behind import WriteBehind
from domain.app.billing_app import BillingApplication
from domain.app.ports import UsageKey
from domain.app.record_usage import PreparedBatch, prepare_usage_batch, usage_keys
from domain.contracts.usage import UsageItem, parse_usage
from domain.shared.errors import BillingError

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    events_written: int = 0
    time_events: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


@dataclass
class _Parsed:
    """A poll parsed and checked against the contract, not yet applied."""

    records: list[ConsumerRecord]
    trackings: list[Tracking]
    sources: list[ConsumerRecord]  # the record of each item
    items: list[UsageItem]
    letters: list[tuple[ConsumerRecord, str, str]]
    # Looked up while the loop polls on (see UsageIngestor): the ids already in the ledger,
    # and those of the batch committing when the lookup started.
    in_ledger: Future[set[UsageKey]] | None = None
    in_flight: frozenset[UsageKey] = frozenset()


class UsageIngestor:
    """Optimistic by default: a batch is applied without first reading the ledger (has an id
    been applied before?) or the cached subscriptions' versions (has another writer moved
    them?). Neither happens in the steady state, and the two reads were a third of
    PostgreSQL's time at 5,000 events/s. When one does happen, the write fails on a unique key
    (the ledger's, a stream's next version, a tracking row) and nothing of it is kept: the
    ingester turns cautious for `cautious_seconds` and the loop redoes the batch from the
    stored positions, reading first (RedoBatch). A failure while cautious is an ordinary
    failure (logged, retried with back-off).

    While cautious, with a write-behind, a full poll (a backlog: `lookahead_at` records or
    more) is applied one poll later: its ids are looked up in the ledger in another thread
    while the loop fetches and decodes the next poll, so the consumer's thread does not wait
    for PostgreSQL there either. Smaller polls are applied at once: at moderate rates latency
    matters more than CPU."""

    def __init__(self, app: BillingApplication, dead_letters: DeadLetterSink,
                 write_behind: WriteBehind | None = None,
                 lookahead_at: int | None = None, *, optimistic: bool = True,
                 cautious_seconds: float = 30.0,
                 max_message_bytes: int = record_input.DEFAULT_MAX_BYTES) -> None:
        self.app = app
        self.positions = EventStorePositions(app)
        self.max_message_bytes = max_message_bytes
        self.dead_letters = dead_letters
        self.stats = IngestStats()
        self.writer = write_behind
        self.lookahead_at = lookahead_at if write_behind is not None else None
        self._lookups = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-lookup")
                         if self.lookahead_at is not None else None)
        self._waiting: _Parsed | None = None
        self.looked_ahead = 0  # polls applied one poll later
        self._committed: dict[str, int] = {}  # tracking name -> position this process committed
        self.optimistic = optimistic
        self.cautious_seconds = cautious_seconds
        self._cautious_until = float("-inf")  # time.monotonic()
        self.conflicts = 0  # optimistic batches a unique key refused, redone cautiously

    @property
    def cautious(self) -> bool:
        return not self.optimistic or time.monotonic() < self._cautious_until

    def flush(self) -> None:
        """Apply the poll waiting for its lookup (if any), then wait for the commit in flight.
        The loop flushes before it seeks (after a failure, on a rebalance): positions are read
        from the store again after it."""
        self._committed.clear()
        with self._redo_on_conflict():
            self._apply_waiting()
            if self.writer is not None:
                self.writer.flush()

    @contextmanager
    def _redo_on_conflict(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as conflict:
            if self.cautious:
                raise
            self.conflicts += 1
            self._cautious_until = time.monotonic() + self.cautious_seconds
            raise RedoBatch(f"an optimistic batch met a unique key ({conflict})") from conflict

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        self.handle_poll({tp: records})

    def quarantine(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                   message: str) -> None:
        """A record the loop found cannot be applied (consumers.loop)."""
        self.flush()
        if skip_record(self.app, self.dead_letters, self.positions.name(tp.topic, tp.partition),
                       record, code, message):
            s = self.stats
            s.messages += 1
            s.dead_lettered += 1
            s.by_code[code] = s.by_code.get(code, 0) + 1

    def handle_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Every partition of one poll in one transaction: the events, the applied usage ids
        and one position per partition."""
        with self._redo_on_conflict():
            self._handle_poll(batches)

    def _handle_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        self._apply_waiting()
        parsed = self._parse(batches)
        if parsed is None:
            return
        if not self.cautious:
            self._apply(parsed, optimistic=True)
            return
        if self._lookups is None or self.lookahead_at is None \
                or len(parsed.records) < self.lookahead_at:
            self._apply(parsed)
            return
        self.looked_ahead += 1
        parsed.in_flight = self._keys_in_flight()
        parsed.in_ledger = self._lookups.submit(self.app.usage_ledger().seen_usage,
                                                usage_keys(parsed.items))
        self._waiting = parsed

    def _apply_waiting(self) -> None:
        parsed, self._waiting = self._waiting, None
        if parsed is not None:
            self._apply(parsed)

    def _keys_in_flight(self) -> frozenset[UsageKey]:
        return self.writer.usage_keys_in_flight if self.writer else frozenset()

    def _parse(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
               ) -> _Parsed | None:
        trackings: list[Tracking] = []
        records: list[ConsumerRecord] = []
        for tp, polled in batches.items():
            name = self.positions.name(tp.topic, tp.partition)
            in_flight = self.writer.position_in_flight(name) if self.writer else None
            fresh = self.positions.not_yet_applied(tp, polled, in_flight,
                                                   self._committed.get(name))
            if fresh:
                records.extend(fresh)
                trackings.append(Tracking(name, fresh[-1].offset))
        if not records:
            return None
        parsed = _Parsed(records, trackings, [], [], [])
        max_bytes = self.max_message_bytes
        for record in records:
            try:
                parsed.items.append(parse_usage(record_input.decode(record, max_bytes)))
            except BillingError as e:
                parsed.letters.append((record, e.code, str(e)))
                continue
            parsed.sources.append(record)
        return parsed

    def _apply(self, parsed: _Parsed, optimistic: bool = False) -> None:
        items, letters = parsed.items, parsed.letters
        touched = {item.subscription for item in items}
        try:
            if parsed.in_ledger is not None:
                batch = prepare_usage_batch(self.app, items, parsed.in_flight,
                                            parsed.in_ledger.result())
            else:
                batch = prepare_usage_batch(self.app, items, self._keys_in_flight(),
                                            optimistic=optimistic)
            letters.extend((parsed.sources[i], err.code, str(err)) for i, err in batch.rejected)
            for record, code, message in letters:
                self.dead_letters.send(record, code, message)
            self.dead_letters.flush()
            new_events = sum(len(a.pending_events) for a in batch.aggregates)
            messages = len(parsed.records)

            def account() -> None:
                self._account(messages, batch, letters, new_events)
                for tracking in parsed.trackings:
                    self._committed[tracking.application_name] = tracking.notification_id

            if self.writer is None:
                self.app.save_batch(batch.aggregates, parsed.trackings, batch.usage_keys,
                                    usage_until=batch.usage_until)
                account()
            else:
                write = self.app.prepare_write(batch.aggregates, parsed.trackings,
                                               batch.usage_keys, usage_until=batch.usage_until)
                self.writer.submit(write, account)
        except Exception:
            self.app.evict(touched)  # in-memory aggregates may hold unsaved changes
            raise

    def _account(self, messages: int, batch: PreparedBatch,
                 letters: list[tuple[ConsumerRecord, str, str]], new_events: int) -> None:
        s = self.stats
        s.messages += messages
        s.accepted += batch.accepted
        s.duplicates += batch.duplicates
        s.dead_lettered += len(letters)
        s.time_events += batch.time_events
        s.events_written += new_events
        for _, code, _ in letters:
            s.by_code[code] = s.by_code.get(code, 0) + 1
