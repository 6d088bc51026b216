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
