"""The usage event contract (domain/usage.py: parse_usage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidUsage
from domain.usage import REQUIRED, parse_usage

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
    [0, -1, "0", "-2.5", 1.5, True, False, "NaN", "sNaN", "Infinity", "-Infinity", "abc", "",
     10**15, "1000000000000000", "0.0000000001", "1.0000000001", {"v": 1}],
)
def test_invalid_quantity(quantity: object) -> None:
    assert refused_code(valid(quantity=quantity)) == "invalid_quantity"


@pytest.mark.parametrize("quantity", ["0.000000001", 10**15 - 1, "999999999999999.999999999"])
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
