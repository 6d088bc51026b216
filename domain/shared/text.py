"""What a text from outside may hold before the engine stores it: PostgreSQL text cannot hold
U+0000, and UTF-8 (so PostgreSQL too) cannot hold a lone surrogate (U+D800-U+DFFF, which
Python lets through from `\\ud800` escapes in other parsers or undecodable bytes in argv)."""

from __future__ import annotations

import re
from typing import Any

from domain.shared.errors import BillingError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 32
# The event store writes a value of a type JSON lacks (a time, a decimal) as an object with
# these keys, and reads any such object back as that type: an input object holding them would
# be read back as something else, or not at all.
RESERVED_KEYS = frozenset({"_type_", "_data_"})


class InvalidText(BillingError):
    """A string PostgreSQL could not store (a NUL or a lone surrogate)."""

    code = "invalid_text"


def storable(value: str) -> bool:
    """Whether PostgreSQL text can hold `value` as it is."""
    return (value.isascii() and "\x00" not in value) or _UNSTORABLE.search(value) is None


def check_text(value: str, name: str) -> str:
    if not storable(value):
        raise InvalidText(f"'{name}' holds a character PostgreSQL text cannot store "
                          "(U+0000 or a lone surrogate)")
    return value


def check_all_text(value: Any, name: str, depth: int = 0) -> None:
    """Every string (keys included) of a decoded JSON value, at most MAX_DEPTH levels deep,
    with no key the event store reserves."""
    if depth > MAX_DEPTH:
        raise InvalidText(f"'{name}' is nested more than {MAX_DEPTH} levels deep", "too_deep")
    if isinstance(value, str):
        check_text(value, name)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, name)
            if key in RESERVED_KEYS:
                raise InvalidText(f"'{name}' uses the key {key!r}, which the event store "
                                  "reserves", "reserved_key")
            check_all_text(item, f"{name}.{key}", depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_all_text(item, name, depth + 1)


def printable(value: str, limit: int = 200) -> str:
    """A text safe to store and show whatever it holds: unstorable characters escaped."""
    text = value if storable(value) else _UNSTORABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", value)
    return text[:limit]
