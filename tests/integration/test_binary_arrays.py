"""The event store's pre-encoded array parameters read back in PostgreSQL as the lists they
were built from (what psycopg's own list dumping would have sent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.eventstore.binary_arrays import ByteaArray, Int4Array, Int8Array, TextArray
from tests.conftest import TestStack

pytestmark = pytest.mark.integration

# What PostgreSQL text can hold: no NUL, no lone surrogates (not encodable as UTF-8).
texts = st.lists(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"])),
                 max_size=20)
int8s = st.lists(st.integers(-2**63, 2**63 - 1), max_size=20)
int4s = st.lists(st.integers(-2**31, 2**31 - 1), max_size=20)
blobs = st.lists(st.binary(max_size=64), max_size=20)


@pytest.fixture(scope="module")
def conn(stack: TestStack) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.admin_url, autocommit=True) as connection:  # SELECTs only
        yield connection


@settings(max_examples=60, deadline=None)
@given(texts, int8s, int4s, blobs)
def test_arrays_read_back_as_built(conn: psycopg.Connection[Any],
                                   text: list[str], int8: list[int], int4: list[int],
                                   blob: list[bytes]) -> None:
    row = conn.execute("SELECT %s::text[], %s::bigint[], %s::int[], %s::bytea[]",
                       (TextArray.of(text), Int8Array.of(int8), Int4Array.of(int4),
                        ByteaArray.of(blob))).fetchone()
    assert row == (text, int8, int4, blob)


def test_arrays_unnest_side_by_side(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute("SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bytea[])",
                        (TextArray.of(["a", "é"]), Int8Array.of([1, -2]),
                         ByteaArray.of([b"\x00", b""]))).fetchall()
    assert rows == [("a", 1, b"\x00"), ("é", -2, b"")]


def test_a_lone_surrogate_is_refused_as_psycopg_refuses_it(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(UnicodeEncodeError):
        conn.execute("SELECT %s::text", ("\ud800",))
    with pytest.raises(UnicodeEncodeError):
        TextArray.of(["ok", "\ud800"])
