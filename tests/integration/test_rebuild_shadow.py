"""`billing rebuild`: fresh tables, a comparison with the live ones, a swap only when asked."""

from __future__ import annotations

import io

import psycopg
import pytest

from infra import rebuild
from infra.engine import Engine, Monitor
from tests.integration.helpers import relay_all, until
from tests.integration.test_audit_tools import journey

pytestmark = pytest.mark.integration


def test_rebuild_compares_reports_differences_and_swaps_only_when_asked(
        engine: Engine) -> None:
    journey(engine)
    relay_all(engine)
    loop, _ = engine.projector()
    monitor = Monitor(engine)
    until(lambda: monitor.projection_lag() == 0, lambda: loop.poll_once(100))
    url = engine.database_url
    quiet = lambda done, total: None  # noqa: E731

    def run(swap: bool, source: str = "store") -> rebuild.RebuildReport:
        replay = (rebuild.kafka_replay(engine, ["quota", "invoices"], quiet)
                  if source == "kafka" else None)
        if replay is None:
            return rebuild.rebuild(engine.app, url, ["quota", "invoices"], do_swap=swap,
                                   replay=lambda shadow: rebuild.replay_store(
                                       engine.app, shadow, ["quota", "invoices"], quiet))
        return rebuild.rebuild(engine.app, url, ["quota", "invoices"], do_swap=swap,
                               replay=replay)

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
    assert [(c.table, c.missing, c.extra) for c in drift.comparisons if c.missing or c.extra] \
        == [("quota", 1, 1)]
    assert not run(swap=False).identical  # still drifted: nothing swapped without --swap
    assert run(swap=True).swapped
    assert run(swap=False).identical

    assert run(swap=False, source="kafka").identical  # the same from billing.events at 0

    out = io.StringIO()
    rebuild.progress(5, 10, out)
    assert "5/10 events" in out.getvalue() and "#" in out.getvalue()
