"""The checks every input record passes before its fields are read: its size, then its JSON,
with no key given twice (another parser may read the other value of a duplicated key, so the
engine and an auditor's tool could disagree on what a message said)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from domain.shared.errors import BillingError

DEFAULT_MAX_BYTES = 1024 * 1024


class RefusedInput(BillingError):
    code = "refused_input"


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


# Objects and arrays nest at most this deep in an input message (orjson reads 1,024 levels,
# the standard parser that looks for duplicate keys fewer: what neither can check is refused).
MAX_DEPTH = 64


def duplicate_key(value: bytes) -> str | None:
    """The first key some object of `value` (valid JSON, nested at most MAX_DEPTH) gives
    twice, or None."""
    try:
        json.loads(value, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as duplicate:
        return str(duplicate)
    except RecursionError:
        raise RefusedInput(f"nested more than {MAX_DEPTH} levels deep", "too_deep") from None
    return None


def depth(decoded: Any) -> int:
    """How deep objects and arrays nest in a decoded JSON value (iteratively: any depth)."""
    deepest, stack = 0, [(decoded, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_size(record: ConsumerRecord, max_bytes: int) -> None:
    size = len(record.value or b"") + len(record.key or b"")
    if size > max_bytes:
        raise RefusedInput(f"the record is {size:,} bytes (key and value); the limit is "
                           f"{max_bytes:,}", "too_large")


def _flat_and_unique(value: bytes, decoded: dict[str, Any] | list[Any]) -> bool:
    """True when `value` (an object, or an array of objects) surely gives no key twice,
    decided without a second parse: with no backslash (so no escaped quote or key) and no
    nested value, its quotes are exactly two per key and two per string value, and a key given
    twice would add two or four."""
    if b"\\" in value:
        return False
    quotes = 0
    for obj in decoded if type(decoded) is list else (decoded,):
        if type(obj) is not dict:
            return False
        strings = 0
        for item in obj.values():
            kind = type(item)
            if kind is str:
                strings += 1
            elif kind is dict or kind is list:
                return False
        quotes += 2 * (len(obj) + strings)
    return value.count(b'"') == quotes


def decode(record: ConsumerRecord, max_bytes: int) -> Any:
    """The record's JSON value, refused with a code: `too_large` (checked before reading),
    `malformed_json`, `too_deep`, `duplicate_key` (any key given twice in any object)."""
    value = record.value
    if len(value or b"") + len(record.key or b"") > max_bytes:
        check_size(record, max_bytes)
    if value is None:
        return None
    return decode_json(value)


def decode_json(value: bytes) -> Any:
    """JSON text (a record's value, an HTTP body) decoded, refused with a code as `decode`
    says, except for its size."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise RefusedInput(f"not valid JSON: {e}", "malformed_json") from None
    if type(decoded) in (dict, list) and _flat_and_unique(value, decoded):
        return decoded
    if isinstance(decoded, dict | list):
        if depth(decoded) > MAX_DEPTH:
            raise RefusedInput(f"nested more than {MAX_DEPTH} levels deep", "too_deep")
        key = duplicate_key(value)
        if key is not None:
            raise RefusedInput(f"the key {key[:64]!r} is given twice", "duplicate_key")
    return decoded
