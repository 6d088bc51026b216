"""What a failed batch says about its input (consumers/failures.py)."""

from __future__ import annotations

from decimal import InvalidOperation

import psycopg
import pytest
from eventsourcing import persistence
from kafka import errors as kafka_errors

from consumers.failures import Failure, classify
from domain.shared.errors import CommandRefused
from projections.tracking import VersionConflict


def wrapped(cause: Exception, wrapper: type[Exception]) -> Exception:
    try:
        raise wrapper(str(cause)) from cause
    except Exception as e:
        return e


@pytest.mark.parametrize(("error", "kind"), [
    (psycopg.OperationalError("connection refused"), Failure.TRANSIENT),
    (psycopg.errors.AdminShutdown(), Failure.TRANSIENT),
    (psycopg.errors.SerializationFailure(), Failure.TRANSIENT),
    (psycopg.errors.LockNotAvailable(), Failure.TRANSIENT),
    (psycopg.errors.QueryCanceled(), Failure.TRANSIENT),
    (psycopg.errors.DiskFull(), Failure.TRANSIENT),
    (wrapped(psycopg.errors.AdminShutdown(), persistence.OperationalError), Failure.TRANSIENT),
    (persistence.OperationalError("pool exhausted"), Failure.TRANSIENT),
    (kafka_errors.KafkaTimeoutError(), Failure.TRANSIENT),
    (kafka_errors.NodeNotReadyError(), Failure.TRANSIENT),
    (ConnectionResetError(), Failure.TRANSIENT),
    (persistence.IntegrityError("duplicate key"), Failure.CONFLICT),
    (VersionConflict("moved"), Failure.CONFLICT),
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), Failure.POISON),
    (psycopg.errors.UntranslatableCharacter(), Failure.POISON),
    (psycopg.errors.ProgramLimitExceeded(), Failure.POISON),  # e.g. an index row too large
    (psycopg.errors.NotNullViolation(), Failure.POISON),
    (wrapped(psycopg.errors.NumericValueOutOfRange(), persistence.DataError), Failure.POISON),
    (kafka_errors.MessageSizeTooLargeError(), Failure.POISON),
    (ValueError("a value the domain did not expect"), Failure.POISON),
    (InvalidOperation(), Failure.POISON),
    (persistence.MapperDeserialisationError("an event that cannot be decoded"), Failure.POISON),
    # About the database, the schema or the login: waited out, never dead-lettered.
    (psycopg.errors.UndefinedTable(), Failure.TRANSIENT),
    (psycopg.errors.UndefinedColumn(), Failure.TRANSIENT),
    (psycopg.errors.InsufficientPrivilege(), Failure.TRANSIENT),
    (psycopg.errors.ReadOnlySqlTransaction(), Failure.TRANSIENT),
    (psycopg.errors.InvalidPassword(), Failure.TRANSIENT),
    (psycopg.errors.InternalError_(), Failure.TRANSIENT),
    (wrapped(psycopg.errors.UndefinedTable(), persistence.ProgrammingError), Failure.TRANSIENT),
    (AttributeError("a broken worker"), Failure.TRANSIENT),
    (MemoryError(), Failure.TRANSIENT),
    (KeyError("type"), Failure.POISON),
    (RecursionError(), Failure.POISON),
    # A domain rule refusing a record refuses it on every retry: it was retried forever.
    (CommandRefused("already invoiced through this event", "already_invoiced"), Failure.POISON),
])
def test_classify(error: Exception, kind: Failure) -> None:
    assert classify(error) is kind
