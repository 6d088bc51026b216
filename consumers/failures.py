"""What a failed batch says about its input. A worker retries what is about the world (the
database or broker unreachable, a timeout, a lock, a serialization failure) and never
dead-letters for it; it retries a conflict with another writer a few times; anything else is
about the records in hand, which the loop then narrows down to the one(s) at fault
(consumers.loop)."""

from __future__ import annotations

import enum

import psycopg
from eventsourcing import persistence
from kafka import errors as kafka_errors

from projections.versions import VersionConflict


class Failure(enum.Enum):
    TRANSIENT = "transient"  # retry with back-off, for as long as it takes
    CONFLICT = "conflict"  # another writer moved first: redo, a bounded number of times
    POISON = "poison"  # the input: isolate the record(s) and dead-letter them


# SQLSTATE classes about the server, not the statement: connection exceptions, insufficient
# resources, operator intervention (shutdown, a cancelled statement), system errors, and the
# transaction rollbacks (serialization failure, deadlock) and lock timeouts of a busy database.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40", "HV")
_TRANSIENT_SQLSTATES = ("55P03", "55006")  # lock_not_available, object_in_use
# Kafka errors the input causes: a record the broker will never take.
_POISON_KAFKA = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError,
                 kafka_errors.InvalidRecordError)


def _database_error(exc: BaseException) -> psycopg.Error | None:
    """The psycopg error behind `exc` (the eventsourcing recorders wrap them)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, psycopg.Error):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, persistence.IntegrityError | psycopg.errors.UniqueViolation
                  | VersionConflict):
        return Failure.CONFLICT
    if isinstance(exc, _POISON_KAFKA):
        return Failure.POISON
    if isinstance(exc, kafka_errors.KafkaError | ConnectionError | TimeoutError | MemoryError):
        return Failure.TRANSIENT
    database = _database_error(exc)
    if database is not None:
        state = database.sqlstate
        if state is None:  # no statement reached the server: the connection itself
            return (Failure.TRANSIENT
                    if isinstance(database, psycopg.OperationalError | psycopg.InterfaceError)
                    else Failure.POISON)
        if state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES:
            return Failure.TRANSIENT
        return Failure.POISON
    if isinstance(exc, persistence.OperationalError | persistence.InterfaceError):
        return Failure.TRANSIENT  # the library's own pool and connection errors
    return Failure.POISON
