"""Plan recommendations: which plan fits each subscription, why (in words a person understands),
and what its last closed cycle would have cost on every other plan.

Inputs, kept per subscription from the events (table `recommendation_inputs`): the plan, the
profile (agent template, connected integrations), the trial's usage and the usage of the last
closed cycles. `recommend` is a pure function of those inputs and the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS recommendation_inputs (
    subscription_id text PRIMARY KEY,
    inputs jsonb NOT NULL
);
"""


def load_inputs(cur: psycopg.Cursor[Any], subs: Sequence[str]) -> dict[str, dict[str, Any]]:
    cur.execute("SELECT subscription_id, inputs FROM recommendation_inputs "
                "WHERE subscription_id = ANY(%s)", (list(subs),))
    return {sid: dict(inputs) for sid, inputs in cur.fetchall()}


def save_inputs(cur: psycopg.Cursor[Any], inputs: dict[str, dict[str, Any]]) -> None:
    if inputs:
        cur.execute("INSERT INTO recommendation_inputs SELECT * FROM unnest(%s::text[], "
                    "%s::jsonb[]) ON CONFLICT (subscription_id) DO UPDATE SET "
                    "inputs = EXCLUDED.inputs",
                    (list(inputs), [orjson.dumps(v).decode() for v in inputs.values()]))


def reset(cur: psycopg.Cursor[Any]) -> None:
    cur.execute("DELETE FROM recommendation_inputs")


def read_inputs(conn: psycopg.Connection[Any], subscription_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT inputs FROM recommendation_inputs WHERE subscription_id = %s",
                       (subscription_id,)).fetchone()
    conn.commit()
    return None if row is None else dict(row[0])


