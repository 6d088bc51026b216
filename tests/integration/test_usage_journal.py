"""Usage held outside the streams (BILLING_USAGE_JOURNAL, docs/usage-journal.md), on PostgreSQL
and Kafka: ingestion writes no event per subscription, only a journal event per write and a
held-usage row per subscription; every load takes the held usage back; any other writer of a
subscription settles it into the stream first; two writers of one subscription meet on the
row's count, and usage still counts exactly once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from domain.app.billing_app import SETTLE_AT
from domain.contracts.usage import UsageItem
from infra.eventstore.recorder import open_application
from infra.wiring.engine import Engine
from tests.integration.helpers import T0, ingest_all, publish, store_totals, subscribe, usage

pytestmark = pytest.mark.integration


@pytest.fixture
def journaled(engine: Engine) -> Engine:
    engine.settings = replace(engine.settings, usage_journal=True)
    engine.app.buffers_usage = True
    return engine


def topics(engine: Engine, stream: str) -> list[str]:
    with psycopg.connect(engine.database_url) as conn:
        rows = conn.execute("SELECT topic FROM billing_events WHERE originator_id = %s "
                            "ORDER BY originator_version", (stream,)).fetchall()
    return [r[0].rsplit(".", 1)[-1] for r in rows]


def held(engine: Engine, sub: str) -> tuple[int, int, int] | None:
    """(stream version, count of writes, items held) of a subscription's row."""
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute("SELECT stream_version, seq, batches FROM usage_held "
                           "WHERE subscription_id = %s", (sub,)).fetchone()
    if row is None:
        return None
    import orjson
    return row[0], row[1], sum(len(b["items"]) for b in orjson.loads(row[2]))


def journal_entries(engine: Engine) -> list[dict[str, Any]]:
    import orjson
    with psycopg.connect(engine.database_url) as conn:
        rows = conn.execute("SELECT state FROM billing_events WHERE topic LIKE "
                            "'%UsageJournal.Journaled' ORDER BY notification_id").fetchall()
    return [e for r in rows for e in orjson.loads(r[0])["entries"]]


def test_ingested_usage_is_held_and_journaled_not_an_event_per_subscription(
        journaled: Engine) -> None:
    subscribe(journaled, "sub-a", "sub-b")
    ingest_all(journaled, publish(journaled, [
        usage("u1", "sub-a", quantity=10), usage("u2", "sub-b", quantity=3),
        usage("u3", "sub-a", quantity=5)]))

    assert topics(journaled, "sub-a") == ["Subscribed"]
    # Each write of a subscription counts on its row: the subscribe, then the ingestion.
    assert held(journaled, "sub-a") == (1, 2, 2) and held(journaled, "sub-b") == (1, 2, 1)
    entries = journal_entries(journaled)
    assert {(e["subscription"], e["version"], e["seq"], e["totals"]["tokens"])
            for e in entries} == {("sub-a", 1, 2, "15"), ("sub-b", 1, 2, "3")}
    # Any load takes the held usage back: another process's, with nothing cached.
    assert store_totals(journaled) == {("sub-a", "tokens"): Decimal(15),
                                       ("sub-b", "tokens"): Decimal(3)}
    other = open_application(journaled.database_url, journaled.app.catalog)
    try:
        assert other.get("sub-a").used["tokens"] == Decimal(15)
    finally:
        other.close()


def test_another_writer_settles_first_and_ingestion_then_meets_it(journaled: Engine) -> None:
    subscribe(journaled, "sub-a")
    loop, ingestor = journaled.ingestion()
    ingest_all(journaled, publish(journaled, [usage("u1", "sub-a", quantity=10)]), loop)
    # A command's writer (another application) creates a workspace on sub-a.
    commands = open_application(journaled.database_url, journaled.app.catalog)
    try:
        sub = commands.get("sub-a")
        sub.create_workspace("ws-1", T0 + timedelta(days=1, hours=12))
        commands.save_batch([sub], tracking=None)
    finally:
        commands.close()
    assert topics(journaled, "sub-a") == ["Subscribed", "UsageSettled", "WorkspaceCreated"]
    assert held(journaled, "sub-a") == (3, 3, 0)

    # Ingestion's cached sub-a is behind: its write fails on the row's count, and the batch
    # is redone on the stored state.
    ingest_all(journaled, publish(journaled, [usage("u2", "sub-a", quantity=7)]), loop)
    loop.close()
    assert ingestor.conflicts == 1 and loop.failures == 0
    assert store_totals(journaled) == {("sub-a", "tokens"): Decimal(17)}
    assert held(journaled, "sub-a") == (3, 4, 1)
    assert journaled.app.load_as_stored("sub-a").workspaces == {"ws-1": "active"}


def test_two_writers_of_one_subscription_meet_on_its_held_usage(journaled: Engine) -> None:
    subscribe(journaled, "sub-a")
    first = open_application(journaled.database_url, journaled.app.catalog)
    second = open_application(journaled.database_url, journaled.app.catalog)
    first.buffers_usage = second.buffers_usage = True
    try:
        mine, theirs = first.get("sub-a"), second.get("sub-a")
        theirs.record_usage([UsageItem("u1", "sub-a", "tokens", Decimal(5), T0)],
                            buffered=True)
        second.save_batch([theirs], tracking=None)
        mine.record_usage([UsageItem("u2", "sub-a", "tokens", Decimal(9), T0)],
                          buffered=True)
        with pytest.raises(IntegrityError):
            first.save_batch([mine], tracking=None)
        assert first.get("sub-a").used["tokens"] == Decimal(5)  # evicted, read again
    finally:
        first.close()
        second.close()


def test_a_subscription_holding_many_usage_events_settles_them(journaled: Engine) -> None:
    subscribe(journaled, "sub-a")
    ingest_all(journaled, publish(journaled, [usage(f"u{i}", "sub-a", quantity=1)
                                              for i in range(SETTLE_AT + 6)]))
    assert "UsageSettled" in topics(journaled, "sub-a")
    assert store_totals(journaled) == {("sub-a", "tokens"): Decimal(SETTLE_AT + 6)}
    # Each usage event reaches the read models once: by the journal, or (written in a write
    # that settles) by the UsageSettled event, whose journaled batches are marked.
    import orjson
    with psycopg.connect(journaled.database_url) as conn:
        settled = [b for (state,) in conn.execute(
            "SELECT state FROM billing_events WHERE topic LIKE '%UsageSettled'")
            for b in orjson.loads(state)["batches"]]
    assert sum(len(e["items"]) for e in journal_entries(journaled)) + sum(
        len(b["items"]) for b in settled if not b.get("journaled")) == SETTLE_AT + 6


def test_read_models_count_held_usage_once_and_rebuild_to_the_same_rows(
        journaled: Engine) -> None:
    from infra.ops.rebuild import rebuild
    from projections.quota import store as quota_store
    from tests.integration.helpers import project_all, quota_rows, quota_used, relay_all
    from tests.integration.test_relay_and_projection import _fill

    _fill(journaled)  # 3,000 usage events over 12 subscriptions; 3 of them roll a cycle
    relay_all(journaled)
    loop = project_all(journaled)
    live = quota_rows(journaled.database_url)
    assert quota_used(journaled.database_url) == store_totals(journaled)
    assert any("UsageSettled" in topics(journaled, f"sub-{i:02d}") for i in range(3))

    # A command settles a subscription's held usage into its stream: published, not counted
    # again.
    holding = next(s for s in (f"sub-{i:02d}" for i in range(12))
                   if (row := held(journaled, s)) is not None and row[2])
    commands = open_application(journaled.database_url, journaled.app.catalog)
    try:
        sub = commands.get(holding)
        sub.create_workspace("ws-1", T0 + timedelta(days=29))
        commands.save_batch([sub], tracking=None)
    finally:
        commands.close()
    assert topics(journaled, holding)[-2:] == ["UsageSettled", "WorkspaceCreated"]
    relay_all(journaled)
    project_all(journaled, loop)
    assert quota_rows(journaled.database_url) == live

    # From the event store, from scratch; then from billing.events, offset 0.
    with psycopg.connect(journaled.database_url) as conn:
        conn.execute("DELETE FROM quota")
    swapped = rebuild(journaled.app, journaled.database_url, ["quota"], do_swap=True,
                      force=True)
    assert swapped.swapped and quota_rows(journaled.database_url) == live
    with psycopg.connect(journaled.database_url) as conn, conn.cursor() as cur:
        quota_store.reset(cur, positions_too=True)
    project_all(journaled)
    assert quota_rows(journaled.database_url) == live
