"""`billing rebuild`: fresh tables, a comparison with the live ones, a swap only when asked and
only when they are identical (or forced), and nothing lost by a swap under running projectors."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import threading
from datetime import timedelta

import psycopg
import pytest

from consumers.projector import Database
from consumers.wire import wire_message
from domain.contracts.commands import parse_command
from infra.cli import main as cli
from infra.ops import rebuild
from infra.wiring.engine import Engine, Monitor
from projections import tracking as projection_versions
from projections.invoices import store as invoices
from tests.integration.helpers import T0, ingest_all, publish, relay_all, until, usage
from tests.integration.test_audit_tools import journey

pytestmark = pytest.mark.integration
PROJECTIONS = ["quota", "invoices"]


def billing_rebuild(engine: Engine, capsys: pytest.CaptureFixture[str], *, swap: bool = False,
                    force: bool = False, as_json: bool = False) -> tuple[int, str]:
    """`billing rebuild [--swap] [--force] [--json]` on the test's stack: exit code, output."""
    settings = dataclasses.replace(engine.settings, stack="external",
                                   database_url=engine.database_url,
                                   kafka_bootstrap=engine.kafka_bootstrap)
    args = argparse.Namespace(projection=[], source="store", swap=swap, force=force,
                              processes=1, json=as_json)
    code = cli.cmd_rebuild(args, settings)
    return code, capsys.readouterr().out


def test_rebuild_compares_reports_differences_and_swaps_only_when_asked(
        engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    journey(engine)
    relay_all(engine)
    loop, _ = engine.projector()
    monitor = Monitor(engine)
    until(lambda: monitor.projection_lag() == 0, lambda: loop.poll_once(100))
    url = engine.database_url
    quiet = lambda done, total: None  # noqa: E731

    def run(swap: bool, source: str = "store", force: bool = False) -> rebuild.RebuildReport:
        replay = (rebuild.kafka_replay(engine, ["quota", "invoices"], quiet)
                  if source == "kafka" else None)
        if replay is None:
            return rebuild.rebuild(engine.app, url, ["quota", "invoices"], do_swap=swap,
                                   force=force, replay=lambda shadow: rebuild.replay_store(
                                       engine.app, shadow, ["quota", "invoices"], quiet))
        return rebuild.rebuild(engine.app, url, ["quota", "invoices"], do_swap=swap,
                               force=force, replay=replay)

    clean = run(swap=False)
    assert clean.identical, [c for c in clean.comparisons if c.missing or c.extra]
    assert clean.events > 0
    # In three processes, each one hash partition of the subscriptions: the same rows.
    replay_in_3 = rebuild.replay_parallel(url, engine.settings, ["quota", "invoices"], 3)
    parallel = rebuild.rebuild(engine.app, url, ["quota", "invoices"], do_swap=False,
                               replay=replay_in_3)
    assert parallel.identical, [c for c in parallel.comparisons if c.missing or c.extra]
    assert parallel.events == clean.events
    assert 1 <= len(replay_in_3.peak_rss_mib) <= 3
    assert all(m > 10 for m in replay_in_3.peak_rss_mib.values())

    with psycopg.connect(url) as conn:  # a live row drifts
        conn.execute("UPDATE quota SET used = used + 1 WHERE subscription_id = 'sub-x' "
                     "AND metric = 'conversations'")
    drift = run(swap=False)
    assert [(c.table, c.missing, c.extra, c.examples) for c in drift.differences] \
        == [("quota", 1, 1, ["sub-x"])]
    assert not run(swap=False).identical  # still drifted: nothing swapped without --swap
    refused = run(swap=True)  # nor with --swap alone: the tables differ
    assert refused.refused and not refused.swapped and not refused.identical
    code, out = billing_rebuild(engine, capsys, swap=True)
    assert code == 1, out
    assert "quota " in out and "1 missing, 1 extra (e.g. sub-x)" in out
    assert "DIFFERENT (quota); live tables untouched" in out
    assert "NOT swapped" in out and "nothing was changed" in out
    assert not run(swap=False).identical
    code, out = billing_rebuild(engine, capsys, swap=True, force=True)
    assert code == 1 and "DIFFERENT (quota); swapped in anyway (--force)" in out, out
    assert run(swap=False).identical
    code, out = billing_rebuild(engine, capsys, swap=True)
    assert code == 0 and "identical; swapped in" in out, out
    code, out = billing_rebuild(engine, capsys, as_json=True)
    assert code == 0
    summary = json.loads(out)
    assert summary["identical"] and not summary["swapped"] and not summary["refused"]

    assert run(swap=False, source="kafka").identical  # the same from billing.events at 0

    bar = io.StringIO()
    rebuild.progress(5, 10, bar)
    assert "5/10 events" in bar.getvalue() and "#" in bar.getvalue()


def test_a_swap_under_running_projectors_loses_nothing(engine: Engine) -> None:
    """Usage, plan changes and profile updates keep arriving, are relayed and projected by
    projectors running in threads, while the rebuilt tables are swapped in three times. Once
    everything is projected, the live tables are what a fresh rebuild gives."""
    subs = [f"sub-{i:02d}" for i in range(12)]
    engine.app.subscribe_many([(s, f"acct-{s}", "basic") for s in subs], T0)
    url = engine.database_url
    monitor = Monitor(engine)
    stop_writing, stop_projecting, days_done = threading.Event(), threading.Event(), [0]
    writer = threading.Thread(target=_keep_writing, args=(engine, subs, stop_writing, days_done))
    projectors = [threading.Thread(target=loop.run, args=(stop_projecting,))
                  for loop, _ in (engine.projector(), engine.invoice_projector())]
    for thread in (writer, *projectors):
        thread.start()

    def overtaken_replay(shadow: Database) -> int:
        """A replay the live projectors overtake before it is compared and swapped in, as they
        do a long one: they apply events stored after it."""
        done = rebuild.replay_store(engine.app, shadow, PROJECTIONS, lambda done, total: None)
        until(lambda: _overtaken(url), lambda: stop_writing.wait(0.05))
        return done

    try:
        until(lambda: days_done[0] >= 2, lambda: stop_writing.wait(0.05))
        swaps = [rebuild.rebuild(engine.app, url, PROJECTIONS, do_swap=True,
                                 replay=overtaken_replay) for _ in range(3)]
        assert days_done[0] < 20, "the writer stopped before the swaps were done"
    finally:
        stop_writing.set()
        writer.join(60)
    try:
        relay_all(engine)
        until(lambda: monitor.projection_lag() == 0 and monitor.projection_lag("invoices") == 0,
              lambda: stop_projecting.wait(0.1))
    finally:
        stop_projecting.set()
        for thread in projectors:
            thread.join(30)
    final = rebuild.rebuild(engine.app, url, PROJECTIONS, do_swap=False)
    assert final.identical, [c for c in final.comparisons if c.missing or c.extra]
    assert final.behind == {"quota": 0, "invoices": 0}
    # Subscriptions the projectors had not reached yet were left out, never counted as
    # differences: every swap went through.
    assert all(s.swapped and s.identical for s in swaps), [s.differences for s in swaps]
    with psycopg.connect(url) as conn:
        drafts = conn.execute("SELECT count(*) FROM invoice_drafts").fetchone()
        inputs = conn.execute("SELECT count(*) FROM recommendation_inputs").fetchone()
    assert drafts and drafts[0] > 0 and inputs == (len(subs),)


def test_an_invoice_batch_held_up_by_a_swap_is_refused_not_applied_over_it(
        engine: Engine) -> None:
    """A projector's batch that read its versions before a swap locked the tables, and writes
    after it, finds the versions moved and is redone (VersionConflict), not applied twice."""
    engine.app.subscribe_many([("sub-a", "acct-a", "basic")], T0)
    app = engine.app
    messages = [wire_message(app, n) for n in app.recorder.select_notifications(start=1,
                                                                               limit=100)]
    url = engine.database_url
    failure: list[Exception] = []

    def run() -> None:
        try:
            with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
                invoices.apply_messages(cur, messages)
        except projection_versions.VersionConflict as e:
            failure.append(e)

    with psycopg.connect(url) as swapping:
        swapping.execute("LOCK TABLE invoice_drafts, projection_versions IN EXCLUSIVE MODE")
        batch = threading.Thread(target=run)
        batch.start()
        until(lambda: _waiting_for_a_lock(url), lambda: batch.join(0.05))
        swapping.execute("INSERT INTO projection_versions VALUES ('invoices', 'sub-a', %s)",
                         (messages[-1]["version"],))
    batch.join(30)
    assert failure, "the batch was applied over the swapped-in rows"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM invoice_drafts").fetchone() == (0,)


def _waiting_for_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'").fetchone()
    return row is not None and row[0] > 0


def _overtaken(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(DISTINCT projection) FROM projection_versions p JOIN "
            f"{rebuild.SHADOW}.projection_versions s USING (projection, subscription_id) "
            f"WHERE p.version > s.version").fetchone()
    return row == (len(PROJECTIONS),)


def _keep_writing(engine: Engine, subs: list[str], stop: threading.Event,
                  days_done: list[int]) -> None:
    """A day at a time until stopped: usage for every subscription, a profile update for a few
    and plan changes (draft lines, lifecycle facts, quota rows replaced), each relayed."""
    app = engine.worker_app()
    relay = engine.relay()
    ingestion, _ = engine.ingestion()
    plans = ("scale", "enterprise")
    for day in range(2, 22):
        if stop.is_set():
            return
        at = T0 + timedelta(days=day - 1)
        ingest_all(engine, publish(engine, [
            usage(f"u{day}-{s}", s, "conversations", 100 + day, at=at.isoformat(),
                  member=f"m{day % 2}") for s in subs]), ingestion)
        for i, sub in enumerate(subs):
            if (i + day) % 4 == 0:
                app.handle(parse_command({"id": f"p{day}-{sub}", "type": "update_profile",
                                          "subscription": sub, "at": at.isoformat(),
                                          "integrations": [f"tool-{day}"]}))
            if day in (4, 9) and i % 2 == day % 2:
                app.handle(parse_command({"id": f"c{day}-{sub}", "type": "change_plan",
                                          "subscription": sub, "at": at.isoformat(),
                                          "plan": plans[day // 5]}))
        while relay.run_once():
            pass
        days_done[0] = day - 1
