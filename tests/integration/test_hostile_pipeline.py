"""Hostile input through the real pipeline, published by a Kafka client that is not the engine's
own (confluent-kafka, librdkafka): every hostile class of issue 16 (NUL and lone surrogates in
each string field of usage and commands, oversized values and keys, duplicate keys, deep
nesting, every timestamp form, extreme quantities) and ten thousand fuzzed messages.

Each hostile message is followed by a valid one on the same partition. The workers run in the
test thread (`poll_once`) until the input positions reach the acknowledged ends, within a
time bound per class; then every input must be applied or dead-lettered exactly once with the
expected code, every valid message applied, no exception may escape a worker (it would need a
restart), and totals must be exact in the event store and in the quota read model.

Two more things a foreign producer does: compress its batches (each codec is run through the
production worker, `billing run --only ingest`, in a process of its own so that a hang can be
ended), and send JSON values shaped like the event store's own type wrapper in free-form
command fields (the subscription must stay loadable).

Run with `-s` to see the per-case tables and the counts per code. HOSTILE_FUZZ_SEED and
HOSTILE_FUZZ_COUNT change the fuzzed stream.

The embedded broker (Tansu) takes records far above Kafka's default 1 MiB: an 8 MB value was
published and read back, so the oversized cases publish 5 MB values (the producer's
`message.max.bytes` is raised to 10 MB; 100 MB for the gzip bomb)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.partitioner import murmur2

from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import project_all, quota_used, relay_all, store_totals, subscribe

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

AT = "2026-11-02T10:00:00+00:00"
MIB = 1024 * 1024
CLASS_SECONDS = 15.0  # the time bound for one class's messages to be applied or dead-lettered
MAX_QTY = "999999999999999.999999999"
EXOTIC = ("\x01\x1f\x7f\x85\u00a0\u200b\u2028\u2029\u202e\ufeff\ufffe\uffff"
          "e\u0301\U0001f600\U0010ffff")  # storable: controls, bidi, BOM, non-characters, astral


# --- JSON written byte by byte (duplicate keys, raw bytes, any integer) ----------------------

class Raw(bytes):
    """Bytes written into a JSON text as they are (a value, or a quoted key)."""


DROP = object()  # a field left out


def jtext(value: Any) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    # ensure_ascii: NUL -> \u0000, a lone surrogate -> \ud800, astral -> a surrogate pair
    return json.dumps(value, ensure_ascii=True).encode()


def obj(pairs: Iterable[tuple[Any, Any]], colon: bytes = b":", comma: bytes = b",") -> bytes:
    parts = [(bytes(k) if isinstance(k, Raw) else jtext(k)) + colon + jtext(v) for k, v in pairs]
    return b"{" + comma.join(parts) + b"}"


def udoc(sub: str, uid: Any, *, after: Iterable[tuple[Any, Any]] = (), **fields: Any) -> bytes:
    """A usage message; `fields` override the defaults (DROP removes one), `after` appends
    pairs (a duplicated key, an extra field)."""
    base: dict[str, Any] = {"id": uid, "subscription": sub, "metric": "tokens", "quantity": 1,
                            "at": AT}
    base.update(fields)
    return obj([*((k, v) for k, v in base.items() if v is not DROP), *after])


def cdoc(sub: str, cid: str, *, after: Iterable[tuple[Any, Any]] = (), **fields: Any) -> bytes:
    """A command (report_count by default)."""
    base: dict[str, Any] = {"id": cid, "type": "report_count", "subscription": sub, "at": AT,
                            "name": "assistants", "value": 1}
    base.update(fields)
    return obj([*((k, v) for k, v in base.items() if v is not DROP), *after])


def nested(depth: int, leaf: Any = 1) -> Raw:
    return Raw(b"[" * depth + jtext(leaf) + b"]" * depth)


def nested_objects(depth: int, leaf: Any = 1) -> Raw:
    return Raw(b'{"a":' * depth + jtext(leaf) + b"}" * depth)


# --- the foreign client, the dead-letter reader, the worker driver ---------------------------

@dataclass
class Msg:
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[Any, bytes | None]] | None = None
    timestamp: int | None = None


def partition_of(key: bytes, partitions: int) -> int:
    """Where librdkafka's `murmur2_random` partitioner (the Java client's) puts a key."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class Publisher:
    """A confluent-kafka producer; `send` returns each message's (partition, offset) from the
    delivery reports."""

    def __init__(self, engine: Engine, **config: Any) -> None:
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": engine.kafka_bootstrap,
            "client.id": "hostile-confluent",
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.max.bytes": 10_000_000,
            "log_level": 3,
            **config,
        })

    def send(self, topic: str, messages: list[Msg]) -> list[tuple[int, int]]:
        reports: list[Any] = [None] * len(messages)
        for i, m in enumerate(messages):
            def delivered(err: Any, msg: Any, i: int = i) -> None:
                reports[i] = (err, msg.partition(), msg.offset())

            extra: dict[str, Any] = {}
            if m.partition is not None:
                extra["partition"] = m.partition
            if m.headers is not None:
                extra["headers"] = m.headers
            if m.timestamp is not None:
                extra["timestamp"] = m.timestamp
            while True:
                try:
                    self.producer.produce(topic, value=m.value, key=m.key,
                                          on_delivery=delivered, **extra)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
        left = self.producer.flush(120)
        assert left == 0, f"{left} message(s) not delivered"
        errors = [(i, r[0]) for i, r in enumerate(reports) if r is None or r[0] is not None]
        assert not errors, f"the broker refused: {errors[:5]}"
        return [(r[1], r[2]) for r in reports]

    def close(self) -> None:
        self.producer.flush(30)
        self.producer.close()


def ends_of(positions: Iterable[tuple[int, int]]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


class DeadLetterReader:
    """Reads the DLQ topic from its start with a confluent-kafka consumer, incrementally."""

    def __init__(self, engine: Engine) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": engine.kafka_bootstrap,
            "group.id": f"hostile-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "log_level": 3,
        })
        self.consumer.assign([
            confluent_kafka.TopicPartition(engine.settings.topics.dlq, p,
                                           confluent_kafka.OFFSET_BEGINNING)
            for p in range(engine.settings.partitions)])
        self.letters: list[dict[str, Any]] = []

    def read(self, at_least: int, timeout: float = 10.0, quiet: float = 1.0
             ) -> list[dict[str, Any]]:
        """Every letter so far, once at least `at_least` arrived and then none for `quiet`
        seconds (so that a letter sent twice is seen too)."""
        deadline = time.monotonic() + timeout
        quiet_until = time.monotonic() + quiet
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None:
                if len(self.letters) >= at_least and time.monotonic() > quiet_until:
                    break
                continue
            assert msg.error() is None, msg.error()
            letter = orjson.loads(msg.value())
            letter["_size"] = len(msg.value()) + len(msg.key() or b"")
            letter["_header"] = dict(msg.headers() or []).get("billing-error-code")
            self.letters.append(letter)
            quiet_until = time.monotonic() + quiet
        return self.letters

    def close(self) -> None:
        self.consumer.close()


def by_source(letters: list[dict[str, Any]], topic: str) -> dict[tuple[int, int],
                                                                   list[dict[str, Any]]]:
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for letter in letters:
        if letter["topic"] == topic:
            found.setdefault((letter["partition"], letter["offset"]), []).append(letter)
    return found


def check_letter(letter: dict[str, Any], value: bytes | None, key: bytes | None = None
                 ) -> list[str]:
    """What is wrong with a dead letter's envelope, given the original value (and key)."""
    problems = []
    if key is not None and len(key) > 1024 and \
            (letter.get("key_truncated") or {}).get("size") != len(key):
        problems.append(f"key_truncated {letter.get('key_truncated')} for a {len(key):,}-byte key")
    if not letter.get("code"):
        problems.append("no code")
    if letter["_header"] != (letter.get("code") or "").encode():
        problems.append(f"header code {letter['_header']!r} != {letter.get('code')!r}")
    if letter["_size"] >= MIB:
        problems.append(f"the letter is {letter['_size']:,} bytes")
    original = value or b""
    cut = letter.get("value_truncated")
    if cut:
        if cut.get("size") != len(original) or \
                cut.get("sha256") != hashlib.sha256(original).hexdigest():
            problems.append(f"value_truncated {cut} does not describe the value")
        if not original.startswith(base64.b64decode(letter["value_b64"])):
            problems.append("the truncated value is not the value's start")
    elif base64.b64decode(letter["value_b64"]) != original:
        problems.append("value_b64 is not the original value")
    return problems


class Driver:
    """Runs a worker loop in this thread. An exception escaping `poll_once` is recorded (with
    its traceback) and the loop is sent back to its stored positions, as the supervisor would
    after restarting it: the tests then assert that it never happened."""

    def __init__(self, engine: Engine, loop: Any, topic: str) -> None:
        self.loop = loop
        self.topic = topic
        self.monitor = Monitor(engine)
        self.escaped: list[str] = []

    def run(self, ends: dict[int, int], timeout: float) -> float | None:
        """Seconds until every position below `ends` is stored; None if not within timeout."""
        start = time.monotonic()
        while not self.monitor.ingested(ends, self.topic):
            if time.monotonic() - start > timeout:
                return None
            try:
                self.loop.poll_once(100)
            except Exception:
                self.escaped.append(traceback.format_exc())
                with contextlib.suppress(Exception):
                    self.loop.seek_to_stored(sorted(self.loop.assigned,
                                                    key=lambda tp: tp.partition))
        self.loop.settle()
        return time.monotonic() - start

    def describe(self) -> str:
        loop = self.loop
        return (f"records={loop.records} batches={loop.batches} failures={loop.failures} "
                f"quarantined={loop.quarantined} redone={loop.redone} "
                f"isolating={dict(loop._isolating)} last_error={loop.last_error!r}")


# --- one class: hostile, valid, hostile, valid, ... -------------------------------------------

APPLIED = "applied"


@dataclass
class Case:
    name: str
    value: bytes | None
    expect: str | frozenset[str]  # a dead-letter code, several accepted, or APPLIED
    qty: Decimal = Decimal(0)  # added to the class's (subscription, metric) when applied
    ledger_id: str | None = None  # the usage id (or command id) recorded when applied
    key: Any = ...  # ...: the subscription id
    headers: list[tuple[Any, bytes | None]] | None = None
    timestamp: int | None = None
    events: int = 0  # commands: events it adds when applied
    either: bool = False  # applied or dead-lettered (any code): documented as open


@dataclass
class ClassReport:
    name: str
    published: int = 0
    seconds: float | None = None
    codes: Counter[str] = field(default_factory=Counter)
    applied: int = 0
    problems: list[str] = field(default_factory=list)


def run_class(engine: Engine, kind: str, name: str, sub: str, cases: list[Case],
              valid: Callable[[int], tuple[bytes, str, Decimal]],
              publisher: Publisher | None = None) -> ClassReport:
    """Publish each case followed by a valid message (`valid(i)` -> value, id, quantity) on the
    same partition; run the worker; check every message. `kind`: usage or commands."""
    topic = engine.settings.topics.usage if kind == "usage" else engine.settings.topics.commands
    worker: Any
    if kind == "usage":
        loop, worker = engine.ingestion()
    else:
        loop, worker = engine.commands()
    driver = Driver(engine, loop, topic)
    publisher = publisher or Publisher(engine)
    reader = DeadLetterReader(engine)
    report = ClassReport(name)
    home = partition_of(sub.encode(), engine.settings.partitions)
    messages: list[Msg] = []
    followers: list[tuple[str, Decimal]] = []
    for i, case in enumerate(cases):
        key = sub.encode() if case.key is ... else case.key
        partition = None if key == sub.encode() else home
        messages.append(Msg(key, case.value, partition, case.headers, case.timestamp))
        value, vid, qty = valid(i)
        messages.append(Msg(sub.encode(), value))
        followers.append((vid, qty))
    try:
        positions = publisher.send(topic, messages)
    finally:
        publisher.close()
    report.published = len(messages)
    report.seconds = driver.run(ends_of(positions), CLASS_SECONDS)
    if report.seconds is None:
        report.problems.append(f"not all applied or dead-lettered within {CLASS_SECONDS}s: "
                               f"{driver.describe()}")
    expected_letters = sum(1 for c in cases if c.expect != APPLIED and not c.either)
    letters = by_source(reader.read(expected_letters), topic)
    reader.close()
    ledger_keys = []
    for case, (vid, _) in zip(cases, followers, strict=True):
        ledger_keys.append((sub, vid if kind == "usage" else f"cmd:{vid}"))
        if case.ledger_id is not None:
            ledger_keys.append((sub, case.ledger_id if kind == "usage"
                                else f"cmd:{case.ledger_id}"))
    seen = engine.app.usage_ledger().seen_usage(ledger_keys)
    total = Decimal(0)
    events = 0
    rows = []
    for i, case in enumerate(cases):
        hostile_pos, valid_pos = positions[2 * i], positions[2 * i + 1]
        if hostile_pos[0] != valid_pos[0]:
            report.problems.append(f"{case.name}: hostile and valid on different partitions")
        got = letters.get(hostile_pos, [])
        codes = [letter.get("code") for letter in got]
        observed = ",".join(str(c) for c in codes) if codes else APPLIED
        rows.append((case.name, case.expect if isinstance(case.expect, str)
                     else "|".join(sorted(case.expect)), observed))
        for letter in got:
            report.codes[str(letter.get("code"))] += 1
            for problem in check_letter(letter, case.value, messages[2 * i].key):
                report.problems.append(f"{case.name}: dead letter: {problem}")
        wanted = {case.expect} if isinstance(case.expect, str) else set(case.expect)
        if case.either:
            ok = (len(got) == 1 and bool(codes[0])) or (not got and (
                case.ledger_id is None or (sub, _ledger(kind, case.ledger_id)) in seen))
        elif APPLIED in wanted and not got:
            ok = case.ledger_id is None or (sub, _ledger(kind, case.ledger_id)) in seen
        else:
            ok = len(got) == 1 and codes[0] in wanted
        if not ok:
            report.problems.append(f"{case.name}: expected {sorted(wanted)}, observed "
                                   f"{codes or 'no dead letter'}"
                                   + (f" (ledger: {(sub, case.ledger_id) in seen})"
                                      if case.ledger_id else ""))
        if not got:
            report.applied += 1
            total += case.qty
            events += case.events
        vid, qty = followers[i]
        if letters.get(valid_pos):
            report.problems.append(f"{case.name}: the valid message after it was dead-lettered: "
                                   f"{[x.get('code') for x in letters[valid_pos]]}")
        if (sub, _ledger(kind, vid)) not in seen:
            report.problems.append(f"{case.name}: the valid message after it ({vid}) was not "
                                   "applied")
        total += qty
    stray = set(letters) - set(positions)
    if stray:
        report.problems.append(f"dead letters for offsets not published here: {sorted(stray)}")
    if driver.escaped:
        report.problems.append(f"{len(driver.escaped)} exception(s) escaped poll_once; the first:"
                               f"\n{driver.escaped[0]}")
    if loop.failures or loop.quarantined:
        report.problems.append(f"the loop failed batches: {driver.describe()}")
    stats = worker.stats
    dead = sum(len(v) for v in letters.values())
    refused = stats.dead_lettered if kind == "usage" else stats.refused
    if refused != dead:
        report.problems.append(f"the worker counted {refused} dead letters, the DLQ holds {dead}")
    _print_rows(f"{kind}: {name}", rows, report, driver)
    if kind == "usage":
        _check_totals(engine, report, {(sub, "tokens"): total})
    else:
        _check_command_state(engine, report, sub, 1 + len(cases) + events, len(cases))
    return report


def _ledger(kind: str, uid: str) -> str:
    return uid if kind == "usage" else f"cmd:{uid}"


def _print_rows(title: str, rows: list[tuple[str, str, str]], report: ClassReport,
                driver: Driver) -> None:
    seconds = "n/a" if report.seconds is None else f"{report.seconds:.2f}s"
    print(f"\n== {title}: {report.published} messages, handled in {seconds}; "
          f"{driver.describe()}")
    width = max(len(r[0]) for r in rows)
    for name, expected, observed in rows:
        mark = "" if observed in expected.split("|") or (
            expected == APPLIED and observed == APPLIED) else "   <-- differs"
        print(f"  {name:<{width}}  expected {expected:<22} observed {observed}{mark}")
    print(f"  dead letters per code: {dict(sorted(report.codes.items()))}")


def _check_totals(engine: Engine, report: ClassReport,
                  expected: dict[tuple[str, str], Decimal]) -> None:
    stored = store_totals(engine)
    for key, total in expected.items():
        if stored.get(key, Decimal(0)) != total:
            report.problems.append(f"event store total {key}: {stored.get(key)} != {total}")
    relay_all(engine)
    project_all(engine)
    projected = quota_used(engine.database_url)
    for key, total in expected.items():
        if projected.get(key, Decimal(0)) != total:
            report.problems.append(f"quota read model {key}: {projected.get(key)} != {total}")


def _check_command_state(engine: Engine, report: ClassReport, sub: str, version: int,
                         last_count: int) -> None:
    try:
        state = engine.app.load_as_stored(sub)
    except Exception as e:
        report.problems.append(f"{sub} cannot be loaded any more: {type(e).__name__}: {e}")
        return
    if state.version != version:
        report.problems.append(f"{sub} is at version {state.version}, expected {version}")
    if state.counts.get("assistants") != last_count:
        report.problems.append(f"{sub} counts {state.counts}, expected assistants={last_count}")


def usage_follower(sub: str) -> Callable[[int], tuple[bytes, str, Decimal]]:
    def valid(i: int) -> tuple[bytes, str, Decimal]:
        uid = f"ok-{i}"
        return udoc(sub, uid, quantity=i + 1), uid, Decimal(i + 1)
    return valid


def command_follower(sub: str) -> Callable[[int], tuple[bytes, str, Decimal]]:
    def valid(i: int) -> tuple[bytes, str, Decimal]:
        cid = f"ok-{i}"
        return cdoc(sub, cid, value=i + 1), cid, Decimal(0)
    return valid


def assert_clean(report: ClassReport) -> None:
    assert not report.problems, f"{report.name}:\n  " + "\n  ".join(report.problems)


# --- usage: the hostile classes --------------------------------------------------------------

def text_cases(sub: str) -> list[Case]:
    """NUL and lone surrogates (escaped and raw) in each string field, and their neighbours:
    other controls and astral characters (storable, so applied), lengths at the limit."""
    cases: list[Case] = []
    bases = {"id": None, "subscription": sub, "metric": "tokens", "member": "alice",
             "workspace": "ws-1"}
    n = 0
    for name, base in bases.items():
        def case(label: str, value: Any, expect: str, *, _name: str = name,
                 exotic: str | None = None) -> None:
            nonlocal n
            n += 1
            uid = f"t{n}"
            ledger = (exotic if _name == "id" else uid) if expect == APPLIED else None
            cases.append(Case(f"{_name}: {label}", udoc(sub, uid, **{_name: value}), expect,
                              qty=Decimal(1) if expect == APPLIED else Decimal(0),
                              ledger_id=ledger))

        text = base or f"id{n}"
        known = {"subscription": "unknown_subscription", "metric": "unknown_metric"}
        case("escaped NUL inside", text[:2] + "\x00" + text[2:], "invalid_text")
        case("escaped NUL alone", "\x00", "invalid_text")
        case("escaped NUL at the end", text + "\x00", "invalid_text")
        case("escaped lone high surrogate", text + "\ud800", "malformed_json")
        case("escaped lone low surrogate", "\udfff" + text, "malformed_json")
        case("escaped reversed surrogate pair", text + "\udc00\ud800", "malformed_json")
        case("raw UTF-8 of a surrogate (ED A0 80)", Raw(b'"x\xed\xa0\x80"'), "malformed_json")
        case("raw NUL byte", Raw(b'"x\x00y"'), "malformed_json")
        case("overlong NUL (C0 80)", Raw(b'"x\xc0\x80"'), "malformed_json")
        case("raw control byte 0x1f", Raw(b'"x\x1fy"'), "malformed_json")
        case("257 characters", "x" * 257, "invalid_field")
        case("empty", "", "invalid_field")
        case("a 900,000-character string", "y" * 900_000, "invalid_field")
        exotic = f"{name}-{EXOTIC}"
        case("controls, bidi, BOM, non-characters, astral", exotic,
             known.get(name, APPLIED), exotic=exotic)
        astral = "\U0001f600" * 256
        case("256 astral characters (1,024 bytes)", astral, known.get(name, APPLIED),
             exotic=astral)
        case("257 astral characters", "\U0001f600" * 257, "invalid_field")
    n += 1
    cases += [
        Case("extra field: escaped NUL (ignored)", udoc(sub, "x1", note="a\x00b"), APPLIED,
             Decimal(1), "x1"),
        Case("extra key: escaped NUL (ignored)", udoc(sub, "x2", after=[("id\x00", 1)]),
             APPLIED, Decimal(1), "x2"),
        Case("extra field: escaped lone surrogate", udoc(sub, "x3", note="\ud800"),
             "malformed_json"),
        Case("extra field: invalid UTF-8", udoc(sub, "x4", note=Raw(b'"\xff\xfe"')),
             "malformed_json"),
        Case("record key with NUL and invalid UTF-8, valid body", udoc(sub, "x5"), APPLIED,
             Decimal(1), "x5", key=b"\x00\xff\xfe" + sub.encode()),
        Case("no record key, valid body", udoc(sub, "x6"), APPLIED, Decimal(1), "x6",
             key=None),
        Case("record headers: NUL, invalid UTF-8 (key and value), null, 500 of them",
             udoc(sub, "x7"), APPLIED, Decimal(1), "x7",
             headers=[("h\x00", b"\x00\xff"), (b"\xff\xfe", b"v"), ("null", None),
                      ("\U0001f600", b"")]
             + [(f"k{i}", b"v" * 100) for i in range(500)]),
        Case("record timestamp 1 ms after 1970", udoc(sub, "x8"), APPLIED, Decimal(1), "x8",
             timestamp=1),
        Case("record timestamp in year 9999", udoc(sub, "x9"), APPLIED, Decimal(1), "x9",
             timestamp=253402300799999),
    ]
    return cases


def size_cases(sub: str) -> list[Case]:
    def padded(uid: str, total: int, key_len: int, name: str = "pad") -> bytes:
        field: dict[str, Any] = {name: ""}
        empty = udoc(sub, uid, **field)
        field[name] = "p" * (total - key_len - len(empty))
        return udoc(sub, uid, **field)

    key = sub.encode()
    at_limit = padded("s1", MIB, len(key))
    assert len(at_limit) + len(key) == MIB
    over_by_one = padded("s2", MIB + 1, len(key))
    big_key = key + b"k" * (3 * MIB // 2)
    many = obj([("id", "s8"), ("subscription", sub), ("metric", "tokens"), ("quantity", 1),
                ("at", AT), *((f"f{i}", i) for i in range(60_000))])
    assert len(many) < MIB
    return [
        Case("key + value exactly 1 MiB", at_limit, APPLIED, Decimal(1), "s1"),
        Case("key + value 1 MiB + 1 byte", over_by_one, "too_large"),
        Case("1.1 MB value", padded("s3", 1_100_000, len(key)), "too_large"),
        Case("5 MB value (valid JSON)", padded("s4", 5_000_000, len(key)), "too_large"),
        Case("5 MB of invalid bytes", b"\xff" * 5_000_000, "too_large"),
        Case("5 MB of nesting", b"[" * 2_500_000 + b"]" * 2_500_000, "too_large"),
        Case("1.5 MiB key, valid body", udoc(sub, "s5"), "too_large", key=big_key),
        Case("600 KB key + 600 KB value", padded("s6", 600_000, 0), "too_large",
             key=key + b"k" * 600_000),
        Case("a key just over 1 MiB, empty value", b"", "too_large", key=key + b"k" * MIB),
        Case("id of 1,000,000 characters (under 1 MiB in all)", udoc(sub, "i" * 1_000_000),
             "invalid_field"),
        Case("id of 1,100,000 characters", udoc(sub, "j" * 1_100_000), "too_large"),
        Case("a 1 MiB record whose member is too long", padded("s7", MIB, len(key), "member"),
             "invalid_field"),
        Case(f"60,000 extra fields ({len(many):,} bytes)", many, APPLIED, Decimal(1), "s8"),
        Case("a 200,000-element array in an extra field", udoc(sub, "s9", junk=[0] * 200_000),
             APPLIED, Decimal(1), "s9"),
    ]


def duplicate_cases(sub: str) -> list[Case]:
    deep = 1000  # past the 64 levels an input message may nest (consumers/input.py)
    return [
        Case("id twice, same value", udoc(sub, "d1", after=[("id", "d1")]), "duplicate_key"),
        Case("quantity twice, different values",
             udoc(sub, "d2", after=[("quantity", 10**14)]), "duplicate_key"),
        Case("subscription twice", udoc(sub, "d3", after=[("subscription", "other")]),
             "duplicate_key"),
        Case("metric twice", udoc(sub, "d4", after=[("metric", "documents")]), "duplicate_key"),
        Case("at twice", udoc(sub, "d5", after=[("at", "2026-11-03T10:00:00Z")]),
             "duplicate_key"),
        Case("member twice", udoc(sub, "d6", member="a", after=[("member", "b")]),
             "duplicate_key"),
        Case("workspace twice", udoc(sub, "d7", workspace="a", after=[("workspace", "b")]),
             "duplicate_key"),
        Case('id again as "\\u0069d"', udoc(sub, "d8", after=[(Raw(b'"\\u0069d"'), "d8x")]),
             "duplicate_key"),
        Case('quantity again as "\\u0071uantity"',
             udoc(sub, "d9", after=[(Raw(b'"\\u0071uantity"'), 5)]), "duplicate_key"),
        Case('at again as "\\u0061\\u0074"',
             udoc(sub, "d10", after=[(Raw(b'"\\u0061\\u0074"'), "2026-11-03T10:00:00Z")]),
             "duplicate_key"),
        Case("id 10,000 times", obj([("id", "d11"), ("subscription", sub), ("metric", "tokens"),
                                     ("quantity", 1), ("at", AT)] + [("id", "d11")] * 10_000),
             "duplicate_key"),
        Case("quantity twice, then 1,000 levels of nesting in an extra field",
             udoc(sub, "d12", after=[("quantity", 10**14), ("deep", nested(deep))]),
             "too_deep", ledger_id="d12"),
        Case("id twice, escaped, then 1,000 levels of nesting",
             udoc(sub, "d13", after=[(Raw(b'"\\u0069d"'), "d13x"), ("deep", nested(deep))]),
             "too_deep"),
        Case('"ID" and "Id" (other keys, ignored)',
             udoc(sub, "d14", after=[("ID", 1), ("Id", 2)]), APPLIED, Decimal(1), "d14"),
        # Any key given twice in any object is refused (consumers/input.py), also keys the
        # usage contract does not read, whatever the types of the two values.
        Case("an extra key twice", udoc(sub, "d15", after=[("note", 1), ("note", 2)]),
             "duplicate_key"),
        Case("an extra key twice: a string, then a number",
             udoc(sub, "d16", after=[("note", "a"), ("note", 2)]), "duplicate_key"),
        Case("an extra key twice: a number, then a string",
             udoc(sub, "d17", after=[("note", 1), ("note", "b")]), "duplicate_key"),
        Case("an extra key twice: null, then true",
             udoc(sub, "d18", after=[("note", None), ("note", True)]), "duplicate_key"),
        Case("an extra key twice, once escaped",
             udoc(sub, "d19", after=[("note", 1), (Raw(b'"n\\u006fte"'), 1)]),
             "duplicate_key"),
        Case("a contract key twice inside an extra object",
             udoc(sub, "d20", meta=Raw(b'{"id":1,"id":2}')), "duplicate_key"),
        Case("a key twice in an object in a list in an extra field",
             udoc(sub, "d21", meta=Raw(b'[1,{"a":"x"},{"b":1,"b":"y"}]')), "duplicate_key"),
        Case("an extra key twice, then 1,000 levels of nesting",
             udoc(sub, "d22", after=[("note", 1), ("note", 2), ("deep", nested(deep))]),
             "too_deep"),
        Case("quantity twice, then 60 levels of nesting",
             udoc(sub, "d23", after=[("quantity", 10**14), ("deep", nested(60))]),
             "duplicate_key", ledger_id="d23"),
    ]


def nesting_cases(sub: str) -> list[Case]:
    return [
        Case("100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
        Case("100,000 nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
             "malformed_json"),
        # At most 64 levels in all (consumers/input.py): the duplicate-key check must read
        # every level, and orjson reads 1,024 where Python's json gives up near 1,000.
        Case("64 levels in all (extra field)", udoc(sub, "n1", deep=nested(63)), APPLIED,
             Decimal(1), "n1"),
        Case("65 levels in all (extra field)", udoc(sub, "n0", deep=nested(64)), "too_deep"),
        Case("1,024 levels in all (extra field)", udoc(sub, "n11", deep=nested(1023)),
             "too_deep"),
        Case("1,025 levels in all (extra field)", udoc(sub, "n2", deep=nested(1024)),
             "malformed_json"),
        Case("500 nested objects in an extra field", udoc(sub, "n3", deep=nested_objects(500)),
             "too_deep"),
        Case("60 levels and an escaped key (no duplicate)",
             udoc(sub, "n4", after=[(Raw(b'"\\u006eote"'), 1), ("deep", nested(60))]),
             APPLIED, Decimal(1), "n4"),
        Case("quantity nested [[[1]]]", udoc(sub, "n5", quantity=nested(3)),
             "invalid_quantity"),
        Case("quantity nested 1,000 levels", udoc(sub, "n6", quantity=nested(1000)),
             "too_deep"),
        Case("id nested in objects", udoc(sub, nested_objects(50, "n7")), "invalid_field"),
        Case("subscription nested", udoc(sub, "n8", subscription=nested(10, sub)),
             "invalid_field"),
        Case("at nested", udoc(sub, "n9", at=nested(10, AT)), "invalid_timestamp"),
        Case("member nested", udoc(sub, "n10", member=nested_objects(10, "m")),
             "invalid_field"),
        Case("top level: an array of 1,000 levels", nested(1000), "too_deep"),
        Case("top level: an array of 10 levels", nested(10), "not_an_object"),
    ]


VALID_TIMES = [
    ("Z", "2026-11-02T10:00:00Z"),
    ("lower-case t and z", "2026-11-02t10:00:00z"),
    ("+00:00", "2026-11-02T10:00:00+00:00"),
    ("-00:00", "2026-11-02T10:00:00-00:00"),
    ("-05:00", "2026-11-02T05:00:00-05:00"),
    ("+14:00", "2026-11-02T23:45:00+14:00"),
    ("-12:00 with 9 fraction digits", "2026-11-02T10:00:00.999999999-12:00"),
    ("1 fraction digit", "2026-11-02T10:00:00.5Z"),
    ("9 fraction digits", "2026-11-02T10:00:00.123456789Z"),
    ("the cycle's first instant", "2026-11-01T00:00:00Z"),
    ("the cycle's last nanosecond", "2026-11-30T23:59:59.999999999Z"),
    ("the cycle's last second, +01:00", "2026-12-01T00:59:59+01:00"),
]
BAD_TIMES = [
    ("ISO week date", "2026-W45-1T10:00:00Z"),
    ("ordinal date", "2026-306T10:00:00Z"),
    ("basic format", "20261102T100000Z"),
    ("basic format with offset", "20261102T100000+0000"),
    ("offset with seconds", "2026-11-02T10:00:00+01:00:00"),
    ("offset without colon", "2026-11-02T10:00:00+0100"),
    ("offset hours only", "2026-11-02T10:00:00+01"),
    ("offset +24:00", "2026-11-02T10:00:00+24:00"),
    ("offset +23:60", "2026-11-02T10:00:00+23:60"),
    ("comma fraction", "2026-11-02T10:00:00,5Z"),
    ("empty fraction", "2026-11-02T10:00:00.Z"),
    ("10 fraction digits", "2026-11-02T10:00:00.1234567890Z"),
    ("space separator", "2026-11-02 10:00:00Z"),
    ("underscore separator", "2026-11-02_10:00:00Z"),
    ("hour 24", "2026-11-02T24:00:00Z"),
    ("leap second", "2026-11-02T23:59:60Z"),
    ("minute 60", "2026-11-02T10:60:00Z"),
    ("February 30", "2026-02-30T10:00:00Z"),
    ("month 13", "2026-13-02T10:00:00Z"),
    ("year 0", "0000-01-01T00:00:00Z"),
    ("no seconds", "2026-11-02T10:00Z"),
    ("no offset", "2026-11-02T10:00:00"),
    ("date only", "2026-11-02"),
    ("UTC suffix", "2026-11-02T10:00:00UTC"),
    ("space before the offset", "2026-11-02T10:00:00 +00:00"),
    ("leading space", " 2026-11-02T10:00:00Z"),
    ("trailing newline", "2026-11-02T10:00:00Z\n"),
    ("expanded year", "+2026-11-02T10:00:00Z"),
    ("five-digit year", "02026-11-02T10:00:00Z"),
    ("full-width digits", "\uff12\uff10\uff12\uff16-11-02T10:00:00Z"),
    ("Arabic-Indic digits", "\u0662\u0660\u0662\u0666-11-02T10:00:00Z"),
    ("escaped NUL inside", "2026-11-02T10:00:00\x00Z"),
    ("empty", ""),
    ("65 characters", "2026-11-02T10:00:00." + "1" * 44 + "Z"),
    ("a 100,000-character string", "2" * 100_000),
    ("epoch seconds (a number)", 1793613600),
    ("epoch seconds (a string)", "1793613600"),
    ("a float", 1793613600.5),
    ("true", True),
    ("an array", [2026, 11, 2]),
    ("an object", {"$date": "2026-11-02T10:00:00Z"}),
]
DOMAIN_TIMES = [
    ("before the open cycle", "2026-10-31T23:59:59.999999999Z", "too_late"),
    ("+01:00 that is before the cycle in UTC", "2026-11-01T00:30:00+01:00", "too_late"),
    ("year 1", "0001-01-01T00:00:00Z", "too_late"),
    ("year 1, +23:59", "0001-01-01T00:00:00+23:59", "too_late"),
    ("one period past the open cycle", "2026-12-31T00:00:00Z", "time_too_far_ahead"),
    ("next year", "2027-01-01T00:00:00Z", "time_too_far_ahead"),
    ("year 9999, -23:59", "9999-12-31T23:59:59-23:59", "time_too_far_ahead"),
]


def timestamp_cases(sub: str) -> list[Case]:
    cases = [Case(f"valid: {label}", udoc(sub, f"tv{i}", at=at), APPLIED, Decimal(1), f"tv{i}")
             for i, (label, at) in enumerate(VALID_TIMES)]
    cases += [Case(label, udoc(sub, f"tb{i}", at=at), "invalid_timestamp")
              for i, (label, at) in enumerate(BAD_TIMES)]
    cases += [Case(label, udoc(sub, f"td{i}", at=at), code)
              for i, (label, at, code) in enumerate(DOMAIN_TIMES)]
    cases += [Case("null", udoc(sub, "tn", at=None), "missing_field"),
              Case("missing", udoc(sub, "tm", at=DROP), "missing_field")]
    return cases


VALID_QUANTITIES = [
    ("1", 1, "1"),
    ("10^15 - 1 (integer)", 10**15 - 1, "999999999999999"),
    ("10^15 - 10^-9 (string)", MAX_QTY, MAX_QTY),
    ("10^-9", "0.000000001", "0.000000001"),
    ("9 decimals, trailing zeros", "1.000000000", "1"),
    ("leading zeros", "000000000000000000000000000000000000007", "7"),
    ("2^49 and a half", "562949953421312.5", "562949953421312.5"),
    ("integer as a string", "42", "42"),
    # A JSON number with a zero fraction is an integer, as JSON Schema reads it
    # (docs/contracts.md); one with a fraction (1.5, 1E-3) is still refused.
    ("1.0 (a number with a zero fraction)", Raw(b"1.0"), "1"),
    ("1e3", Raw(b"1e3"), "1000"),
]
BAD_QUANTITIES: list[tuple[str, Any, Any]] = [
    ("0", 0, "invalid_quantity"),
    ("-0", Raw(b"-0"), "invalid_quantity"),
    ("-1", -1, "invalid_quantity"),
    ("10^15", 10**15, "invalid_quantity"),
    ('"10^15"', "1000000000000000", "invalid_quantity"),
    ('"10^15.0"', "1000000000000000.0", "invalid_quantity"),
    ("2^63 - 1", 2**63 - 1, "invalid_quantity"),
    ("2^64 - 1", 2**64 - 1, "invalid_quantity"),
    ("2^64 (a float to orjson)", 2**64, "invalid_quantity"),
    ("10^30", 10**30, "invalid_quantity"),
    ("-2^63", -(2**63), "invalid_quantity"),
    ("1e400 (infinite as a double)", Raw(b"1e400"), "malformed_json"),
    ("1.5 (a float)", 1.5, "invalid_quantity"),
    ("1E-3", Raw(b"1E-3"), "invalid_quantity"),
    ('"1e3"', "1e3", "invalid_quantity"),
    ('"0.0000000001" (10 decimals)', "0.0000000001", "invalid_quantity"),
    ('"1.0000000000" (10 decimals)', "1.0000000000", "invalid_quantity"),
    ('"0"', "0", "invalid_quantity"),
    ('"0.000000000"', "0.000000000", "invalid_quantity"),
    ('"-1"', "-1", "invalid_quantity"),
    ('"+1"', "+1", "invalid_quantity"),
    ('" 1"', " 1", "invalid_quantity"),
    ('"1 "', "1 ", "invalid_quantity"),
    ('"1_000"', "1_000", "invalid_quantity"),
    ('".5"', ".5", "invalid_quantity"),
    ('"5."', "5.", "invalid_quantity"),
    ('"0x10"', "0x10", "invalid_quantity"),
    ('"NaN"', "NaN", "invalid_quantity"),
    ('"sNaN"', "sNaN", "invalid_quantity"),
    ('"Infinity"', "Infinity", "invalid_quantity"),
    ('"-Infinity"', "-Infinity", "invalid_quantity"),
    ("NaN literal", Raw(b"NaN"), "malformed_json"),
    ("Infinity literal", Raw(b"Infinity"), "malformed_json"),
    ("Arabic-Indic digits", "\u0661\u0662", "invalid_quantity"),
    ("full-width digits", "\uff11\uff12", "invalid_quantity"),
    ("escaped NUL after digits", "5\x00", "invalid_quantity"),
    ('""', "", "invalid_quantity"),
    ("a 100,000-digit string", "9" * 100_000, "invalid_quantity"),
    ("a 100,000-digit integer literal", Raw(b"9" * 100_000),
     frozenset({"invalid_quantity", "malformed_json"})),  # orjson: infinite as a double
    ("true", True, "invalid_quantity"),
    ("false", False, "invalid_quantity"),
    ("[]", [], "invalid_quantity"),
    ("{}", {}, "invalid_quantity"),
    ('{"$numberDecimal": "1"}', {"$numberDecimal": "1"}, "invalid_quantity"),
    ("null", None, "missing_field"),
]


def quantity_cases(sub: str) -> list[Case]:
    cases = [Case(f"valid: {label}", udoc(sub, f"qv{i}", quantity=q), APPLIED, Decimal(exact),
                  f"qv{i}") for i, (label, q, exact) in enumerate(VALID_QUANTITIES)]
    cases += [Case(label, udoc(sub, f"qb{i}", quantity=q), code)
              for i, (label, q, code) in enumerate(BAD_QUANTITIES)]
    return cases


def shape_cases(sub: str) -> list[Case]:
    good = udoc(sub, "w-bom")
    return [
        Case("empty value", b"", "malformed_json"),
        Case("whitespace only", b" \n\t ", "malformed_json"),
        Case("tombstone (null value)", None, frozenset({"not_an_object", "malformed_json"})),
        Case("null", b"null", "not_an_object"),
        Case("[]", b"[]", "not_an_object"),
        Case("[usage]", b"[" + good + b"]", "not_an_object"),
        Case("a number", b"12", "not_an_object"),
        Case("a string", b'"usage"', "not_an_object"),
        Case("true", b"true", "not_an_object"),
        Case("{}", b"{}", "missing_field"),
        Case("UTF-8 BOM before a valid object", b"\xef\xbb\xbf" + good, "malformed_json"),
        Case("UTF-16 encoding", udoc(sub, "w1").decode().encode("utf-16"), "malformed_json"),
        Case("trailing garbage", udoc(sub, "w2") + b"x", "malformed_json"),
        Case("two objects", udoc(sub, "w3") + udoc(sub, "w3b"), "malformed_json"),
        Case("a comment", b"/* c */" + udoc(sub, "w4"), "malformed_json"),
        Case("single quotes", udoc(sub, "w5").replace(b'"', b"'"), "malformed_json"),
        Case("trailing comma", udoc(sub, "w6")[:-1] + b",}", "malformed_json"),
        Case("truncated", udoc(sub, "w7")[:-5], "malformed_json"),
        Case("random bytes", bytes(random.Random(7).randrange(256) for _ in range(300)),
             "malformed_json"),
        Case("invalid UTF-8 only", b"\xff\xfe\xfa", "malformed_json"),
        Case("whitespace around a valid object", b" \r\n\t" + udoc(sub, "w8") + b"\n ",
             APPLIED, Decimal(1), "w8"),
        Case("unknown subscription", udoc("sub-nobody", "w9", subscription="sub-nobody"),
             "unknown_subscription"),
        Case("unknown metric", udoc(sub, "w10", metric="gpu-hours"), "unknown_metric"),
        Case("every field missing but id", obj([("id", "w11")]), "missing_field"),
    ]


def test_usage_text_nul_and_surrogates(engine: Engine) -> None:
    sub = "sub-text"
    subscribe(engine, sub)
    assert_clean(run_class(engine, "usage", "text", sub, text_cases(sub), usage_follower(sub)))


def test_usage_oversized_values_and_keys(engine: Engine) -> None:
    sub = "sub-size"
    subscribe(engine, sub)
    assert_clean(run_class(engine, "usage", "sizes", sub, size_cases(sub), usage_follower(sub)))


def test_usage_gzip_bomb_is_too_large(engine: Engine) -> None:
    """A 64 MB value that gzip makes 64 KB: the broker takes it, the engine reads it whole
    (kafka-python decompresses the batch) and refuses it by its size."""
    sub = "sub-bomb"
    subscribe(engine, sub)
    bomb = udoc(sub, "b1", pad="0" * (64 * 1000 * 1000))
    publisher = Publisher(engine, **{"compression.type": "gzip",
                                     "message.max.bytes": 100_000_000})
    cases = [Case("64 MB gzip bomb", bomb, "too_large")]
    assert_clean(run_class(engine, "usage", "gzip bomb", sub, cases, usage_follower(sub),
                           publisher))


def _log_summary(line: str) -> str:
    """A worker's JSON log line, its exception cut to the last line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    exception = (entry.get("exception") or "").strip().splitlines()
    return f"{entry.get('level')}: {entry.get('msg')}" + (f" [{exception[-1]}]" if exception
                                                         else "")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_usage_in_compressed_batches(engine: Engine, codec: str, tmp_path: Path) -> None:
    """A Kafka producer may compress its batches with any codec Kafka defines. The production
    worker (`billing run --only ingest`, in a process of its own so that a hang can be ended)
    must read them, or at least dead-letter what it cannot read and carry on."""
    sub = f"sub-{codec}"
    subscribe(engine, sub)
    cases = [Case("escaped NUL in id", udoc(sub, "c\x00"), "invalid_text"),
             Case("duplicate key", udoc(sub, "c2", after=[("id", "c3")]), "duplicate_key"),
             Case("valid", udoc(sub, "c1", quantity=7), APPLIED, Decimal(7), "c1")]
    messages = []
    for i, case in enumerate(cases):
        messages += [Msg(sub.encode(), case.value), Msg(sub.encode(), udoc(sub, f"ok-{i}"))]
    publisher = Publisher(engine, **{"compression.type": codec, "linger.ms": 50})
    topic = engine.settings.topics.usage
    positions = publisher.send(topic, messages)
    publisher.close()
    log_file = tmp_path / "worker.log"
    with log_file.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "run", "--only", "ingest", "--report-every",
             "1"], env=engine.subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2])
    monitor = Monitor(engine)
    started = time.monotonic()
    try:
        while not monitor.ingested(ends_of(positions)) and time.monotonic() - started < 15:
            time.sleep(0.1)
        seconds = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.kill()  # a worker thread that never returns does not let it stop
            worker.wait()
    log_lines = [_log_summary(line) for line in log_file.read_text(errors="replace").splitlines()]
    reader = DeadLetterReader(engine)
    letters = by_source(reader.read(2, timeout=3), topic)
    reader.close()
    keys = [(sub, "c1")] + [(sub, f"ok-{i}") for i in range(len(cases))]
    seen = engine.app.usage_ledger().seen_usage(keys)
    problems = []
    for i, case in enumerate(cases):
        got = [x.get("code") for x in letters.get(positions[2 * i], [])]
        if case.expect == APPLIED:
            if got or (sub, "c1") not in seen:
                problems.append(f"{case.name}: not applied (dead letters {got})")
        elif got != [case.expect]:
            problems.append(f"{case.name}: expected [{case.expect}], dead letters {got}")
        if (sub, f"ok-{i}") not in seen:
            problems.append(f"the valid message after {case.name!r} was not applied")
    total = store_totals(engine).get((sub, "tokens"), Decimal(0))
    if total != Decimal(3 + 7):
        problems.append(f"total {total} != 10")
    errors = [line for line in log_lines if "Error" in line or "failed" in line]
    outcome = "not all handled in 15 s" if problems else f"handled in {seconds:.2f}s"
    print(f"\n== usage in {codec} batches: {len(messages)} messages; {outcome}; "
          f"worker exit code {worker.returncode}")
    for line in errors[:6]:
        print(f"  worker: {line}")
    if problems:
        problems.append(f"the worker's log says: {errors[:4]}; it ended with exit code "
                        f"{worker.returncode} (-9: SIGTERM did not stop it in 5 s)")
    assert not problems, "\n  ".join(["", *problems])


@pytest.mark.parametrize(("label", "sub", "cases"), [
    ("duplicate keys", "sub-dup", duplicate_cases),
    ("nesting", "sub-deep", nesting_cases),
    ("timestamps", "sub-time", timestamp_cases),
    ("quantities", "sub-qty", quantity_cases),
    ("shapes", "sub-shape", shape_cases),
])
def test_usage_class(engine: Engine, label: str, sub: str,
                     cases: Callable[[str], list[Case]]) -> None:
    subscribe(engine, sub)
    assert_clean(run_class(engine, "usage", label, sub, cases(sub), usage_follower(sub)))


def test_usage_totals_past_28_digits_are_exact(engine: Engine) -> None:
    """10,050 events of 10^15 - 10^-9 each: a total of 29 significant digits, which Python's
    default decimal context (28 digits) would round."""
    sub = "sub-sum"
    subscribe(engine, sub)
    count = 10_050
    messages = [Msg(sub.encode(), udoc(sub, f"m{i}", quantity=MAX_QTY, at=AT))
                for i in range(count)]
    messages.append(Msg(sub.encode(), udoc(sub, "tiny", quantity="0.000000001")))
    with localcontext() as ctx:
        ctx.prec = 200
        expected = Decimal(MAX_QTY) * count + Decimal("0.000000001")
    assert len(expected.as_tuple().digits) > 28
    publisher = Publisher(engine)
    positions = publisher.send(engine.settings.topics.usage, messages)
    publisher.close()
    loop, ingestor = engine.ingestion()
    driver = Driver(engine, loop, engine.settings.topics.usage)
    seconds = driver.run(ends_of(positions), 60)
    print(f"\n== usage: {len(messages)} maximal quantities handled in {seconds}s; "
          f"{driver.describe()}; expected total {expected}")
    report = ClassReport("sum past 28 digits")
    if seconds is None:
        report.problems.append(f"not ingested within 60 s: {driver.describe()}")
    if driver.escaped:
        report.problems.append(f"exception escaped poll_once:\n{driver.escaped[0]}")
    if ingestor.stats.dead_lettered:
        report.problems.append(f"dead-lettered: {ingestor.stats.by_code}")
    _check_totals(engine, report, {(sub, "tokens"): expected})
    assert_clean(report)


# --- commands ---------------------------------------------------------------------------------

def command_cases(sub: str) -> list[Case]:
    key = sub.encode()
    n = 0

    def cid() -> str:
        nonlocal n
        n += 1
        return f"h{n}"

    def customer(value: Any, kind: str = "update_customer") -> bytes:
        return cdoc(sub, cid(), type=kind, name=DROP, value=DROP, customer=value)

    cases = [
        Case("id: escaped NUL", cdoc(sub, "h\x00id"), "invalid_text"),
        Case("type: escaped NUL", cdoc(sub, cid(), type="report_count\x00"), "invalid_text"),
        Case("subscription: escaped NUL", cdoc(sub, cid(), subscription=sub + "\x00"),
             "invalid_text"),
        Case("at: escaped NUL", cdoc(sub, cid(), at=AT + "\x00"), "invalid_text"),
        Case("name (a field): escaped NUL", cdoc(sub, cid(), name="assist\x00ants"),
             "invalid_text"),
        Case("a key: escaped NUL", cdoc(sub, cid(), after=[("x\x00", 1)]), "invalid_text"),
        Case("customer.name: escaped NUL", customer({"name": "Acme\x00"}), "invalid_text"),
        Case("customer.address: NUL deep in a list",
             customer({"address": {"lines": ["a", ["b", "\x00"]]}}), "invalid_text"),
        Case("customer: a key with NUL", customer({"na\x00me": "Acme"}), "invalid_text"),
        Case("subscribe: customer.name with NUL",
             cdoc("sub-new", cid(), type="subscribe", name=DROP, value=DROP, plan="basic",
                  customer={"name": "\x00"}), "invalid_text", key=b"sub-new"),
        Case("id: escaped lone surrogate", cdoc(sub, "h\ud800"), "malformed_json"),
        Case("customer.name: escaped lone surrogate", customer({"name": "\udfff"}),
             "malformed_json"),
        Case("customer.name: raw surrogate bytes", customer(Raw(b'{"name":"\xed\xb0\x80"}')),
             "malformed_json"),
        Case("type: raw invalid UTF-8", cdoc(sub, cid(), type=Raw(b'"\xc3\x28"')),
             "malformed_json"),
        Case("2 MB command", cdoc(sub, cid(), pad="p" * 2_000_000), "too_large"),
        Case("5 MB command", cdoc(sub, cid(), pad="p" * 5_000_000), "too_large"),
        Case("1.5 MiB key", cdoc(sub, cid()), "too_large", key=key + b"k" * (3 * MIB // 2)),
        Case("id twice", cdoc(sub, "hdup", after=[("id", "hdup2")]), "duplicate_key"),
        Case("type twice", cdoc(sub, cid(), after=[("type", "cancel")]), "duplicate_key"),
        Case("value (a field) twice", cdoc(sub, cid(), after=[("value", 99)]),
             "duplicate_key"),
        Case('id again as "\\u0069d"', cdoc(sub, cid(), after=[(Raw(b'"\\u0069d"'), "z")]),
             "duplicate_key"),
        Case("customer: a key twice", customer(Raw(b'{"name":"a","name":"b"}')),
             "duplicate_key"),
        Case("a key twice in an object in a list",
             cdoc(sub, cid(), extra=Raw(b'[{"a":1},{"b":1,"b":2}]')), "duplicate_key"),
        Case("customer nested 40 levels", customer(nested_objects(40)), "too_deep"),
        Case("an extra field nested 1,100 levels", cdoc(sub, cid(), deep=nested(1100)),
             "malformed_json"),
        Case("type twice, then 1,000 levels of nesting",
             cdoc(sub, cid(), after=[("type", "cancel"), ("deep", nested(1000))]),
             "too_deep"),
        Case("an extra field nested 10 levels (ignored)",
             cdoc(sub, "hx1", value=1001, junk=nested(10)), APPLIED, ledger_id="hx1",
             events=1),
        *(Case(f"at: {label}", cdoc(sub, cid(), at=at), "invalid_timestamp")
          for label, at in BAD_TIMES if label in {
              "ISO week date", "basic format", "offset with seconds", "comma fraction",
              "space separator", "hour 24", "leap second", "no offset",
              "10 fraction digits", "65 characters", "epoch seconds (a number)",
              "full-width digits", "February 30"}),
        Case("at: null", cdoc(sub, cid(), at=None), "missing_field"),
        Case("at: year 9999", cdoc(sub, cid(), at="9999-12-31T23:59:59Z"),
             "time_too_far_ahead"),
        Case("at: before the open cycle", cdoc(sub, cid(), at="2026-10-01T00:00:00Z"),
             "stale_command"),
        Case("unknown type", cdoc(sub, cid(), type="drop_tables"), "unknown_command"),
        Case("type __init__", cdoc(sub, cid(), type="__init__"), "unknown_command"),
        Case("unknown subscription", cdoc("sub-nobody", cid(), subscription="sub-nobody"),
             "unknown_subscription", key=b"sub-nobody"),
        Case("value -1", cdoc(sub, "hneg", value=-1), "invalid_quantity"),
        Case("the same refused command again (a duplicate: no second letter)",
             cdoc(sub, "hneg", value=-1), APPLIED),
        Case("value 1.5", cdoc(sub, cid(), value=1.5), "invalid_field"),
        Case('value "7"', cdoc(sub, cid(), value="7"), "invalid_field"),
        Case("value 10^30", cdoc(sub, cid(), value=10**30), "invalid_field"),
        Case("value true", cdoc(sub, cid(), value=True), "invalid_field"),
        Case("a tombstone", None, frozenset({"not_an_object", "malformed_json"})),
        Case("an array", b"[]", "not_an_object"),
    ]
    return cases


def test_commands_hostile_then_valid(engine: Engine) -> None:
    sub = "sub-cmd"
    subscribe(engine, sub)
    cases = command_cases(sub)
    assert_clean(run_class(engine, "commands", "commands", sub, cases, command_follower(sub)))


WRAPPERS = [
    ("update_customer", {"name": {"_type_": "datetime_iso", "_data_": "not a time"}}),
    ("update_customer", {"address": {"_type_": "no_such_type", "_data_": 1}}),
    ("update_customer", {"vat_id": {"_type_": "decimal_str", "_data_": "x"}}),
    ("subscribe", {"email": {"_type_": "datetime_iso", "_data_": "garbage"}}),
]


def test_customer_values_shaped_like_the_stores_type_wrapper(engine: Engine) -> None:
    """Customer fields take any JSON value. One shaped like the event store's own transcoding
    wrapper ({"_type_", "_data_"}) must be refused, or stored so that it reads back: an event
    that cannot be read back makes its subscription unloadable for every worker that loads it
    afresh (after a restart, another process, a cache eviction)."""
    subs = [f"sub-wrap-{i}" for i in range(len(WRAPPERS))]
    subscribe(engine, *[s for s, (kind, _) in zip(subs, WRAPPERS, strict=True)
                        if kind != "subscribe"])
    messages = []
    for sub, (kind, customer) in zip(subs, WRAPPERS, strict=True):
        fields: dict[str, Any] = {"type": kind, "name": DROP, "value": DROP,
                                  "customer": customer}
        if kind == "subscribe":
            fields["plan"] = "basic"
        messages += [Msg(sub.encode(), cdoc(sub, "wrap", **fields)),
                     Msg(sub.encode(), cdoc(sub, "after", value=5))]
    publisher = Publisher(engine)
    topic = engine.settings.topics.commands
    positions = publisher.send(topic, messages)
    loop, _ = engine.commands()
    driver = Driver(engine, loop, topic)
    driver.run(ends_of(positions), CLASS_SECONDS)
    # A restarted command worker and an ingester (fresh applications: nothing cached) take
    # one more valid command and one valid usage event for each subscription.
    later = [Msg(sub.encode(), cdoc(sub, "restart", value=6)) for sub in subs]
    later_positions = publisher.send(topic, later)
    usage = [Msg(sub.encode(), udoc(sub, "u1", quantity=3)) for sub in subs]
    usage_positions = publisher.send(engine.settings.topics.usage, usage)
    publisher.close()
    restarted, _ = engine.commands()
    Driver(engine, restarted, topic).run(ends_of(later_positions), CLASS_SECONDS)
    ingest, _ = engine.ingestion()
    Driver(engine, ingest, engine.settings.topics.usage).run(ends_of(usage_positions),
                                                             CLASS_SECONDS)
    reader = DeadLetterReader(engine)
    letters = reader.read(0, quiet=1.5)
    reader.close()
    seen = engine.app.usage_ledger().seen_usage(
        [(s, k) for s in subs for k in ("cmd:wrap", "cmd:after", "cmd:restart", "u1")])
    problems = []
    print("\n== customer values shaped like the store's type wrapper")
    for sub, (kind, customer) in zip(subs, WRAPPERS, strict=True):
        own = [x for x in letters if x.get("key") == sub]
        codes = {(x["topic"].rsplit(".", 1)[-1], x.get("code")) for x in own}
        if kind == "subscribe" and ("commands", "reserved_key") in codes:
            # Refused: the subscription was never created, so what follows is refused too.
            print(f"  {kind} {customer}: refused as reserved_key; dead letters {sorted(codes)}")
            if (sub, "cmd:wrap") in seen or codes - {
                    ("commands", "reserved_key"), ("commands", "unknown_subscription"),
                    ("usage", "unknown_subscription")}:
                problems.append(f"{kind} {customer}: {sorted(codes)}")
            continue
        try:
            state = engine.app.load_as_stored(sub)
            loaded = f"loads (version {state.version}, counts {state.counts})"
        except Exception as e:
            loaded = f"does not load: {type(e).__name__}: ...{str(e)[-110:]}"
            problems.append(f"{kind} {customer}: {sub} {loaded}")
        missing = [k for k in ("cmd:after", "cmd:restart", "u1") if (sub, k) not in seen]
        print(f"  {kind} {customer}: wrap {'applied' if (sub, 'cmd:wrap') in seen else 'no'};"
              f" {sub} {loaded}; dead letters {sorted(codes)}")
        if missing:
            problems.append(f"{kind} {customer}: the valid messages after it not applied: "
                            f"{missing}; dead letters {sorted(codes)}")
        bad = {code for _, code in codes if code == "unprocessable"}
        if bad:
            problems.append(f"{kind} {customer}: valid messages dead-lettered as unprocessable")
    assert not problems, "\n  ".join(["", *problems])


# --- fuzz -------------------------------------------------------------------------------------

FUZZ_SUBS = [f"sub-fz-{i}" for i in range(6)]
CHAOS_SUB = "chaos-A"  # byte-level mutations: nothing else uses it, nothing resembles it
FUZZ_COUNT = 10_000
UTC_START = datetime(2026, 11, 2, tzinfo=UTC)
CYCLE_START, CYCLE_END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
USAGE_CODES = {"malformed_json", "not_an_object", "missing_field", "invalid_field",
               "invalid_text", "invalid_quantity", "invalid_timestamp", "unknown_subscription",
               "unknown_metric", "too_late", "time_too_far_ahead", "duplicate_key",
               "too_large", "too_deep", "unprocessable", "undecodable_batch"}


@dataclass
class Fuzzed:
    kind: str
    key: bytes
    value: bytes
    expect: str  # a code, APPLIED, "duplicate" or "either"
    sub: str = ""
    uid: str = ""
    metric: str = ""
    qty: Decimal = Decimal(0)


def storable_text(rng: random.Random, limit: int = 40) -> str:
    """Random text PostgreSQL can store: ASCII, controls (not NUL), BMP, astral."""
    pools = [(0x20, 0x7E), (0x01, 0x1F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF),
             (0x10000, 0x10FFFF)]
    out = []
    for _ in range(rng.randint(1, limit)):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def random_valid_time(rng: random.Random) -> str:
    instant = UTC_START + timedelta(seconds=rng.randrange(27 * 86400))
    minutes = rng.choice([0, 0, 0, rng.randrange(-12 * 60, 14 * 60 + 1),
                          15 * rng.randrange(-48, 57)])
    local = instant + timedelta(minutes=minutes)
    digits = rng.choice([0, 0, 1, 3, 6, 9, rng.randint(1, 9)])
    fraction = ("." + "".join(rng.choice("0123456789") for _ in range(digits))) if digits else ""
    if minutes == 0 and rng.random() < 0.6:
        offset = rng.choice("Zz")
    else:
        sign = "-" if minutes < 0 else "+"
        offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    sep = rng.choice("TTTt")
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + offset


def random_quantity(rng: random.Random) -> tuple[Any, Decimal]:
    roll = rng.random()
    if roll < 0.5:
        q = rng.randint(1, 10**6)
        return q, Decimal(q)
    if roll < 0.8:
        whole = rng.randrange(0, 10**rng.randint(1, 15))
        places = rng.randint(1, 9)
        frac = rng.randrange(1, 10**places)
        text = f"{whole}.{frac:0{places}d}"
        return text, Decimal(text)
    if roll < 0.9:
        return MAX_QTY, Decimal(MAX_QTY)
    q = rng.randint(10**14, 10**15 - 1)
    return (q, Decimal(q)) if rng.random() < 0.5 else (str(q), Decimal(q))


def random_junk(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return rng.choice([None, True, False, rng.randint(-(2**63), 2**64 - 1),
                           rng.random() * 1e300, storable_text(rng), "\x00"])
    if roll < 0.65:
        return [random_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {storable_text(rng, 8): random_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def fuzz_messages(seed: int, count: int) -> list[Fuzzed]:
    rng = random.Random(seed)
    out: list[Fuzzed] = []
    valid_sent: list[Fuzzed] = []
    n = 0

    def base_fields(sub: str, uid: str) -> dict[str, Any]:
        q, _ = random_quantity(rng)
        fields: dict[str, Any] = {"id": uid, "subscription": sub,
                                  "metric": rng.choice(["tokens", "conversations"]),
                                  "quantity": q, "at": random_valid_time(rng)}
        return fields

    def dump(fields: dict[str, Any], after: Iterable[tuple[Any, Any]] = ()) -> bytes:
        pairs = list(fields.items())
        rng.shuffle(pairs)
        if rng.random() < 0.2:  # other whitespace
            return obj([*pairs, *after], rng.choice([b" : ", b":\n ", b"\t:"]),
                       rng.choice([b" ,\t", b"\r\n,", b", "]))
        return obj([*pairs, *after])

    bad_quantities = [q for _, q, code in BAD_QUANTITIES if code == "invalid_quantity"
                      and not (isinstance(q, str) and len(q) > 1000)
                      and not (isinstance(q, Raw) and len(q) > 1000)]
    bad_times = [t for _, t in BAD_TIMES if not (isinstance(t, str) and len(t) > 1000)]
    while len(out) < count:
        n += 1
        sub = rng.choice(FUZZ_SUBS)
        key = sub.encode()
        roll = rng.random()
        if roll < 0.36 or (roll < 0.39 and not valid_sent):
            uid = f"ok-{n}" if rng.random() < 0.7 else f"ok-{n}-{storable_text(rng, 60)}"
            fields = base_fields(sub, uid)
            q, qty = random_quantity(rng)
            fields["quantity"] = q
            if rng.random() < 0.3:
                fields["member"] = storable_text(rng, 30)
            if rng.random() < 0.2:
                fields["workspace"] = storable_text(rng, 30)
            after = []
            if rng.random() < 0.2:
                after.append((f"x-{storable_text(rng, 5)}", random_junk(rng)))
            depth = rng.randint(1, 200) if rng.random() < 0.03 else 0
            if depth:
                after.append(("deep", nested(depth)))
            if depth > 63:  # 64 levels at most, the message's own object included
                out.append(Fuzzed("valid but too deep", key, dump(fields, after), "too_deep"))
                continue
            f = Fuzzed("valid", key, dump(fields, after), APPLIED, sub, uid, fields["metric"],
                       qty)
            valid_sent.append(f)
            out.append(f)
        elif roll < 0.39:
            original = rng.choice(valid_sent)
            out.append(Fuzzed("replay", original.key, original.value, "duplicate",
                              original.sub, original.uid, original.metric, original.qty))
        elif roll < 0.44:
            fields = base_fields(sub, f"hz-{n}")
            name = rng.choice(["id", "subscription", "metric", "quantity", "at"])
            if rng.random() < 0.5:
                del fields[name]
            else:
                fields[name] = None
            out.append(Fuzzed("missing field", key, dump(fields), "missing_field"))
        elif roll < 0.52:
            fields = base_fields(sub, f"hz-{n}")
            name = rng.choice(["id", "subscription", "metric", "member", "workspace",
                               "quantity", "at"])
            swap = rng.choice([0, 17, -3, 1.5, True, False, [], [name], {}, {"v": 1}, ""])
            if name == "quantity" and isinstance(swap, int) and not isinstance(swap, bool) \
                    and swap > 0:
                swap = -swap
            if name in ("quantity", "at") and swap == "":
                swap = []
            fields[name] = swap
            code = {"quantity": "invalid_quantity", "at": "invalid_timestamp"}.get(
                name, "invalid_field")
            out.append(Fuzzed(f"type swap: {name}", key, dump(fields), code))
        elif roll < 0.60:
            fields = base_fields(sub, f"hz-{n}")
            name = rng.choice(["id", "subscription", "metric", "member", "workspace"])
            current = fields.get(name) or storable_text(rng, 10)
            where = rng.randint(0, len(current))
            how = rng.choice(["nul", "surrogate", "raw surrogate", "raw control", "long"])
            if how == "nul":
                fields[name] = current[:where] + "\x00" + current[where:]
                code = "invalid_text"
            elif how == "surrogate":
                fields[name] = current[:where] + chr(rng.randint(0xD800, 0xDFFF)) \
                    + current[where:]
                code = "malformed_json"
            elif how == "raw surrogate":
                fields[name] = Raw(jtext(current)[:-1] + rng.choice(
                    [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\x80"]) + b'"')
                code = "malformed_json"
            elif how == "raw control":
                fields[name] = Raw(jtext(current)[:-1] + bytes([rng.randint(0, 0x1F)]) + b'"')
                code = "malformed_json"
            else:
                fields[name] = storable_text(rng, 5) * 60 + "x" * 257
                code = "invalid_field"
            out.append(Fuzzed(f"text: {how} in {name}", key, dump(fields), code))
        elif roll < 0.67:
            fields = base_fields(sub, f"hz-{n}")
            q = rng.choice(bad_quantities)
            if rng.random() < 0.3:
                q = rng.choice([10**rng.randint(15, 40), -rng.randint(1, 10**20),
                                f"{rng.randint(10**15, 10**30)}",
                                f"1.{'0' * rng.randint(10, 30)}1"])
            fields["quantity"] = q
            out.append(Fuzzed("quantity", key, dump(fields), "invalid_quantity"))
        elif roll < 0.75:
            fields = base_fields(sub, f"hz-{n}")
            if rng.random() < 0.8:
                fields["at"] = rng.choice(bad_times)
                code = "invalid_timestamp"
            else:
                _, fields["at"], code = rng.choice(DOMAIN_TIMES)
            out.append(Fuzzed("timestamp", key, dump(fields), code))
        elif roll < 0.80:
            fields = base_fields(sub, f"hz-{n}")
            name = rng.choice(["id", "subscription", "metric", "quantity", "at", "note"])
            if name == "note":
                fields["note"] = rng.choice([1, "s", None, True, 2.5, "", storable_text(rng)])
            escaped = rng.random() < 0.4
            dup_key: Any = Raw(b'"\\u%04x' % ord(name[0]) + name[1:].encode() + b'"') \
                if escaped else name
            again = rng.choice([fields[name], 7, "t", None, False, [], {}])
            if rng.random() < 0.2:  # the duplicate inside an extra object instead
                fields.pop("note", None)
                inner = [("k", rng.choice([1, "v", None])), ("k", again)]
                out.append(Fuzzed("duplicate key (nested)", key,
                                  dump(fields, [("meta", Raw(obj(inner)))]), "duplicate_key"))
            else:
                out.append(Fuzzed("duplicate key", key, dump(fields, [(dup_key, again)]),
                                  "duplicate_key"))
        elif roll < 0.83:
            shape = rng.choice([b"null", b"[]", b"1", b'"x"', b"true", b"[{}]"])
            out.append(Fuzzed("not an object", key, shape, "not_an_object"))
        elif roll < 0.85:
            fields = base_fields(sub, f"hz-{n}")
            if rng.random() < 0.5:
                fields["subscription"] = f"sub-nobody-{n}"
                out.append(Fuzzed("unknown subscription", f"sub-nobody-{n}".encode(),
                                  dump(fields), "unknown_subscription"))
            else:
                fields["metric"] = f"metric-{storable_text(rng, 10)}"
                out.append(Fuzzed("unknown metric", key, dump(fields), "unknown_metric"))
        elif roll < 0.87:
            fields = base_fields(sub, f"hz-{n}")
            depth = rng.randint(1100, 20_000)
            out.append(Fuzzed("deep nesting", key, dump(fields, [("deep", nested(depth))]),
                              "malformed_json"))
        elif roll < 0.872:
            fields = base_fields(sub, f"hz-{n}")
            out.append(Fuzzed("too large", key,
                              dump(fields, [("pad", "p" * rng.randint(MIB, MIB + 200_000))]),
                              "too_large"))
        else:
            # Byte-level chaos on a documents message of the chaos subscription: any outcome
            # is fine as long as there is exactly one.
            uid = f"cz-{n:06d}-{rng.getrandbits(32):08x}"
            fields = {"id": uid, "subscription": CHAOS_SUB, "metric": "documents",
                      "quantity": rng.randint(1, 1000), "at": random_valid_time(rng)}
            raw = bytearray(dump(fields))
            how = rng.choice(["flip", "truncate", "insert", "garbage", "delete"])
            if how == "flip":
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            elif how == "truncate":
                raw = raw[:rng.randrange(len(raw))]
            elif how == "insert":
                at = rng.randrange(len(raw) + 1)
                raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif how == "delete":
                at = rng.randrange(len(raw))
                del raw[at:at + rng.randint(1, 6)]
            else:
                raw = bytearray(rng.randbytes(rng.randint(0, 200)))
            out.append(Fuzzed(f"chaos: {how}", CHAOS_SUB.encode(), bytes(raw), "either"))
    return out


def _nesting(value: object) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _as_usage(value: bytes) -> tuple[str, str, str, Decimal] | None:
    """(subscription, id, metric, quantity) of a message that was applied, read with Python's
    own json module (not the engine's parser)."""
    try:
        raw = json.loads(value.decode("utf-8"))
        if _nesting(raw) > 64:
            return None  # refused as too_deep
        sub, uid, metric = raw["subscription"], raw["id"], raw["metric"]
        if not all(isinstance(text, str) and "\x00" not in text
                   and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
                   for text in (sub, uid, metric)):
            return None  # not a key the ledger can hold
        return sub, uid, metric, Decimal(raw["quantity"])
    except Exception:
        return None


def test_fuzzed_usage(engine: Engine) -> None:
    seed = int(os.environ.get("HOSTILE_FUZZ_SEED", "20261102"))
    count = int(os.environ.get("HOSTILE_FUZZ_COUNT", str(FUZZ_COUNT)))
    subscribe(engine, *FUZZ_SUBS, CHAOS_SUB)
    messages = fuzz_messages(seed, count)
    # The classes above ride along, each through the same worker.
    for make in (text_cases, duplicate_cases, nesting_cases, timestamp_cases, quantity_cases):
        for case in make(FUZZ_SUBS[0]):
            if case.either or case.key is not ... or case.headers or case.timestamp \
                    or case.value is None:
                continue
            expect = case.expect if isinstance(case.expect, str) else "either"
            uid = case.ledger_id or ""
            messages.append(Fuzzed(f"class: {case.name}", FUZZ_SUBS[0].encode(), case.value,
                                   expect, FUZZ_SUBS[0], uid, "tokens", case.qty))
    random.Random(seed + 1).shuffle(messages)
    topic = engine.settings.topics.usage
    started = time.monotonic()
    publisher = Publisher(engine)
    positions = publisher.send(topic, [Msg(m.key, m.value) for m in messages])
    publisher.close()
    published_in = time.monotonic() - started
    loop, ingestor = engine.ingestion()
    driver = Driver(engine, loop, topic)
    seconds = driver.run(ends_of(positions), 90)
    problems: list[str] = []
    if seconds is None:
        problems.append(f"not all handled within 90 s: {driver.describe()}")
    expected_dead = sum(1 for m in messages if m.expect not in (APPLIED, "duplicate", "either"))
    reader = DeadLetterReader(engine)
    letters = by_source(reader.read(expected_dead, timeout=60, quiet=1.5), topic)
    reader.close()
    keys = {(m.sub, m.uid) for m in messages if m.uid}
    for m in messages:
        if not m.uid:
            parsed = _as_usage(m.value)
            if parsed:
                keys.add((parsed[0], parsed[1]))
    seen = engine.app.usage_ledger().seen_usage(sorted(keys))

    expected_totals: dict[tuple[str, str], Decimal] = {}
    applied = duplicates = dead = 0
    by_kind: dict[str, Counter[str]] = {}
    codes: Counter[str] = Counter()
    first_seen: set[tuple[str, str]] = set()
    chaos_rolled = False
    order = sorted(range(len(messages)), key=lambda i: positions[i])
    for i in order:
        m, pos = messages[i], positions[i]
        got = letters.get(pos, [])
        for letter in got:
            codes[str(letter.get("code"))] += 1
            for problem in check_letter(letter, m.value):
                problems.append(f"{m.kind} @{pos}: dead letter: {problem}")
        outcome = str(got[0].get("code")) if len(got) == 1 else (
            "no letter" if not got else f"{len(got)} letters")
        by_kind.setdefault(m.kind if not m.kind.startswith("class") else "class cases",
                           Counter())[outcome] += 1
        if len(got) > 1:
            problems.append(f"{m.kind} @{pos}: dead-lettered {len(got)} times")
        if got:
            dead += 1
            code = got[0].get("code")
            if not code or code not in USAGE_CODES:
                problems.append(f"{m.kind} @{pos}: unexpected code {code!r}")
            if m.expect in (APPLIED, "duplicate"):
                problems.append(f"{m.kind} @{pos}: expected {m.expect}, dead-lettered {code}: "
                                f"{got[0].get('error')!r}; value {m.value[:200]!r}")
            elif m.expect != "either" and code != m.expect:
                problems.append(f"{m.kind} @{pos}: expected {m.expect}, got {code}: "
                                f"{got[0].get('error')!r}; value {m.value[:200]!r}")
            continue
        # Not dead-lettered: applied, or a duplicate of an applied one.
        if m.expect not in (APPLIED, "duplicate", "either"):
            parsed = _as_usage(m.value)
            applied_anyway = parsed is not None and (parsed[0], parsed[1]) in seen
            problems.append(f"{m.kind} @{pos}: expected {m.expect}, not dead-lettered"
                            f"{' but applied' if applied_anyway else ''}; "
                            f"value {m.value[:200]!r}")
            if applied_anyway and parsed and (parsed[0], parsed[1]) not in first_seen:
                first_seen.add((parsed[0], parsed[1]))
                applied += 1  # its effect is not in the expected totals: they will differ
            continue
        if m.expect == "either":
            parsed = _as_usage(m.value)
            if parsed is None or (parsed[0], parsed[1]) not in seen:
                problems.append(f"{m.kind} @{pos}: neither applied nor dead-lettered: "
                                f"{m.value[:200]!r}")
                continue
            sub, uid, metric, qty = parsed
            try:
                at = datetime.fromisoformat(
                    json.loads(m.value)["at"].upper().replace("Z", "+00:00"))
                chaos_rolled |= not CYCLE_START <= at < CYCLE_END
            except Exception:
                chaos_rolled = True
        else:
            sub, uid, metric, qty = m.sub, m.uid, m.metric, m.qty
            if (sub, uid) not in seen:
                problems.append(f"{m.kind} @{pos}: not applied (not in the ledger)")
                continue
        if (sub, uid) in first_seen:  # a replay may come before its original
            duplicates += 1
            continue
        first_seen.add((sub, uid))
        applied += 1
        expected_totals[(sub, metric)] = expected_totals.get((sub, metric), Decimal(0)) + qty

    if driver.escaped:
        problems.append(f"{len(driver.escaped)} exception(s) escaped poll_once; the first:\n"
                        f"{driver.escaped[0]}")
    if applied + dead + duplicates != len(messages):
        problems.append(f"applied {applied} + dead-lettered {dead} + duplicates {duplicates} "
                        f"!= published {len(messages)}")
    stats = ingestor.stats
    if (stats.accepted, stats.duplicates, stats.dead_lettered) != (applied, duplicates, dead):
        problems.append(f"the ingester counted accepted={stats.accepted} "
                        f"duplicates={stats.duplicates} dead_lettered={stats.dead_lettered}")
    stored = store_totals(engine)
    for sub in FUZZ_SUBS + ([] if chaos_rolled else [CHAOS_SUB]):
        for metric in ("tokens", "conversations", "documents"):
            want = expected_totals.get((sub, metric), Decimal(0))
            if stored.get((sub, metric), Decimal(0)) != want:
                problems.append(f"event store total {(sub, metric)}: "
                                f"{stored.get((sub, metric))} != {want}")
    relay_all(engine)
    project_all(engine)
    projected = quota_used(engine.database_url)
    for sub in FUZZ_SUBS + ([] if chaos_rolled else [CHAOS_SUB]):
        for metric in ("tokens", "conversations", "documents"):
            want = expected_totals.get((sub, metric), Decimal(0))
            if projected.get((sub, metric), Decimal(0)) != want:
                problems.append(f"quota read model total {(sub, metric)}: "
                                f"{projected.get((sub, metric))} != {want}")

    print(f"\n== fuzzed usage: seed {seed}, {len(messages)} messages published in "
          f"{published_in:.1f}s, handled in {seconds if seconds is None else round(seconds, 1)}s"
          f"; {driver.describe()}")
    print(f"  applied {applied}, dead-lettered {dead}, duplicates {duplicates} "
          f"(sum {applied + dead + duplicates}, published {len(messages)})")
    print(f"  ingester stats: accepted {stats.accepted}, duplicates {stats.duplicates}, "
          f"dead-lettered {stats.dead_lettered}")
    print("  dead letters per code:")
    for code, number in sorted(codes.items(), key=lambda kv: -kv[1]):
        print(f"    {code:<22} {number}")
    print("  outcome per kind of message:")
    for kind, outcomes in sorted(by_kind.items()):
        print(f"    {kind:<32} {dict(sorted(outcomes.items()))}")
    if chaos_rolled:
        print("  (a chaos message moved its subscription's cycle: its totals are not compared)")
    for sub in FUZZ_SUBS:
        print(f"  {sub}: tokens {expected_totals.get((sub, 'tokens'), 0)}, conversations "
              f"{expected_totals.get((sub, 'conversations'), 0)}")
    assert not problems, f"{len(problems)} problem(s):\n  " + "\n  ".join(problems[:60])
