"""The orjson transcoder reads and writes eventsourcing's JSON format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError
from hypothesis import given
from hypothesis import strategies as st

from infra.eventstore.transcoder import OrjsonTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    Application.register_transcodings(None, transcoder)  # type: ignore[arg-type]
    return transcoder


FAST = _registered(OrjsonTranscoder())
LIBRARY = _registered(JSONTranscoder())

times = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=6)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(),
                   decimals, times)
states = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@given(states)
def test_round_trip_and_library_compatible(value: object) -> None:
    fast = FAST.encode(value)
    assert FAST.decode(fast) == value
    assert LIBRARY.decode(fast) == value  # bytes written by the library's format
    assert FAST.decode(LIBRARY.encode(value)) == value


def test_same_bytes_as_the_library_for_an_event_state() -> None:
    state = {"timestamp": datetime(2026, 1, 31, 23, 59, tzinfo=UTC), "items": [
        {"id": "u-1", "metric": "tokens", "quantity": "12", "at": "2026-01-31T23:00:00+00:00"}],
        "totals": {"tokens": "12"}, "price": Decimal("19.90"), "name": "Åse"}
    assert FAST.encode(state) == LIBRARY.encode(state)
    assert FAST.decode(FAST.encode(state)) == state


def test_unregistered_type_is_refused() -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.encode({"x": {1, 2}})


def test_deep_values_are_revived_though_a_plain_dict_uses_the_wrapper_key() -> None:
    # The walk stops once it has revived as many values as the bytes hold `"_type_"` keys; a
    # plain dict using that key makes the count an over-estimate, never an under-estimate.
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    state = {"timestamp": at, "plain": {"_type_": "mine", "other": 1},
             "deep": [{"terms": {"ends": [at, Decimal("1.50")]}}, {"at": at}],
             "top": Decimal("2")}
    encoded = FAST.encode(state)
    assert FAST.decode(encoded) == state
    assert LIBRARY.decode(encoded) == state
    assert FAST.decode(LIBRARY.encode(state)) == state
