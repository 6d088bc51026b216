"""The last event version each projection applied per subscription (`projection_versions`,
created with the quota schema): written in the same transaction as the projection's rows, so a
redelivered event at or below it is skipped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg


def read(cur: psycopg.Cursor[Any], projection: str,
         subscription_ids: Sequence[str]) -> dict[str, int]:
    cur.execute("SELECT subscription_id, version FROM projection_versions "
                "WHERE projection = %s AND subscription_id = ANY(%s)",
                (projection, list(subscription_ids)), prepare=True)
    return {sid: int(version) for sid, version in cur.fetchall()}


def write(cur: psycopg.Cursor[Any], projection: str, versions: Mapping[str, int]) -> None:
    if versions:  # as one JSON object: psycopg dumps arrays element by element in Python
        cur.execute(
            "INSERT INTO projection_versions (projection, subscription_id, version) "
            "SELECT %s, key, value::bigint FROM json_each_text(%s::json) "
            "ON CONFLICT (projection, subscription_id) DO UPDATE SET version = EXCLUDED.version",
            (projection, orjson.dumps(versions).decode()),
        )


class VersionConflict(RuntimeError):
    """Another writer has moved a subscription's version since this one read it."""


def advance(cur: psycopg.Cursor[Any], projection: str,
            moves: Mapping[str, tuple[int, int]]) -> None:
    """Each subscription's version from `old` to `new` (`{id: (old, new)}`, old 0: no row yet),
    refused with VersionConflict if any row is not at its `old` version. A writer that trusts
    the versions it cached, instead of reading them each batch, finds out here."""
    moved = {sid: move for sid, move in moves.items() if move[0]}
    if moved:
        cur.execute(
            "UPDATE projection_versions AS p SET version = v.new "
            "FROM json_to_recordset(%s::json) AS v(s text, old bigint, new bigint) "
            "WHERE p.projection = %s AND p.subscription_id = v.s AND p.version = v.old",
            (orjson.dumps([{"s": sid, "old": old, "new": new}
                           for sid, (old, new) in moved.items()]).decode(), projection),
            prepare=True)
        if cur.rowcount != len(moved):
            raise VersionConflict(f"{projection}: {len(moved) - cur.rowcount} of "
                                  f"{len(moved)} subscriptions moved by another writer")
    created = {sid: new for sid, (old, new) in moves.items() if not old}
    if created:
        cur.execute(
            "INSERT INTO projection_versions (projection, subscription_id, version) "
            "SELECT %s, key, value::bigint FROM json_each_text(%s::json) "
            "ON CONFLICT (projection, subscription_id) DO NOTHING",
            (projection, orjson.dumps(created).decode()), prepare=True)
        if cur.rowcount != len(created):
            raise VersionConflict(f"{projection}: {len(created) - cur.rowcount} of "
                                  f"{len(created)} subscriptions created by another writer")


def streams_behind(conn: psycopg.Connection[Any], projection: str,
                   events_table: str = "billing_events",
                   parked_table: str | None = None) -> int:
    """How many streams of the event store this projection has not applied up to their latest
    event (its lag, in subscriptions); those parked in `parked_table` left out."""
    parked = ("" if parked_table is None else
              f" AND NOT EXISTS (SELECT 1 FROM {parked_table} k WHERE k.stage = %(p)s"
              " AND k.subscription_id = e.originator_id)")
    row = conn.execute(
        "SELECT count(*) FROM (SELECT originator_id, max(originator_version) AS v "
        f"FROM {events_table} GROUP BY originator_id) e "
        "LEFT JOIN projection_versions p ON p.projection = %(p)s "
        "AND p.subscription_id = e.originator_id WHERE p.version IS DISTINCT FROM e.v" + parked,
        {"p": projection}).fetchone()
    conn.commit()
    return int(row[0]) if row else 0
