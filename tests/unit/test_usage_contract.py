"""The usage event contract (domain/contracts/usage.py: parse_usage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.contracts.usage import REQUIRED, parse_usage
from domain.shared.errors import InvalidUsage

PURE = settings(database=None, deadline=None)


def valid(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "u-1",
        "subscription": "sub-1",
        "metric": "tokens",
        "quantity": 3,
        "at": "2026-11-02T10:00:00+01:00",
    }
    raw.update(overrides)
    return raw


def refused_code(raw: object) -> str:
    with pytest.raises(InvalidUsage) as info:
        parse_usage(raw)
    return info.value.code


def test_accepts_int_quantity() -> None:
    item = parse_usage(valid())
    assert item.id == "u-1"
    assert item.subscription == "sub-1"
    assert item.metric == "tokens"
    assert item.quantity == Decimal(3)
    assert isinstance(item.quantity, Decimal)
    assert item.at == datetime(2026, 11, 2, 10, tzinfo=timezone(timedelta(hours=1)))
    assert item.member is None
    assert item.workspace is None


def test_accepts_decimal_string_quantity_exactly() -> None:
    item = parse_usage(valid(quantity="2.5"))
    assert item.quantity == Decimal("2.5")
    assert item.as_record()["quantity"] == "2.5"


def test_accepts_optional_member_and_workspace() -> None:
    item = parse_usage(valid(member="m-7", workspace="ws-2"))
    assert (item.member, item.workspace) == ("m-7", "ws-2")
    record = item.as_record()
    assert record["member"] == "m-7"
    assert record["workspace"] == "ws-2"


@pytest.mark.parametrize("raw", [[valid()], "usage", None, 42])
def test_not_an_object(raw: object) -> None:
    assert refused_code(raw) == "not_an_object"


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field(field: str) -> None:
    raw = valid()
    del raw[field]
    assert refused_code(raw) == "missing_field"


@pytest.mark.parametrize("field", REQUIRED)
def test_null_field_counts_as_missing(field: str) -> None:
    assert refused_code(valid(**{field: None})) == "missing_field"


@pytest.mark.parametrize(
    "raw",
    [
        valid(id=17),
        valid(subscription=["sub-1"]),
        valid(id=""),
        valid(metric=""),
        valid(subscription="s" * 257),
        valid(member=""),
        valid(workspace=5),
    ],
)
def test_invalid_field(raw: dict[str, Any]) -> None:
    assert refused_code(raw) == "invalid_field"


def test_text_of_256_chars_is_accepted() -> None:
    assert parse_usage(valid(id="x" * 256)).id == "x" * 256


@pytest.mark.parametrize(
    "quantity",
    [-1, "-2.5", 1.5, True, False, "NaN", "sNaN", "Infinity", "-Infinity", "abc", "",
     10**15, "1000000000000000", "0.0000000001", "1.0000000001", {"v": 1}],
)
def test_invalid_quantity(quantity: object) -> None:
    assert refused_code(valid(quantity=quantity)) == "invalid_quantity"


@pytest.mark.parametrize("quantity", [0, "0", "0.000", "0.000000001", 10**15 - 1,
                                      "999999999999999.999999999"])
def test_quantity_at_the_limits_is_accepted(quantity: int | str) -> None:
    assert parse_usage(valid(quantity=quantity)).quantity == Decimal(quantity)


@pytest.mark.parametrize(
    "at", ["yesterday", "2026-11-02", "2026-11-02T10:00:00", "2026-11-02 10:00:00+00:00",
           1793527200, 20261102.5, ["2026-11-02T10:00:00Z"]],
)
def test_invalid_timestamp(at: object) -> None:
    assert refused_code(valid(at=at)) == "invalid_timestamp"


def test_utc_designator_is_accepted() -> None:
    assert parse_usage(valid(at="2026-11-02T10:00:00Z")).at == datetime(
        2026, 11, 2, 10, tzinfo=UTC
    )


@PURE
@given(st.integers(min_value=1, max_value=10**15 - 1))
def test_any_positive_int_below_limit_parses_exactly(n: int) -> None:
    quantity = parse_usage(valid(quantity=n)).quantity
    assert quantity == Decimal(n)
    assert str(quantity) == str(n)


def _decimal_refuses(text: str) -> bool:
    try:
        Decimal(text)
    except (InvalidOperation, ValueError):
        return True
    return False


@PURE
@given(st.one_of(st.text(max_size=50), st.text(alphabet="0123456789.,eE+-_ naNIfity", max_size=12)))
def test_any_string_decimal_cannot_parse_is_refused(text: str) -> None:
    assume(_decimal_refuses(text))
    assert refused_code(valid(quantity=text)) == "invalid_quantity"


@pytest.mark.parametrize(
    "text", [" 1 ", "1_000", "\u0661\u0662", "1E+14", "1e3", "+5", "-0", "1.", ".5"]
)
def test_only_plain_ascii_decimal_strings_are_quantities(text: str) -> None:
    assert refused_code(valid(quantity=text)) == "invalid_quantity"


@PURE
@given(st.integers(min_value=1, max_value=10**14), st.integers(min_value=0, max_value=10**9 - 1))
def test_plain_decimal_strings_parse_exactly(whole: int, fraction: int) -> None:
    text = f"{whole}.{fraction:09d}"
    assert parse_usage(valid(quantity=text)).quantity == Decimal(text)


@PURE
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)),
                                               timezone(timedelta(hours=-5, minutes=-30))])),
       st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "z"]))
def test_the_stored_time_text_is_canonical_however_the_producer_wrote_it(
        at: datetime, form: str) -> None:
    text = at.isoformat(timespec="seconds").replace("+00:00", "Z") if form == "z" else \
        at.isoformat(timespec=form)
    item = parse_usage({"id": "u", "subscription": "s", "metric": "m", "quantity": 1,
                        "at": text})
    assert item.as_record()["at"] == item.at.isoformat()


@pytest.mark.parametrize("text", [
    "2026-11-01T24:00:00+00:00", "2026-11-01t10:00:00+00:00", "2026-11-01 10:00:00+00:00",
    "20261101T100000+00:00", "2026-11-01T10:00:00-00:00", "2026-11-01T10:00+00:00",
    "2026-11-01T10:00:00.5+00:00", "2026-11-01T10:00:00+00:00"])
def test_time_texts_close_to_the_canonical_form_are_stored_canonically(text: str) -> None:
    try:
        item = parse_usage({"id": "u", "subscription": "s", "metric": "m", "quantity": 1,
                            "at": text})
    except InvalidUsage:
        return  # refused is fine too; stored differently from its canonical text is not
    assert item.as_record()["at"] == item.at.isoformat()


@pytest.mark.parametrize("at", [
    "2026-W49-6T10:00:00+00:00",  # ISO week date
    "20261205T100000Z",  # basic format
    "2026-12-05T10:00:00+01:00:30",  # an offset with seconds
    "2026-12-05T10:00:00,5+00:00",  # a comma fraction
    "2026-12-05 10:00:00+00:00",  # a space for T
    "2026-12-05T10:00:00",  # no offset
    "2026-12-05T10:00+00:00",  # no seconds
    "2026-12-05T24:00:00+00:00",  # hour 24
    "2026-12-05T23:59:60Z",  # a leap second
    "2026-12-05T10:00:00.1234567890Z",  # ten fraction digits
    "2026-12-05T10:00:00+24:00",
    "2026-12-05",
    "2026-12-05T10:00:00\uff3a",  # a fullwidth Z
])
def test_only_rfc3339_date_times_are_accepted(at: str) -> None:
    assert refused_code(valid(at=at)) == "invalid_timestamp"


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-12-05T10:00:00Z", datetime(2026, 12, 5, 10, tzinfo=UTC)),
    ("2026-12-05t10:00:00z", datetime(2026, 12, 5, 10, tzinfo=UTC)),
    ("2026-12-05T10:00:00-00:00", datetime(2026, 12, 5, 10, tzinfo=UTC)),
    ("2026-12-05T10:00:00.123456789+01:00",
     datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))),
    ("2026-12-05T10:00:00.5Z", datetime(2026, 12, 5, 10, 0, 0, 500000, tzinfo=UTC)),
])
def test_rfc3339_forms_are_read_exactly(at: str, expected: datetime) -> None:
    assert parse_usage(valid(at=at)).at == expected


@pytest.mark.parametrize("field", ["id", "subscription", "metric", "member", "workspace"])
@pytest.mark.parametrize("text", ["a\x00b", "\x00", "ok\ud800", "\udfff", "caf\u00e9\x00"])
def test_text_postgresql_cannot_store_is_refused(field: str, text: str) -> None:
    assert refused_code(valid(**{field: text})) == "invalid_text"


def test_non_ascii_text_postgresql_can_store_is_accepted() -> None:
    item = parse_usage(valid(member="J\u00fcrgen \U0001f600", id="\u00e9v\u00e9nement"))
    assert item.member == "J\u00fcrgen \U0001f600"


def test_sums_of_the_largest_quantities_stay_exact() -> None:
    """24 significant digits each, summed 10^5 times: past the 28 digits of Python's default
    decimal context (domain/__init__.py sets the engine's)."""
    quantity = parse_usage(valid(quantity="999999999999999.999999999")).quantity
    total = Decimal(0)
    for _ in range(100_000):
        total += quantity
    assert total == Decimal("99999999999999999999.999900000")


@pytest.mark.parametrize("customer", [
    {"name": {"_type_": "datetime_iso", "_data_": "not a time"}},
    {"name": {"_type_": "decimal_str", "_data_": "x"}},
    {"vat": [{"_data_": 1}]},
])
def test_a_command_with_the_stores_type_wrapper_keys_is_refused(customer: Any) -> None:
    """The event store reads any object with these keys as a wrapped type: stored, it made
    the subscription unreadable."""
    from domain.contracts.commands import parse_command
    from domain.shared.errors import InvalidCommand

    with pytest.raises(InvalidCommand) as info:
        parse_command({"id": "c", "type": "update_customer", "subscription": "s",
                       "at": "2026-11-02T10:00:00Z", "customer": customer})
    assert info.value.code == "reserved_key"


def test_properties_are_kept_exactly_and_only_when_given() -> None:
    item = parse_usage(valid(properties={"model": "gpt-4o", "region.eu": "fr-1"}))
    assert item.properties == {"model": "gpt-4o", "region.eu": "fr-1"}
    assert item.dimension("model") == "gpt-4o" and item.dimension("other") is None
    # stored: only the properties the plan prices on
    assert item.as_record(frozenset({"model"}))["properties"] == {"model": "gpt-4o"}
    assert "properties" not in item.as_record()
    assert "properties" not in item.as_record(frozenset({"team"}))
    assert "properties" not in parse_usage(valid()).as_record(frozenset({"model"}))
    assert parse_usage(valid(properties={})).properties is None


@pytest.mark.parametrize("properties", [
    [], "model=x", {"model": 4}, {"model": ""}, {"model": "x" * 257}, {"bad name": "x"},
    {"": "x"}, {"n" * 65: "x"}, {f"k{n}": "v" for n in range(17)}, {"model": {"deep": "x"}},
])
def test_malformed_properties_are_refused(properties: object) -> None:
    assert refused_code(valid(properties=properties)) == "invalid_properties"


@pytest.mark.parametrize("name", ["_type_", "_data_"])
def test_property_names_the_event_store_reserves_are_refused(name: str) -> None:
    assert refused_code(valid(properties={name: "x"})) == "reserved_key"
