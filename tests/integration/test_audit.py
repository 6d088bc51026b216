"""Tamper evidence: rows edited, deleted, inserted or reordered directly in PostgreSQL are
named by `verify`; a clean store verifies with a count and the final anchor."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from domain.usage import UsageItem
from infra.audit import verify
from infra.engine import Engine
from infra.eventstore import open_application
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
    assert report.events == 2 * 7 + 2  # two subscriptions x 7 events, the catalog stream 2
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
    assert report.events == 7 + 2
