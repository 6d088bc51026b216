"""Hostile messages on the input topics: each one is dead-lettered with a code, no worker
crashes, no total changes, and the good messages around them still apply."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest

from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import publish, read_topic, store_totals, subscribe, until, usage

pytestmark = pytest.mark.integration

AT = "2026-11-02T10:00:00+00:00"


def _usage_body(**fields: object) -> bytes:
    body: dict[str, object] = {"id": "x", "subscription": "sub-h", "metric": "tokens",
                               "quantity": 1, "at": AT}
    body.update(fields)
    return json.dumps(body).encode()  # the standard encoder: it writes any integer


HOSTILE_USAGE = [
    b'{"id": "h1", "subscription": "sub-h", "metric": "tokens", "quantity": 1e400, '
    b'"at": "2026-11-02T10:00:00+00:00"}',
    _usage_body(id="h2", quantity=10**30),
    _usage_body(id="h3", quantity=-5),
    _usage_body(id="h4", quantity=0),
    _usage_body(id="h5", quantity="NaN"),
    _usage_body(id="h6", quantity="Infinity"),
    _usage_body(id="h7", quantity="7"),  # a string quantity is fine...
    _usage_body(id="h8", quantity=[1]),
    _usage_body(id="h9", quantity={"deep": {"er": [1, 2, 3]}}),
    b"[" * 100_000 + b"]" * 100_000,  # nesting far past any parser's limit
    _usage_body(id="h10", quantity=1, padding="x" * 1_000_000),  # a megabyte
    b"\xff\xfe\xfa not utf-8",
    b"",
    b"null",
    _usage_body(id="h11", at="0001-01-01T00:00:00+00:00"),
    _usage_body(id="h12", at="9999-12-31T23:59:59+00:00"),
    _usage_body(id="h13", at="2026-11-02T10:00:00"),  # no offset
    _usage_body(id="h14", metric="unknown-metric"),
    _usage_body(id="h15", subscription="nobody"),
    _usage_body(id="h16", subscription=["sub-h"]),
    _usage_body(id=12),
]
ACCEPTED = {"h7": 7, "h10": 1}  # the string quantity; the padded one (extra fields ignored)


def test_hostile_usage_is_dead_lettered_and_changes_no_total(engine: Engine) -> None:
    subscribe(engine, "sub-h")
    good = [usage(f"g{n}", "sub-h", "tokens", 2) for n in range(50)]
    messages = good[:25] + [(b"sub-h", m) for m in HOSTILE_USAGE] + good[25:]
    ends = publish(engine, messages)
    loop, ingestor = engine.ingestion()
    monitor = Monitor(engine)
    until(lambda: monitor.ingested(ends), lambda: loop.poll_once(100))
    assert loop.settle()  # the last batch's commit is known
    assert loop.failures == 0  # no batch ever raised: every message was handled
    expected_dead = len(HOSTILE_USAGE) - len(ACCEPTED)
    assert ingestor.stats.dead_lettered == expected_dead
    assert store_totals(engine)[("sub-h", "tokens")] == Decimal(100 + sum(ACCEPTED.values()))
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq,
                                                         expected_dead)]
    assert len(letters) == expected_dead
    assert all(letter["code"] and letter["value_b64"] is not None for letter in letters)
    codes = {letter["code"] for letter in letters}
    assert {"malformed_json", "invalid_quantity", "unknown_subscription",
            "time_too_far_ahead"} <= codes, codes


def test_hostile_commands_are_dead_lettered_with_codes(engine: Engine) -> None:
    subscribe(engine, "sub-c")
    bad = [b"{", b"[]", orjson.dumps({"id": "c1", "type": "drop_tables", "subscription": "sub-c",
                                       "at": AT}),
           orjson.dumps({"id": "c2", "type": "add_seats", "subscription": "sub-c", "at": AT,
                         "seats": "NaN"}),
           orjson.dumps({"id": "c3", "type": "change_plan", "subscription": "sub-c", "at": AT,
                         "plan": {"$ne": 1}}),
           orjson.dumps({"id": "c4", "type": "cancel", "subscription": "sub-c",
                         "at": "9999-99-99"}),
           b"\xc3\x28"]
    ends = publish(engine, [(b"sub-c", m) for m in bad], engine.settings.topics.commands)
    loop, _ = engine.commands()
    monitor = Monitor(engine)
    until(lambda: monitor.ingested(ends, engine.settings.topics.commands),
          lambda: loop.poll_once(100))
    assert loop.failures == 0
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq,
                                                         len(bad))]
    assert len(letters) == len(bad)
    assert all(letter["code"] for letter in letters)
    assert engine.app.load_as_stored("sub-c").version == 1  # nothing applied
