"""Hostile input to the contracts: whatever arrives, parsing either accepts a well-formed value or
refuses with a BillingError carrying a code; it never raises anything else (which would be a
crash in a worker) and never accepts a non-finite, non-positive or out-of-range quantity."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalog.model import Catalog
from domain.contracts.commands import execute, parse_command
from domain.contracts.usage import parse_usage
from domain.shared.errors import BillingError

PURE = settings(database=None, deadline=None, max_examples=200)

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "0.0", "1E5",
                     "99999999999999999999999", "\uff11\uff12", "1_000", " 5", "0x10", "",
                     "2026-11-02T10:00:00+00:00", "0001-01-01T00:00:00+00:00",
                     "9999-12-31T23:59:59+00:00", "2026-11-02T10:00:00", "tomorrow"]))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
FIELDS = ("id", "subscription", "metric", "quantity", "at", "member", "workspace")
usage_like = st.fixed_dictionaries({}, optional={k: json_values for k in FIELDS})


def _checked_usage(raw: object) -> None:
    try:
        item = parse_usage(raw)
    except BillingError as e:
        assert e.code and e.code.replace("_", "").isalpha()
        return
    assert isinstance(item.quantity, Decimal) and item.quantity.is_finite()
    assert Decimal(0) < item.quantity < Decimal(10) ** 15
    assert item.at.tzinfo is not None


@PURE
@given(json_values)
def test_any_json_value_as_usage(raw: Any) -> None:
    _checked_usage(raw)


@PURE
@given(usage_like)
def test_usage_shaped_objects_with_hostile_fields(raw: dict[str, Any]) -> None:
    _checked_usage(raw)


def test_known_hostile_usage_is_refused_with_a_code() -> None:
    base = {"id": "u", "subscription": "s", "metric": "tokens", "at": "2026-11-02T10:00:00Z"}
    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]
    cases = {
        "huge": 10**40, "negative": -3, "nan": "NaN", "inf": "Infinity",
        "float": 1.5, "bool": True, "exponent": "1e3", "nested": deep, "list": [1],
        "megabyte": "9" * 1_000_000,
    }
    for name, quantity in cases.items():
        try:
            parse_usage({**base, "quantity": quantity})
        except BillingError as e:
            assert e.code, name
        else:
            raise AssertionError(f"{name} accepted")
    for at in ("0001-01-01T00:00:00", "not a time", 1700000000, "2026-13-40T00:00:00Z"):
        try:
            parse_usage({**base, "quantity": 1, "at": at})
        except BillingError as e:
            assert e.code
        else:
            raise AssertionError(f"time {at!r} accepted")
    for bad_id in ("", "x" * 10_000, 5, None, ["a"]):
        try:
            parse_usage({**base, "quantity": 1, "id": bad_id})
        except BillingError as e:
            assert e.code
        else:
            raise AssertionError(f"id {bad_id!r} accepted")


command_like = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=8), json_values),
     "type": st.sampled_from(["subscribe", "change_plan", "cancel", "add_seats",
                              "remove_seats", "buy_pack", "update_profile", "nope"]),
     "subscription": st.one_of(st.just("sub-1"), json_values),
     "at": st.one_of(st.just("2026-11-02T10:00:00+00:00"), json_values)},
    optional={k: json_values for k in ("plan", "seats", "quantity", "pack", "account",
                                       "members", "addon", "customer", "immediately")})
CATALOG = Catalog.from_toml("""
[catalog]
id = "c"
version = "1"
currency = "EUR"
[plans.basic]
name = "Basic"
rank = 1
price = "10.00"
allowances.tokens = { included = 100, limit = "hard" }
""")


@PURE
@given(command_like)
def test_hostile_commands_are_refused_with_a_code_or_applied(raw: dict[str, Any]) -> None:
    """Parsing and executing (against no subscription, as a first command would) either works
    or raises a BillingError with a code."""
    try:
        command = parse_command(json.loads(json.dumps(raw, default=str)))
        execute(None, command, CATALOG)
    except BillingError as e:
        assert e.code
    except (ValueError, OverflowError) as e:  # json.dumps of nan: not a message we can get
        assert "JSON" in str(e) or "Out of range" in str(e)


def test_timestamps_stay_timezone_aware() -> None:
    item = parse_usage({"id": "u", "subscription": "s", "metric": "m", "quantity": 1,
                        "at": "2026-11-02T10:00:00+05:00"})
    assert item.at.astimezone(UTC) == datetime(2026, 11, 2, 5, tzinfo=UTC)

