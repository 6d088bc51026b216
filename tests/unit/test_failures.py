"""What a failed batch says about its input (consumers/failures.py)."""

from __future__ import annotations

import psycopg
import pytest
from eventsourcing import persistence
from kafka import errors as kafka_errors

from consumers.failures import Failure, classify
from projections.versions import VersionConflict


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
    (ValueError("a bug"), Failure.POISON),
    (KeyError("type"), Failure.POISON),
    (RecursionError(), Failure.POISON),
])
def test_classify(error: Exception, kind: Failure) -> None:
    assert classify(error) is kind
