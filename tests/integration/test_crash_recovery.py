"""SIGKILL the ingestion process at random points, restart it, and the totals never change."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from decimal import Decimal

import psycopg
import pytest

from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import publish, store_totals, subscribe, usage

pytestmark = pytest.mark.integration


def _worker(engine: Engine) -> subprocess.Popen[bytes]:
    env = engine.subprocess_env(BILLING_MAX_POLL_RECORDS="300")
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "run", "--only", "ingest", "--report-every", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _ingested_offsets(engine: Engine) -> int:
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(notification_id + 1), 0) FROM billing_tracking "
                           "WHERE application_name LIKE %s",
                           (engine.settings.topics.usage + ":%",)).fetchone()
    return int(row[0]) if row else 0


def test_killing_ingestion_at_any_point_never_changes_the_totals(engine: Engine) -> None:
    rng = random.Random(42)
    subs = [f"sub-{i:02d}" for i in range(40)]
    subscribe(engine, *subs)
    messages, expected = [], {}
    for n in range(30_000):
        sub, metric = subs[rng.randrange(len(subs))], ("tokens", "documents")[n % 2]
        quantity = rng.randrange(1, 100)
        messages.append(usage(f"u{n}", sub, metric, quantity))
        expected[(sub, metric)] = expected.get((sub, metric), Decimal(0)) + quantity
    messages += rng.sample(messages, 3_000)  # redeliveries mixed in
    rng.shuffle(messages)
    ends = publish(engine, messages)
    monitor = Monitor(engine)

    kills, progress = 0, []
    while kills < 8 and not monitor.ingested(ends):
        worker = _worker(engine)
        assert worker.stdout is not None
        worker.stdout.readline()  # it is consuming from here on
        time.sleep(rng.uniform(0.05, 0.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        progress.append(_ingested_offsets(engine))

    worker = _worker(engine)
    assert worker.stdout is not None
    assert b"running" in worker.stdout.readline()  # started, signal handlers in place
    try:
        deadline = time.monotonic() + 120
        while not monitor.ingested(ends):
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "ingestion did not finish"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0  # a clean stop on SIGTERM

    total = sum(ends.values())
    mid_stream = [p for p in progress if 0 < p < total]
    print(f"kills: {kills}, ingested offsets at each kill: {progress} of {total}")
    assert len(mid_stream) >= 3, "the worker was not killed mid-stream often enough"
    assert store_totals(engine) == expected
    with psycopg.connect(engine.database_url) as conn:
        applied = conn.execute("SELECT count(*) FROM usage_dedup").fetchone()
    assert applied == (30_000,)
