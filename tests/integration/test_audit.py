"""Tamper evidence: rows edited, deleted, inserted or reordered directly in PostgreSQL are
named by `verify`; a clean store verifies with a count and the final anchor."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from domain.contracts.usage import UsageItem
from infra.eventstore.recorder import open_application
from infra.ops.audit import verify
from infra.wiring.engine import Engine
from tests.integration.helpers import T0, subscribe

pytestmark = pytest.mark.integration


def history(engine: Engine) -> None:
    subscribe(engine, "sub-a", "sub-b")
    for n in range(6):
        for sid in ("sub-a", "sub-b"):
            sub = engine.app.get(sid)
            sub.record_usage([UsageItem(f"{sid}-{n}", sid, "tokens", Decimal(n + 1),
                                        T0 + timedelta(hours=n))])
            engine.app.save_batch([sub], None)


def findings(engine: Engine) -> list[tuple[str, int, str]]:
    with psycopg.connect(engine.database_url) as conn:
        return [(f.subscription, f.version, f.kind) for f in verify(conn).findings]


def test_a_clean_store_verifies_with_a_count_and_the_final_anchor(engine: Engine) -> None:
    history(engine)
    with psycopg.connect(engine.database_url) as conn:
        report = verify(conn)
    assert report.clean, report.findings
    assert report.events == 2 * 7 + 3  # two subscriptions x 7 events, the catalog streams 3
    assert report.anchors >= 13 and len(report.final_anchor) == 64


def test_edited_deleted_inserted_and_reordered_rows_are_each_named(engine: Engine) -> None:
    history(engine)
    with psycopg.connect(engine.database_url) as conn:
        # edited: a quantity changed in place
        edited = conn.execute(
            "UPDATE billing_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"quantity\":\"3\"', '\"quantity\":\"300\"'), 'UTF8') "
            "WHERE originator_id = 'sub-a' AND originator_version = 4 "
            "AND convert_from(state, 'UTF8') LIKE '%\"quantity\":\"3\"%'")
        assert edited.rowcount == 1
        # deleted: an event removed
        conn.execute("DELETE FROM billing_events WHERE originator_id = 'sub-b' "
                     "AND originator_version = 3")
        # inserted: a forged event appended
        conn.execute("INSERT INTO billing_events (originator_id, originator_version, topic, "
                     "state) SELECT originator_id, 8, topic, state FROM billing_events "
                     "WHERE originator_id = 'sub-a' AND originator_version = 7")
        # reordered: two events swapped
        conn.execute("UPDATE billing_events e SET state = o.state FROM billing_events o "
                     "WHERE e.originator_id = 'sub-b' AND o.originator_id = 'sub-b' AND "
                     "((e.originator_version = 5 AND o.originator_version = 6) OR "
                     "(e.originator_version = 6 AND o.originator_version = 5))")
    found = findings(engine)
    assert ("sub-a", 4, "edited") in found
    assert ("sub-b", 3, "deleted") in found
    assert ("sub-a", 8, "inserted") in found
    assert ("sub-b", 5, "reordered") in found and ("sub-b", 6, "reordered") in found
    assert {kind for _, _, kind in found} <= {"edited", "deleted", "inserted", "reordered"}


def test_rewriting_the_recorded_hashes_too_breaks_the_anchors(engine: Engine) -> None:
    history(engine)
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("UPDATE event_hashes SET hash = sha256(hash) WHERE originator_id = 'sub-a' "
                     "AND originator_version = 2")
    found = findings(engine)
    assert any(kind == "anchor_mismatch" for _, _, kind in found)
    assert ("sub-a", 3, "chain_broken") in found


def test_writers_taking_turns_on_a_stream_chain_on_each_others_events(engine: Engine) -> None:
    """Each process remembers the last hash it wrote on a stream; after another process has
    written there since, it reads the newer hash instead."""
    subscribe(engine, "sub-a")
    other = open_application(engine.database_url, engine.app.catalog)
    try:
        for n in range(6):
            app = (engine.app, other)[n // 2 % 2]  # two writes each, in turns
            app.revalidate({"sub-a"})  # the other one may have written since
            sub = app.get("sub-a")
            sub.record_usage([UsageItem(f"u-{n}", "sub-a", "tokens", Decimal(1),
                                        T0 + timedelta(hours=n))])
            app.save_batch([sub], None)
    finally:
        other.close()
    with psycopg.connect(engine.database_url) as conn:
        report = verify(conn)
    assert report.clean, report.findings
    assert report.events == 7 + 3


def _superuser_rewrite(conn: psycopg.Connection, sid: str, version: int,
                       old: str, new: str) -> None:
    """What a database superuser can do: edit an event, then recompute its hashes, every later
    event's chain on that stream, and every anchor from the first one it touches, so that the
    database agrees with itself."""
    import hashlib

    from infra.eventstore.recorder import ZERO_HASH, content_hash, event_hash

    conn.execute("UPDATE billing_events SET state = convert_to(replace(convert_from(state, "
                 "'UTF8'), %s, %s), 'UTF8') WHERE originator_id = %s AND "
                 "originator_version = %s", (old, new, sid, version))
    prev = ZERO_HASH
    for v, topic, state in conn.execute(
            "SELECT originator_version, topic, state FROM billing_events WHERE originator_id "
            "= %s ORDER BY originator_version", (sid,)).fetchall():
        content = content_hash(topic, bytes(state))
        digest = event_hash(prev, sid, v, content)
        conn.execute("UPDATE event_hashes SET content_hash = %s, hash = %s WHERE "
                     "originator_id = %s AND originator_version = %s", (content, digest, sid, v))
        prev = digest
    prev = ZERO_HASH
    for anchor_id, in conn.execute("SELECT id FROM event_anchors ORDER BY id").fetchall():
        members = [bytes(h) for h, in conn.execute(
            "SELECT hash FROM event_hashes WHERE anchor_id = %s ORDER BY seq", (anchor_id,))]
        root = hashlib.sha256(b"".join(members)).digest()
        digest = hashlib.sha256(prev + root).digest()
        conn.execute("UPDATE event_anchors SET root = %s, prev_hash = %s, hash = %s "
                     "WHERE id = %s", (root, prev, digest, anchor_id))
        prev = digest


def _exported(engine: Engine, key: bytes | None = b"kept-elsewhere") -> Any:
    from infra.ops.anchors import AnchorExporter

    exporter = AnchorExporter(engine.database_url,
                              engine.settings.anchors_file(engine.database_url),
                              engine.producer(), engine.settings.topics.audit, key)
    while exporter.run_once():
        pass
    exporter.close()
    return exporter


def _verify_with_kept(engine: Engine, key: bytes | None = b"kept-elsewhere",
                      source: str = "file") -> Any:
    from infra.ops import anchors
    from infra.ops.audit import verify_external

    records = (anchors.read_file(engine.settings.anchors_file(engine.database_url))
               if source == "file" else
               anchors.read_topic(engine.kafka_bootstrap, engine.settings))
    with psycopg.connect(engine.database_url) as conn:
        report = verify(conn)
        verify_external(conn, records, key, report)
    return report


def test_a_consistent_superuser_rewrite_shows_against_the_kept_anchors(
        engine: Engine) -> None:
    history(engine)
    exported = _exported(engine)
    assert exported.published >= 13
    assert _verify_with_kept(engine).clean
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("ALTER TABLE billing_events DISABLE TRIGGER USER")
        _superuser_rewrite(conn, "sub-a", 4, '"quantity":"3"', '"quantity":"300"')
    with psycopg.connect(engine.database_url) as conn:
        assert verify(conn).clean  # the database agrees with itself
    for source in ("file", "topic"):
        report = _verify_with_kept(engine, source=source)
        first = report.findings[0]
        assert first.kind == "anchor_diverged" and first.anchor is not None, report.findings
        assert "sub-a v4" in first.detail  # the anchor names the rewritten event
        assert report.external_anchors == exported.published


def test_an_edited_kept_record_fails_its_hmac(engine: Engine) -> None:
    import orjson

    history(engine)
    _exported(engine)
    path = engine.settings.anchors_file(engine.database_url)
    lines = path.read_bytes().splitlines()
    record = orjson.loads(lines[2])
    record["hash"] = "00" * 32
    path.write_bytes(b"\n".join([*lines[:2], orjson.dumps(record), *lines[3:]]) + b"\n")
    kinds = [(f.kind, f.anchor) for f in _verify_with_kept(engine).findings]
    assert kinds == [("anchor_record_forged", record["anchor"])]


def test_an_event_rewritten_with_its_own_hashes_is_named_itself(engine: Engine) -> None:
    from infra.eventstore.recorder import content_hash, event_hash

    history(engine)
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("UPDATE billing_events SET state = convert_to(replace(convert_from(state, "
                     "'UTF8'), '\"quantity\":\"3\"', '\"quantity\":\"300\"'), 'UTF8') WHERE "
                     "originator_id = 'sub-a' AND originator_version = 4")
        topic, state = conn.execute("SELECT topic, state FROM billing_events WHERE "
                                    "originator_id = 'sub-a' AND originator_version = 4"
                                    ).fetchone() or ("", b"")
        prev = conn.execute("SELECT hash FROM event_hashes WHERE originator_id = 'sub-a' AND "
                            "originator_version = 3").fetchone()
        assert prev is not None
        content = content_hash(topic, bytes(state))
        conn.execute("UPDATE event_hashes SET content_hash = %s, hash = %s WHERE "
                     "originator_id = 'sub-a' AND originator_version = 4",
                     (content, event_hash(bytes(prev[0]), "sub-a", 4, content)))
        report = verify(conn)
    named = [(f.subscription, f.version, f.kind) for f in report.findings if f.anchor is None]
    assert named == [("sub-a", 4, "rewritten")]
    anchors = [f for f in report.findings if f.anchor is not None]
    assert anchors and all(f.version is None and "sub-a v4" in f.detail for f in anchors
                           if "covers" in f.detail)


def test_an_edited_snapshot_is_found_and_state_does_not_use_it(engine: Engine) -> None:
    from infra.ops.audit import Verification, replay_from_events, verify_snapshots

    subscribe(engine, "sub-s")
    for n in range(60):  # past the snapshot interval (50)
        sub = engine.app.get("sub-s")
        sub.record_usage([UsageItem(f"s-{n}", "sub-s", "tokens", Decimal(1),
                                    T0 + timedelta(minutes=n))])
        engine.app.save_batch([sub], None)
    with psycopg.connect(engine.database_url) as conn:
        clean = Verification()
        verify_snapshots(engine.app, conn, clean)
        assert clean.snapshots >= 1 and clean.clean, clean.findings
        edited = conn.execute(
            "UPDATE billing_snapshots SET state = convert_to(replace(convert_from(state, "
            "'UTF8'), '\"plan_id\":\"basic\"', '\"plan_id\":\"scale\"'), 'UTF8') "
            "WHERE originator_id = 'sub-s'")
        assert edited.rowcount >= 1
        conn.commit()
        report = Verification()
        verify_snapshots(engine.app, conn, report)
    assert [(f.subscription, f.kind) for f in report.findings] == [
        ("sub-s", "snapshot_mismatch")] * edited.rowcount
    assert replay_from_events(engine.app, "sub-s").plan_id == "basic"
