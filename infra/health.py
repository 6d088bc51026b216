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


class Heartbeat:
    def __init__(self, url: str, roles: list[str]) -> None:
        self.url = url
        self.roles = roles
        self.host = socket.gethostname()
        self.started = datetime.now(UTC)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
        return self._conn

    def beat(self, alive: dict[str, bool], detail: dict[str, Any]) -> None:
        """One row per role of this process; a failure (database restarting) is only logged
        by the caller: the next beat tries again."""
        conn = self._connection()
        now = datetime.now(UTC)
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


def check(url: str, bootstrap: str, topics: list[str], max_age: float) -> dict[str, Any]:
    """Everything `billing health` reports; `healthy` is the verdict."""
    from infra.kafka import broker_reachable

    report: dict[str, Any] = {"database": False, "broker": False, "workers": [], "lag": {}}
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
            report["database"] = True
            rows = conn.execute(
                "SELECT worker, role, alive, extract(epoch FROM now() - beat_at), detail "
                "FROM worker_heartbeats ORDER BY role, worker").fetchall()
            report["workers"] = [
                {"worker": w, "role": r, "threads_alive": a, "seconds_since_beat": float(age),
                 "healthy": bool(a) and float(age) <= max_age, "detail": d}
                for w, r, a, age, d in rows]
            report["lag"] = _lags(conn)
    except psycopg.Error as e:
        report["database_error"] = type(e).__name__
    report["broker"] = broker_reachable(bootstrap, topics)
    report["healthy"] = (report["database"] and report["broker"] and bool(report["workers"])
                         and all(w["healthy"] for w in report["workers"]))
    return report


def _lags(conn: psycopg.Connection[Any]) -> dict[str, int]:
    relay = conn.execute(
        "SELECT coalesce((SELECT max(notification_id) FROM billing_events), 0) - coalesce("
        "(SELECT max(notification_id) FROM billing_tracking WHERE application_name LIKE "
        "'relay:%%'), 0)").fetchone()
    return {"relay_events": max(int(relay[0]), 0) if relay else 0}


def ready(url: str, bootstrap: str, topics: list[str]) -> dict[str, Any]:
    from infra.kafka import broker_reachable

    report: dict[str, Any] = {"database": False, "tables": False, "broker": False}
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            report["database"] = True
            found = conn.execute("SELECT to_regclass('billing_events') IS NOT NULL AND "
                                 "to_regclass('quota') IS NOT NULL").fetchone()
            report["tables"] = bool(found and found[0])
    except psycopg.Error as e:
        report["database_error"] = type(e).__name__
    report["broker"] = broker_reachable(bootstrap, topics)
    report["ready"] = report["database"] and report["tables"] and report["broker"]
    return report
