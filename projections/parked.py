"""Events a stage could not relay or project (`parked_events`). A projection holds back every
later event of a parked subscription too: applying them over a missing one would make its rows
silently wrong. Other subscriptions go on. Health reports parked events; an operator lists them
(`billing parked`), fixes the cause, releases the subscription and rebuilds the read model
(`billing parked release`, `billing rebuild --swap`)."""

from __future__ import annotations

from typing import Any

import psycopg

from domain.shared.text import printable

DDL = """
CREATE TABLE IF NOT EXISTS parked_events (
    stage text NOT NULL,
    subscription_id text NOT NULL,
    version bigint NOT NULL,
    source text NOT NULL,
    code text NOT NULL,
    error text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, subscription_id, version)
)"""


def park(cur: psycopg.Cursor[Any], stage: str, subscription: str, version: int, source: str,
         code: str, error: str) -> None:
    cur.execute("INSERT INTO parked_events (stage, subscription_id, version, source, code, error)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (stage, printable(subscription, 256), version, printable(source, 300), code,
                 printable(error, 2000)))


def among(cur: psycopg.Cursor[Any], stage: str, subscriptions: list[str]) -> set[str]:
    """Which of these subscriptions are parked in this stage (read in the batch's own
    transaction: another projector's parking, or an operator's release, counts at once)."""
    cur.execute("SELECT DISTINCT subscription_id FROM parked_events WHERE stage = %s "
                "AND subscription_id = ANY(%s)", (stage, subscriptions), prepare=True)
    return {row[0] for row in cur.fetchall()}


def listing(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT stage, subscription_id, version, source, code, error, parked_at "
        "FROM parked_events ORDER BY parked_at, stage, subscription_id, version").fetchall()
    conn.commit()
    names = ("stage", "subscription", "version", "source", "code", "error", "parked_at")
    return [dict(zip(names, row, strict=True)) for row in rows]


def count(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT stage, count(*) FROM parked_events GROUP BY stage").fetchall()
    conn.commit()
    return {stage: int(n) for stage, n in rows}


def release(conn: psycopg.Connection[Any], stage: str | None, subscription: str | None) -> int:
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM parked_events WHERE (%(stage)s::text IS NULL OR stage = %(stage)s) "
            "AND (%(sub)s::text IS NULL OR subscription_id = %(sub)s)",
            {"stage": stage, "sub": subscription})
        return cur.rowcount
