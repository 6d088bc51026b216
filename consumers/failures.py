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

from domain.shared.errors import BillingError
from projections.tracking import VersionConflict


class Failure(enum.Enum):
    TRANSIENT = "transient"  # retry with back-off, for as long as it takes
    CONFLICT = "conflict"  # another writer moved first: redo, a bounded number of times
    POISON = "poison"  # the input: isolate the record(s) and dead-letter them


# SQLSTATE classes that are about the statement's data: a data exception (text PostgreSQL
# cannot hold, a number out of range), an integrity violation other than a unique key (a
# conflict), a program limit (an index row too large). Any other class is about the database,
# the schema or the login (unreachable, read-only, a missing table or grant, a timeout, a
# shutdown): waited out, never blamed on a record.
_POISON_SQLSTATE_CLASSES = ("22", "23", "54")
# Kafka errors the input causes: a record the broker will never take.
_POISON_KAFKA = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError,
                 kafka_errors.InvalidRecordError)
# Python errors a record can cause in the domain or a codec (a value it did not expect, an
# event that cannot be decoded). Others (AttributeError, ImportError, OSError, ...) say the
# worker is broken, not the input: waited out, health red.
_POISON_PYTHON = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, UnicodeError,
                  RecursionError)
# A rule of the domain refusing what a record asks (it would refuse it again on every retry).
_POISON_DOMAIN = (BillingError,)


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
    database = _database_error(exc)
    if database is not None:
        state = database.sqlstate
        if state is None:  # refused before the server: psycopg's own checks of the data
            return (Failure.POISON if isinstance(database, psycopg.DataError)
                    else Failure.TRANSIENT)
        return Failure.POISON if state[:2] in _POISON_SQLSTATE_CLASSES else Failure.TRANSIENT
    if isinstance(exc, persistence.DataError):
        return Failure.POISON
    if isinstance(exc, persistence.PersistenceError | kafka_errors.KafkaError):
        return Failure.TRANSIENT  # the library's own pool, connection and client errors
    if isinstance(exc, (*_POISON_PYTHON, *_POISON_DOMAIN)):
        return Failure.POISON
    return Failure.TRANSIENT
