"""A Kafka consumer loop whose positions live in PostgreSQL, not in the broker.

At start (and at every group reassignment) each partition is sought to its stored position + 1.
Each poll's records are handed to the handler as one micro-batch: per partition, or (with a
`poll_handler`) all partitions of the poll at once, so one transaction carries them all. The
handler commits its effect and the new position(s) in one transaction. If a batch fails (a
version conflict, a database outage), its partitions are sought back to their stored positions
and the batch retried: nothing is skipped and nothing applied twice. A handler that raises
RedoBatch asks for the same, as a normal step rather than a failure.

A failure that is about the input (consumers.failures) is narrowed down instead of retried as
it is: the loop goes back to the stored positions and hands the failed partition's records on
in chunks, halving a chunk that fails and doubling one that passes, until a single record fails
alone. That record goes to the handler's `quarantine` (dead-lettered with the code
`unprocessable` and the error, its position committed) and the loop carries on with the rest.
A record at fault is found in about 2 log2(n) attempts; the records around it are applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, OffsetOutOfRangeError

from consumers.failures import Failure, classify

log = logging.getLogger(__name__)


class RedoBatch(Exception):
    """Raised by a handler whose optimistic batch met another writer or a replayed input (a
    unique key refused its write): the loop goes back to the stored positions and the handler
    redoes the batch cautiously. Not a failure: no back-off, logged at info."""


class PositionStore(Protocol):
    def position(self, topic: str, partition: int) -> int | None: ...


Handler = Callable[[TopicPartition, Sequence[ConsumerRecord]], None]
PollHandler = Callable[[Mapping[TopicPartition, Sequence[ConsumerRecord]]], None]
# Dead-letters one record with (code, error text) and commits its position with no other effect.
Quarantine = Callable[[TopicPartition, ConsumerRecord, str, str], None]
UNPROCESSABLE = "unprocessable"
UNDECODABLE_BATCH = "undecodable_batch"
MAX_QUARANTINED_IN_A_ROW = 5


@dataclass
class PartitionProgress:
    """What health reports of one input partition: the last offset handled, the broker's end
    offset as the last fetch saw it, and when the position last moved (or input last waited
    for nothing)."""

    position: int | None = None
    end: int | None = None
    since: float = field(default_factory=time.monotonic)

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return max(self.end - (-1 if self.position is None else self.position) - 1, 0)


class TrackedConsumer:
    def __init__(self, consumer: KafkaConsumer, topic: str, positions: PositionStore,
                 handler: Handler, *, group: bool = False, name: str = "consumer",
                 poll_handler: PollHandler | None = None,
                 flush: Callable[[], None] | None = None,
                 quarantine: Quarantine | None = None, max_conflicts: int = 10) -> None:
        self.consumer = consumer
        self.topic = topic
        self.positions = positions
        self.handler = handler
        self.poll_handler = poll_handler
        # A handler that commits behind (consumers.write_behind) is flushed when a poll comes
        # back empty, before positions are read back, on a rebalance and at the end.
        self.flush = flush
        self.group = group
        self.name = name
        self.batches = 0
        self.records = 0
        self.failures = 0
        self.redone = 0  # batches redone after a RedoBatch
        self.quarantine = quarantine
        self.max_conflicts = max_conflicts
        self.quarantined = 0  # records dead-lettered as unprocessable
        self.last_error: str | None = None
        self._conflicts = 0  # consecutive conflicts
        self._handed: dict[TopicPartition, int] = {}  # highest offset handed to the handler
        # Partitions whose records are being narrowed down, each up to the highest offset
        # handed on when the failure was seen; the chunk size of the next attempt.
        self._isolating: dict[TopicPartition, int] = {}
        self._chunk = 1
        self._quarantined_in_a_row = 0  # single records dead-lettered with no success between
        self._bad_batches: dict[tuple[Any, Any], int] = {}  # (partition, offset) -> fetches
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self._unsettled: dict[TopicPartition, int] = {}  # handed to a write-behind
        self.started = time.monotonic()
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self.batch_seconds: list[float] = []  # durations since the metrics last took them
        self.assigned: set[TopicPartition] = set()
        if group:
            consumer.subscribe([topic], listener=_SeekOnAssign(self))
        else:
            parts = partitions_of(consumer, topic)
            consumer.assign(parts)
            self.assigned = set(parts)
            self.seek_to_stored(parts)

    def seek_to_stored(self, parts: Sequence[TopicPartition]) -> None:
        if not parts:
            return
        self.settle()
        for tp in parts:
            stored = self.positions.position(tp.topic, tp.partition)
            # No check against the topic's end offset here: Tansu under-reports it (see
            # infra.kafka.clients.publish), so such a check would refuse healthy positions.
            self.consumer.seek(tp, 0 if stored is None else stored + 1)
            self.progress.setdefault(tp, PartitionProgress()).position = stored

    def settle(self) -> bool:
        """Let a batch still committing finish; False (logged) if it failed, in which case
        the caller goes back to the stored positions."""
        if self.flush is None:
            return True
        unsettled, self._unsettled = self._unsettled, {}
        try:
            self.flush()
        except RedoBatch as redo:
            self._note_redo(redo)
            return False
        except Exception as failure:
            self._failed(failure, [], 0)
            return False
        self._moved(unsettled)
        return True

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one poll; returns how many records were handled."""
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except CorruptRecordError as bad:
            return self._undecodable(bad)
        except OffsetOutOfRangeError as gone:
            return self._position_past_the_log(gone)
        self._observe_ends(batches)
        if not batches and not self._isolating:
            return self._handle_nothing()
        started = time.monotonic()
        try:
            if self._isolating:
                return self._isolation_step(batches)
            return self._handle(batches)
        finally:
            if len(self.batch_seconds) < 10_000:
                self.batch_seconds.append(time.monotonic() - started)

    def _undecodable(self, bad: Exception) -> int:
        """A fetched batch that cannot be decoded (corrupt, or a codec this process lacks).
        It is fetched again twice (a transfer fault would not repeat), then dead-lettered as
        `undecodable_batch` (its first 64 KiB, with its offsets) and gone past."""
        self._count_failure(bad)
        tp = getattr(bad, "topic_partition", None)
        first, last = getattr(bad, "first", None), getattr(bad, "last", None)
        seen = self._bad_batches.get((tp, first), 0) + 1 if tp is not None else 0
        if tp is None or self.quarantine is None or seen < 3 or first is None or last is None:
            if tp is not None:
                self._bad_batches[(tp, first)] = seen
            log.warning("%s: %s; fetching again", self.name, bad, extra={"worker": self.name})
            self._back_off()
            self.seek_to_stored(self._all_parts())
            return 0
        stored = self.positions.position(tp.topic, tp.partition) if self.settle() else last
        if stored is not None and stored >= first:
            # What comes before the batch is not all committed (or the batch is behind us):
            # go back and fetch again rather than move past records never applied.
            self.seek_to_stored(self._all_parts())
            return 0
        raw: bytes = getattr(bad, "raw", b"")
        record = ConsumerRecord(tp.topic, tp.partition, None, last, -1, 0, None, raw, [], None,
                                -1, len(raw), -1)
        if self._dead_letter(tp, record, UNDECODABLE_BATCH, f"offsets {first}..{last}: {bad}"):
            self._bad_batches.pop((tp, first), None)
        self.seek_to_stored(self._all_parts())
        return 0

    def _position_past_the_log(self, gone: OffsetOutOfRangeError) -> int:
        """The log has no record at a stored position + 1 (the worker's consumer is made with
        no offset reset, infra/wiring/engine.py): the topic was replaced, its records outlived
        by their retention, or it came back shorter. Moving to its start or end would skip
        records or take new ones for applied: the worker stays, failing (health reports it),
        until the engine restarts (a replaced topic's positions are reset then,
        infra/kafka/topic_identity.py) or an operator acts."""
        self._count_failure(gone)
        log.error("%s: the log has no record where this worker's positions point (%s): the "
                  "topic was replaced, or lost records; waiting", self.name, gone,
                  extra={"worker": self.name})
        self._back_off()
        self.seek_to_stored(self._all_parts())
        return 0

    def _handle_nothing(self) -> int:
        if not self.settle():
            self.seek_to_stored(self._all_parts())
        return 0

    def _handle(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> int:
        for tp, records in batches.items():
            if records:
                self._handed[tp] = max(self._handed.get(tp, -1), records[-1].offset)
        if self.poll_handler is not None:
            return self._handle_whole_poll(batches)
        handled = 0
        for tp, records in batches.items():
            try:
                self.handler(tp, records)
            except RedoBatch as redo:
                self._note_redo(redo)
                self.seek_to_stored([tp])
                continue
            except Exception as failure:
                self._failed(failure, [tp], len(records))
                self.seek_to_stored(self._all_parts([tp]))
                continue
            self._handled({tp: records})
            self.batches += 1
            handled += len(records)
        self.records += handled
        return handled

    def _handled(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """A handler call succeeded. With a write-behind its batch is committed only by the
        next hand-over or flush (one batch in flight at a time): the positions health
        reports move then, so a commit stuck behind a lock shows as a stall."""
        self._conflicts = 0
        offsets = {tp: records[-1].offset for tp, records in batches.items() if records}
        if self.flush is None:
            self._moved(offsets)
        else:
            self._moved(self._unsettled)  # the hand-over waited for it to commit
            self._unsettled = offsets

    def _moved(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Batches committed up to these offsets: progress, and the failures in a row end."""
        if not offsets:
            return
        self.failing_since = None
        now = time.monotonic()
        for tp, offset in offsets.items():
            progress = self.progress.setdefault(tp, PartitionProgress())
            progress.position = offset
            progress.since = now

    def _observe_ends(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
                      ) -> None:
        """The end offsets the last fetch responses carried (no request of its own). A
        partition with nothing waiting, or none fetched for it while the loop polls (the end
        may count a transaction marker, or the position is not known yet), counts as
        progressing."""
        now = time.monotonic()
        for tp in self.assigned:
            progress = self.progress.setdefault(tp, PartitionProgress())
            end = self.consumer.highwater(tp)
            if end is not None:
                progress.end = end
            if tp in self._isolating or tp in self._unsettled:
                continue
            if not progress.lag or not batches.get(tp):
                progress.since = now

    def health(self, stall_seconds: float) -> dict[str, Any]:
        """Per partition: position, lag, seconds since it last progressed; the partitions
        with input waiting that made no progress for `stall_seconds`; how long the batches
        have failed in a row. A worker is unhealthy when either list is not empty."""
        now = time.monotonic()
        partitions = {}
        stalled = []
        for tp in sorted(list(self.assigned), key=lambda tp: tp.partition):
            progress = self.progress.get(tp) or PartitionProgress(since=self.started)
            name = f"{tp.topic}:{tp.partition}"
            idle = now - progress.since
            partitions[name] = {"position": progress.position, "lag": progress.lag,
                                "seconds_since_progress": round(idle, 1)}
            if idle > stall_seconds and (progress.lag or tp in dict(self._isolating)):
                stalled.append(name)
        failing = 0.0 if self.failing_since is None else now - self.failing_since
        return {"partitions": partitions, "stalled": stalled,
                "failing_seconds": round(failing, 1), "failures": self.failures,
                "quarantined": self.quarantined, "last_error": self.last_error,
                "healthy": not stalled and failing <= stall_seconds}

    def _all_parts(self, more: Iterable[TopicPartition] = ()) -> list[TopicPartition]:
        return sorted(self.assigned | set(more), key=lambda tp: tp.partition)

    def _failed(self, failure: Exception, parts: Sequence[TopicPartition], size: int) -> None:
        """A batch of `size` records on `parts` failed (size 0: a batch committing behind,
        of unknown size): retry it, or narrow it down. The caller goes back to the stored
        positions afterwards."""
        kind = self._count_failure(failure)
        self._unsettled = {}  # the batch that failed, or one prepared on top of it
        narrow = self.quarantine is not None and (
            kind is Failure.POISON
            or (kind is Failure.CONFLICT and self._conflicts >= self.max_conflicts))
        log.warning("%s: batch of %d record(s) on %s failed (%s)%s", self.name, size,
                    ", ".join(f"{tp.topic}:{tp.partition}" for tp in parts), kind.value,
                    "; narrowing it down" if narrow else "; retrying from stored positions",
                    exc_info=failure, extra={"worker": self.name})
        if narrow:
            # The batch that failed may be the one committed behind this poll: every partition
            # handed on so far is a suspect, up to what was handed on.
            self._isolating = {tp: offset for tp, offset in self._handed.items()
                               if tp in self.assigned or tp in parts}
            self._chunk = max(1, (size or 4096) // 2)
            self._conflicts = 0
        else:
            self._back_off()

    def _count_failure(self, failure: Exception) -> Failure:
        kind = classify(failure)
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(failure).__name__}: {failure}"[:500]
        if kind is Failure.CONFLICT:
            self._conflicts += 1
        return kind

    def _isolation_step(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
                        ) -> int:
        """One attempt on a chunk of the first suspect partition's records; the rest of the
        poll is fetched again afterwards."""
        for tp, upto in list(self._isolating.items()):
            stored = self.positions.position(tp.topic, tp.partition)
            if tp not in self.assigned or (stored is not None and stored >= upto):
                del self._isolating[tp]
        suspects = sorted((tp for tp in batches if tp in self._isolating and batches[tp]),
                          key=lambda tp: tp.partition)
        if not suspects:
            if batches:
                self.seek_to_stored(self._all_parts(batches))
            return 0
        tp = suspects[0]
        records = list(batches[tp])[:self._chunk]
        handled = 0
        try:
            if self.poll_handler is not None:
                self.poll_handler({tp: records})
            else:
                self.handler(tp, records)
            if self.flush is not None:
                self.flush()
        except RedoBatch as redo:
            self._note_redo(redo)
        except Exception as failure:
            self._isolation_failed(failure, tp, records)
        else:
            self._conflicts = 0
            self._moved({tp: records[-1].offset})  # flushed above: committed
            self._unsettled = {}
            self._quarantined_in_a_row = 0
            self.batches += 1
            handled = len(records)
            self.records += handled
            self._chunk *= 2
            if records[-1].offset >= self._isolating[tp]:
                del self._isolating[tp]
        self.seek_to_stored(self._all_parts(batches))
        return handled

    def _isolation_failed(self, failure: Exception, tp: TopicPartition,
                          records: list[ConsumerRecord]) -> None:
        kind = self._count_failure(failure)
        if kind is Failure.TRANSIENT or (kind is Failure.CONFLICT
                                         and self._conflicts < self.max_conflicts):
            log.warning("%s: %s; retrying", self.name, self.last_error,
                        extra={"worker": self.name})
            self._back_off()
            return
        self._conflicts = 0
        if len(records) > 1:
            self._chunk = max(1, len(records) // 2)
            return
        if self._quarantined_in_a_row >= MAX_QUARANTINED_IN_A_ROW:
            # Record after record fails alone, nothing between them passes: more likely the
            # worker or the database than the input. Stall (health turns red) rather than
            # dead-letter the whole partition; each retry may find the cause gone.
            log.error("%s: %d records in a row could not be applied alone (%s); suspecting "
                      "the worker or its database, not the input: retrying, not dead-lettering",
                      self.name, self._quarantined_in_a_row, self.last_error,
                      extra={"worker": self.name})
            self._back_off()
            return
        if self._dead_letter(tp, records[0], UNPROCESSABLE,
                             f"{type(failure).__name__}: {failure}"):
            self._quarantined_in_a_row += 1
            self._chunk = 1

    def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                     error: str) -> bool:
        """Hand a record no batch can apply to the handler's quarantine (dead-lettered, its
        position committed); False, after a back-off, if that failed too (tried again)."""
        assert self.quarantine is not None
        try:
            self.quarantine(tp, record, code, error)
        except Exception:
            log.exception("%s: could not dead-letter %s:%s@%s; retrying", self.name, tp.topic,
                          tp.partition, record.offset, extra={"worker": self.name})
            self._back_off()
            return False
        self.quarantined += 1
        log.error("%s: %s:%s@%s cannot be applied; dead-lettered as %s: %s", self.name,
                  tp.topic, tp.partition, record.offset, code, error,
                  extra={"worker": self.name, "topic": tp.topic, "partition": tp.partition,
                         "position": record.offset, "code": code})
        return True

    def _back_off(self) -> None:
        """Wait longer the more batches have failed (at most 2 s)."""
        time.sleep(min(0.1 * self.failures, 2.0))

    def _handle_whole_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
                           ) -> int:
        if not batches:
            return 0
        assert self.poll_handler is not None
        try:
            self.poll_handler(batches)
        except RedoBatch as redo:
            self._note_redo(redo)
            self.seek_to_stored(self._all_parts(batches))
            return 0
        except Exception as failure:
            self._failed(failure, list(batches),
                         sum(len(records) for records in batches.values()))
            self.seek_to_stored(self._all_parts(batches))
            return 0
        self._handled(batches)
        handled = sum(len(records) for records in batches.values())
        self.batches += 1
        self.records += handled
        return handled

    def _note_redo(self, redo: RedoBatch) -> None:
        self.redone += 1
        log.info("%s: %s; redoing from the stored positions", self.name, redo,
                 extra={"worker": self.name})

    def run(self, stop: threading.Event, timeout_ms: int = 200) -> None:
        while not stop.is_set():
            self.poll_once(timeout_ms)
        self.settle()

    def close(self) -> None:
        self.settle()
        self.consumer.close(autocommit=False)


class _SeekOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TrackedConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Every batch commits its own position: nothing to hand over once the batch still
        # committing (if any) is done.
        self.owner.settle()
        self.owner.assigned -= set(revoked)
        for tp in revoked:
            self.owner._isolating.pop(tp, None)
            self.owner._handed.pop(tp, None)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.owner.seek_to_stored(list(assigned))
        self.owner.assigned |= set(assigned)


def partitions_of(client: KafkaConsumer, topic: str, timeout: float = 30) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = client.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        time.sleep(0.1)
    raise KafkaError(f"topic {topic} has no partitions")
