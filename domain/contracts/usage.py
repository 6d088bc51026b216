"""A usage event as the domain sees it, and the contract check of its decoded JSON fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.shared.errors import InvalidUsage
from domain.shared.text import RESERVED_KEYS, storable

DECIMAL_STRING = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)
MAX_QUANTITY = Decimal(10) ** 15
MAX_DECIMAL_PLACES = 9
MAX_TEXT = 256
MAX_PROPERTIES = 16
PROPERTY_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
REQUIRED = ("id", "subscription", "metric", "quantity", "at")
# RFC 3339 section 5.6 date-time, nothing more: `T`/`t` between date and time, `Z`/`z` or
# +hh:mm/-hh:mm, a fraction of 1-9 digits. ISO 8601's other forms (week dates, the basic format,
# second offsets, comma fractions, a space) are refused.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time with its offset. Digits past the microsecond are dropped (Python's
    datetime holds microseconds); a leap second (:60) is refused, since no UTC offset arithmetic
    can place it. Raises ValueError saying why."""
    match = RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.fff]Z or +hh:mm): "
                         f"{text[:64]!r}")
    if match[1] == "60":
        raise ValueError(f"a leap second cannot be billed; send :59.999999 instead: {text!r}")
    fraction = (match[2] or "")[:7]
    offset = "+00:00" if match[3] in ("Z", "z") else match[3]
    return datetime.fromisoformat(f"{text[:10]}T{text[11:19]}{fraction}{offset}")


def _canonical_utc(text: str) -> bool:
    """Whether a time text that `datetime.fromisoformat` accepted is already what `isoformat`
    writes back for it: `YYYY-MM-DDTHH:MM:SS+00:00`, or with microseconds that are not all
    zero, `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (ASCII, not hour 24). Position checks cost a
    third of a regular expression's match."""
    size = len(text)
    if size == 32:
        fraction = text[20:26]
        if text[19] != "." or not fraction.isdigit() or fraction == "000000":
            return False
    elif size != 25:
        return False
    return (text[size - 6:] == "+00:00" and text[10] == "T" and text[4] == "-"
            and text[7] == "-" and text[13] == ":" and text[16] == ":" and text[11:13] != "24"
            and text.isascii())


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, which
# cost 2 us an item, a twentieth of ingesting it. Nothing mutates an item after parsing.
@dataclass(slots=True)
class UsageItem:
    id: str
    subscription: str
    metric: str
    quantity: Decimal
    at: datetime
    member: str | None = None
    workspace: str | None = None
    # Dimensions the plan may count distinct values of or route to a charge by (e.g. the AI
    # model); None when the event has none.
    properties: dict[str, str] | None = None
    # `at` as the producer wrote it, kept only when it is the canonical text of `at` (a
    # tz-aware isoformat costs 2-4 us: a tenth of ingesting an event).
    at_text: str | None = field(default=None, compare=False)

    def as_record(self, kept: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The compact form stored in a UsageRecorded event (strings keep it exact), with the
        properties named in `kept` (those the plan prices on)."""
        record: dict[str, Any] = {"id": self.id, "metric": self.metric,
                                  "quantity": str(self.quantity),
                                  "at": self.at_text or self.at.isoformat()}
        if self.member is not None:
            record["member"] = self.member
        if self.workspace is not None:
            record["workspace"] = self.workspace
        if self.properties and kept:
            properties = {k: v for k, v in self.properties.items() if k in kept}
            if properties:
                record["properties"] = properties
        return record

    def dimension(self, name: str) -> str | None:
        """`member`, `workspace` or a property's value: what a plan counts distinct values of
        or filters by."""
        if name == "member":
            return self.member
        if name == "workspace":
            return self.workspace
        return None if self.properties is None else self.properties.get(name)


def _text(raw: dict[str, Any], key: str, required: bool) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise InvalidUsage(f"'{key}' must be a non-empty string of at most {MAX_TEXT} characters",
                           "invalid_field")
    if not storable(value):
        raise InvalidUsage(f"'{key}' holds U+0000 or a lone surrogate", "invalid_text")
    return value


def _parse_common_case(raw: object) -> UsageItem | None:
    """The shape almost every event has (short strings, an int quantity, a UTC time), checked
    with fewer steps; anything else takes the full path with its precise error codes."""
    if type(raw) is not dict:
        return None
    uid, sub, metric = raw.get("id"), raw.get("subscription"), raw.get("metric")
    quantity, at_text = raw.get("quantity"), raw.get("at")
    member, workspace = raw.get("member"), raw.get("workspace")
    if raw.get("properties") is not None:
        return None
    if not (type(uid) is str and type(sub) is str and type(metric) is str
            and type(quantity) is int and type(at_text) is str
            and 0 < len(uid) <= MAX_TEXT and 0 < len(sub) <= MAX_TEXT
            and 0 < len(metric) <= MAX_TEXT and 0 <= quantity < 10**15
            and (member is None or (type(member) is str and 0 < len(member) <= MAX_TEXT))
            and (workspace is None
                 or (type(workspace) is str and 0 < len(workspace) <= MAX_TEXT))
            and _canonical_utc(at_text) and uid.isascii() and sub.isascii()
            and metric.isascii() and "\x00" not in uid + sub + metric
            and (member is None or (member.isascii() and "\x00" not in member))
            and (workspace is None or (workspace.isascii() and "\x00" not in workspace))):
        return None
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        return None
    return UsageItem(uid, sub, metric, Decimal(quantity), at, member, workspace,
                     at_text=at_text)


def parse_quantity(value: object) -> Decimal:
    """An integer or a decimal string, >= 0 (zero is a level a gauge can drop to; a summed
    metric refuses it when the plan is known). A JSON number with a fraction is refused (a binary
    float is not exact); one whose fraction is zero (`5.0`, `5e3`) is an integer, as JSON and
    JSON Schema see it."""
    if isinstance(value, float) and value.is_integer() and 0 <= value < MAX_QUANTITY:
        return Decimal(int(value))
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidUsage("quantity must be an integer or a decimal string", "invalid_quantity")
    if isinstance(value, str):
        # Plain ASCII digits with an optional fraction: no exponent, sign, spaces or "_".
        if len(value) > 40 or not DECIMAL_STRING.fullmatch(value):
            raise InvalidUsage(f"quantity is not a plain decimal string: {value[:40]!r}",
                               "invalid_quantity")
        quantity = Decimal(value)
    else:
        quantity = Decimal(value)
    if not quantity.is_finite() or quantity < 0 or quantity >= MAX_QUANTITY:
        raise InvalidUsage(f"quantity must be >= 0 and < 10^15: {value!r}", "invalid_quantity")
    exponent = quantity.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise InvalidUsage(f"quantity has more than {MAX_DECIMAL_PLACES} decimals",
                           "invalid_quantity")
    return quantity


def parse_time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidUsage("'at' must be an RFC 3339 string with an offset", "invalid_timestamp")
    try:
        return parse_rfc3339(value)
    except ValueError as e:
        raise InvalidUsage(f"'at': {e}", "invalid_timestamp") from None


def parse_properties(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_PROPERTIES:
        raise InvalidUsage(f"'properties' is an object of at most {MAX_PROPERTIES} names",
                           "invalid_properties")
    for name, text in value.items():
        if not PROPERTY_NAME.fullmatch(name):
            raise InvalidUsage(f"property name {name[:64]!r}: 1-64 of A-Z a-z 0-9 _ . : -",
                               "invalid_properties")
        if name in RESERVED_KEYS:
            raise InvalidUsage(f"property name {name!r} is reserved by the event store",
                               "reserved_key")
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
            raise InvalidUsage(f"property {name!r}: a non-empty string of at most {MAX_TEXT} "
                               f"characters", "invalid_properties")
        if not storable(text):
            raise InvalidUsage(f"property {name!r} holds U+0000 or a lone surrogate",
                               "invalid_text")
    return dict(value) or None


def parse_usage(raw: object) -> UsageItem:
    """Check decoded JSON against the usage contract; raise InvalidUsage with a code."""
    fast = _parse_common_case(raw)
    if fast is not None:
        return fast
    if not isinstance(raw, dict):
        raise InvalidUsage("a usage event is a JSON object", "not_an_object")
    missing = [k for k in REQUIRED if k not in raw or raw[k] is None]
    if missing:
        raise InvalidUsage(f"missing field(s): {', '.join(missing)}", "missing_field")
    usage_id = _text(raw, "id", True)
    subscription = _text(raw, "subscription", True)
    metric = _text(raw, "metric", True)
    assert usage_id is not None and subscription is not None and metric is not None
    return UsageItem(
        id=usage_id,
        subscription=subscription,
        metric=metric,
        quantity=parse_quantity(raw["quantity"]),
        at=parse_time(raw["at"]),
        member=_text(raw, "member", False),
        workspace=_text(raw, "workspace", False),
        properties=parse_properties(raw.get("properties")),
    )
