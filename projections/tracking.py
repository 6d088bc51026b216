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


def read_positions(cur: psycopg.Cursor[Any], projection: str,
                   subscription_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(version, seq) per subscription: the seq counts held usage applied after the version
    (consumers/wire.py)."""
    cur.execute("SELECT subscription_id, version, seq FROM projection_versions "
                "WHERE projection = %s AND subscription_id = ANY(%s)",
                (projection, list(subscription_ids)), prepare=True)
    return {sid: (int(version), int(seq)) for sid, version, seq in cur.fetchall()}


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


Position = int | tuple[int, int]  # a version, or (version, seq)


def advance(cur: psycopg.Cursor[Any], projection: str,
            moves: Mapping[str, tuple[Position, Position]]) -> None:
    """Each subscription's position from `old` to `new` (`{id: (old, new)}`; a position is a
    version, or (version, seq) with held usage; old 0: no row yet), refused with
    VersionConflict if any row is not at its `old` position. A writer that trusts the
    positions it cached, instead of reading them each batch, finds out here."""
    pairs = {sid: (_pair(old), _pair(new)) for sid, (old, new) in moves.items()}
    moved = {sid: move for sid, move in pairs.items() if move[0] != (0, 0)}
    if moved:
        cur.execute(
            "UPDATE projection_versions AS p SET version = v.new, seq = v.new_seq "
            "FROM json_to_recordset(%s::json) AS v(s text, old bigint, old_seq bigint, "
            "new bigint, new_seq bigint) WHERE p.projection = %s AND p.subscription_id = v.s "
            "AND p.version = v.old AND p.seq = v.old_seq",
            (orjson.dumps([{"s": sid, "old": old[0], "old_seq": old[1], "new": new[0],
                            "new_seq": new[1]} for sid, (old, new) in moved.items()]).decode(),
             projection),
            prepare=True)
        if cur.rowcount != len(moved):
            raise VersionConflict(f"{projection}: {len(moved) - cur.rowcount} of "
                                  f"{len(moved)} subscriptions moved by another writer")
    created = {sid: new for sid, (old, new) in pairs.items() if old == (0, 0)}
    if created:
        cur.execute(
            "INSERT INTO projection_versions (projection, subscription_id, version, seq) "
            "SELECT %s, v.s, v.new, v.new_seq FROM json_to_recordset(%s::json) "
            "AS v(s text, new bigint, new_seq bigint) "
            "ON CONFLICT (projection, subscription_id) DO NOTHING",
            (projection, orjson.dumps([{"s": sid, "new": new[0], "new_seq": new[1]}
                                       for sid, new in created.items()]).decode()),
            prepare=True)
        if cur.rowcount != len(created):
            raise VersionConflict(f"{projection}: {len(created) - cur.rowcount} of "
                                  f"{len(created)} subscriptions created by another writer")


def _pair(position: Position) -> tuple[int, int]:
    return (position, 0) if isinstance(position, int) else position


def streams_behind(conn: psycopg.Connection[Any], projection: str,
                   events_table: str = "billing_events",
                   parked_table: str | None = None) -> int:
    """How many subscriptions this projection has not applied up to their latest event (its
    lag, in subscriptions); those parked in `parked_table` left out. The quota projection also
    counts usage held outside the streams: it is behind a subscription until it has applied
    the last journal entry after the stream's latest event (`usage_held.journaled`). The usage
    journal's own streams are nobody's to apply."""
    parked = ("" if parked_table is None else
              f" AND NOT EXISTS (SELECT 1 FROM {parked_table} k WHERE k.stage = %(p)s"
              " AND k.subscription_id = e.originator_id)")
    held_table = events_table.rsplit(".", 1)[0] + ".usage_held" if "." in events_table \
        else "usage_held"
    counts_held = projection == "quota"
    target = "(e.v, coalesce(h.journaled, 0))" if counts_held else "(e.v, 0)"
    held = (f" LEFT JOIN {held_table} h ON h.subscription_id = e.originator_id "
            "AND h.stream_version = e.v" if counts_held else "")
    row = conn.execute(
        "SELECT count(*) FROM (SELECT originator_id, max(originator_version) AS v "
        f"FROM {events_table} WHERE originator_id NOT LIKE 'usage-journal-%%' "
        "GROUP BY originator_id) e" + held +
        " LEFT JOIN projection_versions p ON p.projection = %(p)s "
        "AND p.subscription_id = e.originator_id WHERE "
        f"(p.version, {'p.seq' if counts_held else '0'}) IS DISTINCT FROM {target}" + parked,
        {"p": projection}).fetchone()
    conn.commit()
    return int(row[0]) if row else 0
