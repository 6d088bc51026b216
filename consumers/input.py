"""The checks every input record passes before its fields are read: its size, then its JSON,
with no key given twice (another parser may read the other value of a duplicated key, so the
engine and an auditor's tool could disagree on what a message said)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from domain.errors import BillingError

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


def duplicate_key(value: bytes) -> str | None:
    """The first key some object of `value` (valid JSON) gives twice, or None."""
    try:
        json.loads(value, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as duplicate:
        return str(duplicate)
    except (ValueError, RecursionError):
        return None  # orjson read it: the standard parser's own limits are not the contract's
    return None


def check_size(record: ConsumerRecord, max_bytes: int) -> None:
    size = len(record.value or b"") + len(record.key or b"")
    if size > max_bytes:
        raise RefusedInput(f"the record is {size:,} bytes (key and value); the limit is "
                           f"{max_bytes:,}", "too_large")


def decode(record: ConsumerRecord, max_bytes: int,
           watched: tuple[bytes, ...] | None = None) -> Any:
    """The record's JSON value. `watched`: the quoted keys a reader takes; duplicates are then
    looked for only when one of them occurs twice in the bytes or a key may be escaped (the
    full check costs as much as the parse). None: always looked for."""
    check_size(record, max_bytes)
    value = record.value
    if value is None:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise RefusedInput(f"not valid JSON: {e}", "malformed_json") from None
    if isinstance(decoded, dict | list) and (
            watched is None or b"\\u" in value or any(value.count(k) > 1 for k in watched)):
        key = duplicate_key(value)
        if key is not None:
            raise RefusedInput(f"the key {key[:64]!r} is given twice", "duplicate_key")
    return decoded
