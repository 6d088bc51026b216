"""The event store: loading stays flat as history grows, and state replays exactly."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from domain.app.billing_app import snapshot_due
from domain.contracts.usage import UsageItem
from infra.wiring.engine import Engine
from tests.integration.helpers import T0, subscribe

pytestmark = pytest.mark.integration


def test_loading_reads_a_snapshot_and_at_most_49_events_whatever_the_history(
        engine: Engine) -> None:
    subscribe(engine, "sub-long")
    for n in range(130):
        sub = engine.app.get("sub-long")
        sub.record_usage([UsageItem(f"u{n}", "sub-long", "tokens", Decimal(n + 1),
                                    T0 + timedelta(minutes=n))])
        engine.app.save_batch([sub], None, [("sub-long", f"u{n}")])
    assert engine.app.get("sub-long").version == 131

    with psycopg.connect(engine.database_url) as conn:
        snapshots = [r[0] for r in conn.execute(
            "SELECT originator_version FROM billing_snapshots WHERE originator_id = 'sub-long' "
            "ORDER BY 1")]
    assert snapshots == [v for v in range(1, 132) if snapshot_due("sub-long", v, 50)]
    assert len(snapshots) in (2, 3) and snapshots[1] - snapshots[0] == 50

    # A cold load (no process cache) starts from the newest snapshot: at most 49 events.
    recorder = engine.app.recorder
    calls: list[int] = []
    original = recorder.select_events

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        events = original(*args, **kwargs)
        calls.append(len(events))
        return events

    recorder.select_events = counting  # type: ignore[method-assign]
    try:
        loaded = engine.app.load_as_stored("sub-long")
    finally:
        recorder.select_events = original  # type: ignore[method-assign]
    assert calls == [131 - snapshots[-1]]
    assert loaded.version == 131
    assert loaded.used == {"tokens": Decimal(sum(range(1, 131)))}

    # Replaying every event from version 1 gives the same state as the snapshot path.
    full = None
    for event in engine.app.events.get("sub-long"):
        full = event.mutate(full)  # type: ignore[attr-defined]
    assert full is not None and full.version == 131
    assert full.used == loaded.used and full.cycle_end == loaded.cycle_end


def test_reading_the_log_jumps_gaps_of_rolled_back_ids(engine: Engine) -> None:
    """The log is read in bounded windows of ids: a gap wider than a window (ids taken by
    transactions that rolled back) must not look like the end of the log."""
    subscribe(engine, "sub-before")
    with psycopg.connect(engine.database_url, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('billing_events', "
                     "'notification_id'), (SELECT max(notification_id) FROM billing_events) "
                     "+ 1000)")
    subscribe(engine, "sub-after")
    recorder = engine.app.recorder
    seen = []
    position = 1
    while batch := recorder.select_notifications(start=position, limit=3):
        seen.extend(n.originator_id for n in batch)
        position = batch[-1].id + 1
    assert "sub-before" in seen and "sub-after" in seen
    ids = [n.id for n in recorder.select_notifications(start=1, limit=1_000)]
    assert ids == sorted(ids) and len(ids) == len(seen)
    assert recorder.select_notifications(start=1, limit=5, stop=ids[0]) == \
        recorder.select_notifications(start=1, limit=1)
