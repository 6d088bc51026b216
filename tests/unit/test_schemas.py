"""The published JSON Schemas (docs/schemas/) against the engine's own validators, both ways:
for usage events and commands, what the schema accepts the engine accepts and the reverse
(property tests over values near every rule's edge); `billing.events` messages and dead
letters the engine writes all validate; catalogs the loader accepts validate, and catalogs the
schema refuses the loader refuses (the loader's cross-field rules go beyond a schema)."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from domain.catalog.model import Catalog
from domain.contracts.commands import FIELDS, HANDLERS, parse_command
from domain.contracts.usage import parse_usage
from domain.shared.errors import BillingError, CatalogError
from infra import schemas

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "docs" / "schemas"
PROPERTY = settings(database=None, deadline=None, max_examples=600,
                    suppress_health_check=[HealthCheck.too_slow])


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((FOLDER / f"{name}.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


USAGE, COMMAND, EVENT, LETTER, CATALOG = (validator(n) for n in (
    "usage", "command", "event", "dead-letter", "catalog"))


def test_the_committed_schemas_are_the_ones_the_engine_builds() -> None:
    """`python -m infra.schemas docs/schemas` after a contract changes."""
    built = schemas.rendered()
    assert sorted(p.name for p in FOLDER.glob("*.json")) == sorted(built)
    for name, text in built.items():
        assert (FOLDER / name).read_text("utf-8") == text, name


def accepted_by(check: Callable[[Any], Any], value: Any) -> bool:
    try:
        check(value)
    except BillingError:
        return False
    return True


# --- values near every rule's edge ----------------------------------------------------------

texts = st.one_of(
    st.sampled_from(["", "a", "x" * 256, "x" * 257, "a\x00b", "\x00", "ü" * 256, "ü" * 257,
                     "sub-1", " ", "\u2028"]),
    st.text(max_size=8))
quantities = st.one_of(
    st.integers(min_value=-2, max_value=3), st.sampled_from([10**15 - 1, 10**15, 10**30, True,
                                                             False, None]),
    st.sampled_from([1.0, 2.5, 0.0, -1.0, 1e15, 1e15 - 1, 999999999999999.0, float("nan"),
                     float("inf"), 5e3]),
    st.sampled_from(["1", "0", "0.0", "00.5", ".5", "5.", "1.000000000", "1.0000000000",
                     "0.000000001", "0.0000000001", "999999999999999.999999999",
                     "1000000000000000", "0001", "-1", "+1", "1e3", "1_000", " 1", "\u0661",
                     "0" * 39 + "1", "0" * 40 + "1", "NaN", "Infinity", ""]),
    st.from_regex(r"\A[0-9]{1,17}(\.[0-9]{1,11})?\Z"))
days = st.integers(min_value=1, max_value=31).map(lambda d: f"{d:02d}")
times = st.one_of(
    st.sampled_from([
        "2026-11-02T10:00:00Z", "2026-11-02T10:00:00+00:00", "2026-11-02t10:00:00z",
        "2026-11-02T10:00:00.123456789-05:30", "2026-11-02T10:00:00.1234567890Z",
        "2026-11-02 10:00:00Z", "2026-11-02T10:00:00", "2026-11-02T24:00:00Z",
        "2026-11-02T10:60:00Z", "2026-11-02T10:00:60Z", "2026-11-02T10:00:00+24:00",
        "2026-11-02T10:00:00+23:59", "2026-11-02T10:00:00-00:00", "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-02T10:00:00Z", "2026-11-02T10:00Z", ""]),
    st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d}T12:00:00Z",
              st.integers(min_value=0, max_value=2400), st.integers(min_value=0, max_value=13),
              days),
    st.text(max_size=6))
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["k", "_type_", "a\x00"]), inner,
                                            max_size=2)), max_leaves=6)


def sometimes(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, st.just(None), any_json)


usage_events = st.fixed_dictionaries(
    {}, optional={"id": sometimes(texts), "subscription": sometimes(texts),
                  "metric": sometimes(texts), "quantity": quantities, "at": sometimes(times),
                  "member": sometimes(texts), "workspace": sometimes(texts),
                  "properties": sometimes(st.dictionaries(
                      st.sampled_from(["model", "a b", "", "k.1", "n" * 65, "_type_"]),
                      sometimes(texts), max_size=3)),
                  "note": any_json})


@PROPERTY
@given(st.one_of(usage_events, any_json))
def test_a_usage_event_the_schema_accepts_the_engine_accepts_and_the_reverse(raw: Any) -> None:
    assert USAGE.is_valid(raw) == accepted_by(parse_usage, raw), raw


def _field_values(kind: str) -> st.SearchStrategy[Any]:
    values: dict[str, st.SearchStrategy[Any]] = {
        "text": texts, "integer": st.one_of(st.integers(), st.sampled_from(
            [2**53 - 1, 2**53, -(2**53), 3.0, 3.5, 1e300])),
        "flag": st.one_of(st.booleans(), st.sampled_from(["true", 0, 1])),
        "amount": st.one_of(quantities, st.sampled_from(["12.50", "-0", "0", 0, 2**53, -1])),
        "object": st.dictionaries(st.sampled_from(["country", "_data_"]), texts, max_size=2),
        "names": st.lists(texts, max_size=3)}
    return values[kind]


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.one_of(st.sampled_from(sorted(HANDLERS)), texts, st.just(None)))
    raw: dict[str, Any] = {}
    for key, strategy in (("id", texts), ("subscription", texts), ("at", times)):
        if draw(st.integers(0, 9)):
            raw[key] = draw(st.one_of(strategy, st.just(None))) if draw(
                st.integers(0, 9)) == 0 else draw(strategy)
    if kind is not None:
        raw["type"] = kind
    for name, spec in FIELDS.get(kind if isinstance(kind, str) else "", {}).items():
        choice = draw(st.integers(0, 6))
        if choice == 0:
            continue  # absent
        raw[name] = None if choice == 1 else draw(_field_values(spec.rstrip("?")))
    if draw(st.booleans()):
        raw["extra"] = draw(any_json)
    return raw


@PROPERTY
@given(st.one_of(commands(), any_json))
def test_a_command_the_schema_accepts_the_engine_accepts_and_the_reverse(raw: Any) -> None:
    assert COMMAND.is_valid(raw) == accepted_by(parse_command, raw), raw


def test_nesting_and_reserved_keys_are_refused_by_both() -> None:
    base = {"id": "c", "type": "cancel", "subscription": "s", "at": "2026-11-02T10:00:00Z"}

    def nested(levels: int) -> dict[str, Any]:
        value: Any = {}
        for _ in range(levels):
            value = {"k": value}
        return {**base, "extra": value}
    for levels in (30, 31, 32, 33):
        raw = nested(levels)
        assert COMMAND.is_valid(raw) == accepted_by(parse_command, raw), levels
    assert accepted_by(parse_command, nested(31)) and not accepted_by(parse_command, nested(32))
    reserved = {**base, "extra": {"_type_": "decimal", "_data_": "1"}}
    assert not COMMAND.is_valid(reserved) and not accepted_by(parse_command, reserved)


# --- what the engine writes -----------------------------------------------------------------

def test_every_event_message_of_a_busy_year_validates() -> None:
    from consumers.wire import event_message, undecodable_message, wire_message
    from domain.app.billing_app import BillingApplication
    from domain.contracts.commands import Command, execute
    from domain.contracts.usage import UsageItem

    catalog = Catalog.from_file(ROOT / "examples" / "workspace_tokens.toml")
    app = BillingApplication(catalog, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    app.subscribe("ws-1", "acct", "single", start)
    sub = app.get("ws-1")
    sub.record_usage([UsageItem("u1", "ws-1", "tokens", Decimal("1234.5"), start)])
    app.save_batch([sub], None)
    for kind, fields in (("add_member", {"member": "ann"}), ("change_plan", {"plan": "multi"}),
                         ("buy_pack", {"pack": "tokens_500k"})):
        changed, _ = execute(app.get("ws-1"), Command(kind, kind, "ws-1",
                                                      start + timedelta(days=3), fields),
                             catalog)
        app.save_batch([changed], None)
    app.advance_clock(datetime(2027, 1, 6, tzinfo=UTC), ["ws-1"])
    notifications = list(app.recorder.select_notifications(start=1, limit=10_000))
    assert len(notifications) > 20
    types = set()
    for n in notifications:
        for message in (event_message(app, n), wire_message(app, n)):
            encoded = json.loads(json.dumps(message, default=str))
            errors = [e.message for e in EVENT.iter_errors(encoded)]
            assert not errors, (message["type"], errors)
            types.add(message["type"])
    assert {"Subscribed", "UsageRecorded", "PlanUpgraded", "CycleRolled"} <= types
    assert EVENT.is_valid(undecodable_message(notifications[0], ValueError("edited")))


@settings(database=None, deadline=None, max_examples=200)
@given(value=st.one_of(st.none(), st.binary(max_size=300), st.text(max_size=50).map(str.encode)),
       key=st.one_of(st.none(), st.binary(max_size=40)),
       code=st.sampled_from(["malformed_json", "too_large", "unknown_metric", "duplicate_key"]),
       message=st.text(max_size=1200))
def test_every_dead_letter_validates(value: bytes | None, key: bytes | None, code: str,
                                     message: str) -> None:
    from kafka.consumer.fetcher import ConsumerRecord

    from infra.kafka.dead_letters import dead_letter

    record = ConsumerRecord("t.billing.usage", 1, None, 42, 0, 0, key, value, [], None,
                            len(key or b""), len(value or b""), -1)
    letter = json.loads(json.dumps(dead_letter(record, code, message, "usage-ingest")))
    assert not [e.message for e in LETTER.iter_errors(letter)]
    assert base64.b64decode(letter["value_b64"]) == (value or b"")[:len(base64.b64decode(
        letter["value_b64"]))]


# --- the catalog ----------------------------------------------------------------------------

CATALOG_FILES = [*sorted((ROOT / "examples").glob("*.toml")),
                 ROOT / "infra" / "catalogs" / "starter.toml"]


@pytest.mark.parametrize("path", CATALOG_FILES, ids=lambda p: p.name)
def test_every_shipped_catalog_validates(path: Path) -> None:
    Catalog.from_file(path)
    assert not [e.message for e in CATALOG.iter_errors(tomllib.loads(path.read_text("utf-8")))]


def _mutations(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Small changes of a valid catalog: a wrong type, an unknown key, a bad amount."""
    out: list[tuple[str, dict[str, Any]]] = []
    bad_values: list[Any] = [1.5, "1e3", "-1", "", True, [], {}, "12.505", " 5", "1_000", -3,
                             "x\x00"]

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            out.append((f"{path}+unknown", _set(raw, (*path, "unknown_key"), 1)))
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))
        else:
            for bad in bad_values:
                out.append((f"{path}={bad!r}", _set(raw, path, bad)))
    walk(raw, ())
    return out


def _set(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(raw))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return copy


def _loads(raw: dict[str, Any]) -> bool:
    try:
        Catalog.from_dict(raw)
    except (CatalogError, BillingError):
        return False
    return True


@pytest.mark.parametrize("path", CATALOG_FILES, ids=lambda p: p.name)
def test_a_catalog_the_schema_refuses_the_loader_refuses(path: Path) -> None:
    raw = tomllib.loads(path.read_text("utf-8"))
    checked = 0
    for what, mutated in _mutations(raw):
        if not CATALOG.is_valid(mutated):
            assert not _loads(mutated), f"{path.name}: the loader accepted {what}"
            checked += 1
        elif _loads(mutated):
            checked += 1
    assert checked > 50
