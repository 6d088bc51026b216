"""Health and readiness. Each `billing run` process writes a heartbeat row per worker role every
couple of seconds (its threads alive, what it has handled); `billing health` reads them with
the database, broker and pipeline lags, and `billing ready` says whether a worker could start
(database reachable with its tables, broker reachable with its topics). Both exit non-zero when
not, for process supervisors and orchestrators' probes."""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from infra.kafka.relay import relay_lag

HEARTBEATS_DDL = """
CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker text PRIMARY KEY,
    role text NOT NULL,
    host text NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL,
    beat_at timestamptz NOT NULL,
    alive boolean NOT NULL,
    detail jsonb NOT NULL
)"""


# Health must answer, not wait: a probe behind a lock or a stuck server fails instead.
BOUNDED = "-c statement_timeout=5000 -c lock_timeout=2000"


class Heartbeat:
    def __init__(self, url: str, roles: list[str]) -> None:
        self.url = url
        self.roles = roles
        self.host = socket.gethostname()
        self.started = datetime.now(UTC)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3,
                                         options=BOUNDED)
        return self._conn

    def beat(self, alive: dict[str, bool], detail: dict[str, Any]) -> None:
        """One row per role of this process; a failure (database restarting) is only logged
        by the caller: the next beat tries again. The rows of processes that stopped beating
        before this one started (killed, and replaced by this one) are removed."""
        conn = self._connection()
        now = datetime.now(UTC)
        conn.execute("DELETE FROM worker_heartbeats WHERE role = ANY(%s) "
                     "AND beat_at < %s - interval '5 seconds'", (self.roles, self.started))
        for role in self.roles:
            conn.execute(
                "INSERT INTO worker_heartbeats VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (worker) DO UPDATE SET beat_at = EXCLUDED.beat_at, "
                "alive = EXCLUDED.alive, detail = EXCLUDED.detail",
                (f"{role}@{self.host}:{os.getpid()}", role, self.host, os.getpid(),
                 self.started, now, alive.get(role, False),
                 orjson.dumps(detail.get(role, {})).decode()))

    def stopped(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection().execute("DELETE FROM worker_heartbeats WHERE host = %s AND "
                                       "pid = %s", (self.host, os.getpid()))
        if self._conn is not None:
            self._conn.close()


def check(url: str, bootstrap: str, topics: list[str], max_age: float,
          kafka_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `billing health` reports; `healthy` is the verdict, and `problems` says
    what makes it false: a stale worker, a stalled partition (input waiting, no progress), a
    worker whose batches keep failing, parked events."""
    from infra.kafka.clients import broker_reachable

    report: dict[str, Any] = {"database": False, "broker": False, "workers": [], "lag": {},
                              "parked": {}, "problems": []}
    problems: list[str] = report["problems"]
    try:
        with psycopg.connect(url, connect_timeout=3, options=BOUNDED, autocommit=True) as conn:
            conn.execute("SELECT 1")
            report["database"] = True
            rows = conn.execute(
                "SELECT worker, role, alive, extract(epoch FROM now() - beat_at), detail "
                "FROM worker_heartbeats ORDER BY role, worker").fetchall()
            report["workers"] = [_worker(w, r, a, float(age), d, max_age, problems)
                                 for w, r, a, age, d in rows]
            report["parked"] = _parked(conn)
            try:  # behind a lock on the event store, this times out: the rest still stands
                report["lag"] = {"relay_events": relay_lag(conn)}
            except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as e:
                problems.append(f"event store: {type(e).__name__} reading the relay lag")
    except psycopg.Error as e:
        report["database_error"] = f"{type(e).__name__}: {e}"[:300]
        problems.append(f"database: {report['database_error']}")
    report["broker"] = broker_reachable(bootstrap, topics, options=kafka_options)
    if not report["broker"]:
        problems.append("broker: unreachable or topics missing")
    if report["database"] and not report["workers"]:
        problems.append("no worker is running")
    for stage, count in report["parked"].items():
        problems.append(f"{stage}: {count} parked event(s) (billing parked list)")
    report["healthy"] = not problems
    return report


def _worker(worker: str, role: str, alive: bool, age: float, detail: dict[str, Any],
            max_age: float, problems: list[str]) -> dict[str, Any]:
    stalled = list(detail.get("stalled", []))
    failing = float(detail.get("failing_seconds", 0) or 0)
    healthy = bool(alive) and age <= max_age and bool(detail.get("healthy", True))
    if not alive:
        problems.append(f"{role} {worker}: a worker thread has died")
    if age > max_age:
        problems.append(f"{role} {worker}: no heartbeat for {age:.0f}s")
    for partition in stalled:
        lag = detail.get("partitions", {}).get(partition, {})
        problems.append(f"{role} {worker}: {partition} stalled, {lag.get('lag')} waiting, no "
                        f"progress for {lag.get('seconds_since_progress')}s")
    if failing and not detail.get("healthy", True) and not stalled:
        problems.append(f"{role} {worker}: batches failing for {failing:.0f}s "
                        f"({detail.get('last_error')})")
    return {"worker": worker, "role": role, "threads_alive": alive, "seconds_since_beat": age,
            "healthy": healthy, "detail": detail}


def _parked(conn: psycopg.Connection[Any]) -> dict[str, int]:
    from projections import parked

    found = conn.execute("SELECT to_regclass('parked_events') IS NOT NULL").fetchone()
    return parked.count(conn) if found and found[0] else {}


def ready(url: str, bootstrap: str, topics: list[str],
          kafka_options: dict[str, Any] | None = None) -> dict[str, Any]:
    from infra.kafka.clients import broker_reachable

    report: dict[str, Any] = {"database": False, "tables": False, "broker": False}
    try:
        with psycopg.connect(url, connect_timeout=3, options=BOUNDED) as conn:
            report["database"] = True
            found = conn.execute("SELECT to_regclass('billing_events') IS NOT NULL AND "
                                 "to_regclass('quota') IS NOT NULL").fetchone()
            report["tables"] = bool(found and found[0])
    except psycopg.Error as e:
        report["database_error"] = type(e).__name__
    report["broker"] = broker_reachable(bootstrap, topics, options=kafka_options)
    report["ready"] = report["database"] and report["tables"] and report["broker"]
    return report
