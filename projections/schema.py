"""Every read model's tables and views, created (or upgraded) in one place: under one lock, so
processes starting together do not race on the DDL, and in order (the views read the tables).
"""

from __future__ import annotations

from typing import Any

import psycopg

from projections import parked
from projections.analytics import store as analytics
from projections.invoices import store as invoices
from projections.quota import store as quota
from projections.recommendations import store as recommendations

# The tables a rebuild fills (into a shadow schema, then compared and swapped).
REBUILT_TABLES = (quota.SCHEMA, invoices.SCHEMA, recommendations.SCHEMA, analytics.TABLES)


def create_schema(conn: psycopg.Connection[Any], *more_ddl: str) -> None:
    """The read models' schema, and `more_ddl` of the operations tables (heartbeats,
    dead-letter replays) in the same transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing-read-schema'))")
        for ddl in (*REBUILT_TABLES, parked.DDL, analytics.VIEWS_DDL, *more_ddl):
            conn.execute(ddl)
        analytics.grant_analyst(conn)
