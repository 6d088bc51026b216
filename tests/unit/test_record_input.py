"""The checks before an input record's fields are read (consumers/input.py): its size, its
JSON, no key given twice."""

from __future__ import annotations

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from consumers import input as record_input
from consumers.usage import USAGE_KEYS

BODY = b'{"id":"u1","subscription":"s","metric":"tokens","quantity":1,"at":"2026-11-02T10:00:00Z"}'


def record(value: bytes | None, key: bytes | None = b"s") -> ConsumerRecord:
    return ConsumerRecord("billing.usage", 0, None, 7, 0, 0, key, value, [], None,
                          len(key or b""), len(value or b""), 0)


def code_of(value: bytes | None, key: bytes | None = b"s", max_bytes: int = 1 << 20,
            watched: tuple[bytes, ...] | None = USAGE_KEYS) -> str:
    with pytest.raises(record_input.RefusedInput) as info:
        record_input.decode(record(value, key), max_bytes, watched)
    return info.value.code


def test_a_plain_message_is_decoded() -> None:
    assert record_input.decode(record(BODY), 1 << 20, USAGE_KEYS)["quantity"] == 1


@pytest.mark.parametrize("value", [
    b'{"id":"u1","quantity":1,"quantity":1000000}',
    b'{"id":"u1","\\u0069d":"u2"}',  # the same key, escaped
    b'{"id":"u1","extra":{"a":1,"a":2},"id":"u1"}',
    b'{"id":"u1", "at" :"x","at":"y"}',
])
def test_a_key_given_twice_is_refused(value: bytes) -> None:
    assert code_of(value) == "duplicate_key"


def test_commands_look_for_duplicates_at_any_key() -> None:
    assert code_of(b'{"customer":{"name":"a","name":"b"}}', watched=None) == "duplicate_key"


def test_a_contract_key_as_a_value_is_no_duplicate() -> None:
    value = b'{"id":"metric","subscription":"s","metric":"id","quantity":1,"at":"at"}'
    assert record_input.decode(record(value), 1 << 20, USAGE_KEYS)["metric"] == "id"


@pytest.mark.parametrize(("value", "key"), [(b"x" * 1001, b"s"), (BODY, b"k" * 1000)])
def test_a_record_over_the_limit_is_too_large_unread(value: bytes, key: bytes) -> None:
    assert code_of(value, key, max_bytes=1000) == "too_large"


def test_malformed_json_and_lone_surrogates() -> None:
    assert code_of(b'{"id": "\\ud800"}') == "malformed_json"
    assert code_of(b"\xff") == "malformed_json"
    assert record_input.decode(record(None), 1 << 20) is None


def test_a_dead_letter_stays_small_whatever_it_carries() -> None:
    import hashlib

    import orjson

    from infra.dlq import MAX_LETTER_VALUE, dead_letter, letter_key

    value, key = b"v" * 5_000_000, b"k" * 3_000_000
    letter = dead_letter(record(value, key), "too_large", "e" * 10_000, "usage-ingest")
    assert len(orjson.dumps(letter)) < 3 * MAX_LETTER_VALUE
    assert letter["value_truncated"] == {"size": 5_000_000,
                                         "sha256": hashlib.sha256(value).hexdigest()}
    assert letter["key_truncated"]["size"] == 3_000_000
    assert letter["value"] is None and len(letter["error"]) == 1000
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("billing.usage", 0, 7)
    key_sent = letter_key(record(value, key))
    assert key_sent is not None and len(key_sent) == 1024
