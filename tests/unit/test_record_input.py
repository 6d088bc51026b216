"""The checks before an input record's fields are read (consumers/input.py): its size, its
JSON, no key given twice."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from consumers import input as record_input

BODY = b'{"id":"u1","subscription":"s","metric":"tokens","quantity":1,"at":"2026-11-02T10:00:00Z"}'


def record(value: bytes | None, key: bytes | None = b"s") -> ConsumerRecord:
    return ConsumerRecord("billing.usage", 0, None, 7, 0, 0, key, value, [], None,
                          len(key or b""), len(value or b""), 0)


def code_of(value: bytes | None, key: bytes | None = b"s", max_bytes: int = 1 << 20) -> str:
    with pytest.raises(record_input.RefusedInput) as info:
        record_input.decode(record(value, key), max_bytes)
    return info.value.code


def test_a_plain_message_is_decoded() -> None:
    assert record_input.decode(record(BODY), 1 << 20)["quantity"] == 1


@pytest.mark.parametrize("value", [
    b'{"id":"u1","quantity":1,"quantity":1000000}',
    b'{"id":"u1","\\u0069d":"u2"}',  # the same key, escaped
    b'{"id":"u1","extra":{"a":1,"a":2},"id":"u1"}',
    b'{"id":"u1", "at" :"x","at":"y"}',
    b'{"id":"u1","n":1,"n":2}',  # a number given twice: two quotes more
    b'{"id":"u1","n":"a","n":"b"}',  # a string given twice: four quotes more
    b'{"a":[{"b":1,"b":2}]}',  # deep inside
    b'{"id":"caf\\u00e9","x":1,"x":2}',  # an escape elsewhere: the full check
])
def test_a_key_given_twice_is_refused(value: bytes) -> None:
    assert code_of(value) == "duplicate_key"


@pytest.mark.parametrize("value", [
    b'{"id":"metric","subscription":"s","metric":"id","quantity":1,"at":"at"}',
    b'{"id":"a\\"b","q":1}',  # an escaped quote in a value
    b'{"x":{"a":1},"y":{"a":1}}',  # the same key in two objects
    b'{"id":"\\u00e9","q":[1,2],"r":null,"s":true}',
    b'{}',
])
def test_messages_without_a_duplicate_pass(value: bytes) -> None:
    assert record_input.decode(record(value), 1 << 20) is not None


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

    from infra.kafka.dead_letters import MAX_LETTER_VALUE, dead_letter, letter_key

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


def test_a_duplicate_behind_deep_nesting_is_refused_not_let_through() -> None:
    """The standard parser gives up near 1,000 levels where orjson reads 1,024: a duplicate
    key next to 1,000 levels of nesting was applied with the other value."""
    deep = b"[" * 1000 + b"]" * 1000
    value = b'{"id":"d","quantity":1,"quantity":100000000000000,"deep":' + deep + b"}"
    assert code_of(value) == "too_deep"
    assert code_of(b'{"a":' + b"[" * 64 + b"]" * 64 + b"}") == "too_deep"
    assert record_input.decode(record(b'{"a":' + b"[" * 63 + b"]" * 63 + b"}"), 1 << 20)


# Texts of flat objects (or arrays of them) built by hand, with keys from a small set (so some
# come twice), strings holding the characters the byte count relies on, and whitespace where
# JSON allows it.
_SPACE = st.sampled_from(["", "", " ", "\t", "\n", "\r\n"])
_STRING = st.text(alphabet=st.sampled_from(list('ab:{}[] ,"\\')), max_size=6).map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
_VALUE = st.one_of(st.integers(-5, 5).map(str), _STRING, st.just("{}"), st.just("[]"),
                   st.just('{"a":1}'))


@st.composite
def _object_text(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "id", "a:", "{", " x"]),
                                    _VALUE), max_size=5))
    return "{" + ",".join(f'{draw(_SPACE)}"{key}"{draw(_SPACE)}:{draw(_SPACE)}{value}'
                          f"{draw(_SPACE)}" for key, value in pairs) + "}"


@settings(database=None, deadline=None, max_examples=3000)
@given(st.one_of(_object_text(), st.lists(_object_text(), min_size=1, max_size=3).map(
    lambda texts: "[" + ",".join(texts) + "]")))
def test_the_byte_count_lets_through_only_flat_texts_without_a_duplicate(text: str) -> None:
    """The shortcut (`_flat_and_unique`) may send any text to the full check, but one it lets
    through must have no key twice and nothing nested."""
    value = text.encode()
    decoded = orjson.loads(value)
    if record_input._flat_and_unique(value, decoded):
        assert record_input.duplicate_key(value) is None
        assert record_input.depth(decoded) <= (2 if isinstance(decoded, list) else 1)


def test_the_byte_count_takes_the_usual_message_without_the_full_check() -> None:
    assert record_input._flat_and_unique(BODY, orjson.loads(BODY))
    many = b"[" + b",".join([BODY] * 3) + b"]"
    assert record_input._flat_and_unique(many, orjson.loads(many))
