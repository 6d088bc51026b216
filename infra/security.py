"""Least privilege and tenant isolation in PostgreSQL (docs/reliability.md).

- `billing_worker`: what the workers need and no more. The event history (events, snapshots,
  usage ids, hashes, anchors) is append-only for it: SELECT and INSERT, no UPDATE, DELETE or
  TRUNCATE. Input positions (`billing_tracking`) may also be updated, forward only. MAINTAIN
  on the events table lets it take the write lock that keeps the notification log in commit
  order (LOCK TABLE ... EXCLUSIVE needs it; it changes no row). Read models: full DML, as
  rebuilding them needs.
- `billing_tenant`: the tenant-scoped read role. Row-level security shows each member role the
  rows of its own account(s) only, as listed in `tenant_roles`; nothing of the event store.
- `billing_analyst` (projections/analytics.py): the `billing_read` views only.

Run by the owner of the tables (`billing roles setup`); idempotent.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

WORKER_ROLE = "billing_worker"
TENANT_ROLE = "billing_tenant"

EVENT_TABLES = ("billing_events", "billing_snapshots", "billing_tracking", "usage_dedup",
                "event_hashes", "event_anchors")
READ_MODELS = ("quota", "usage_daily", "usage_by_member", "projection_versions",
               "projection_positions", "invoices", "invoice_lines", "invoice_drafts",
               "recommendation_inputs", "subscription_changes", "dlq_replays",
               "worker_heartbeats", "parked_events")
# What a tenant may read, and how a row is known to be its own.
TENANT_POLICIES = {
    "quota": "account IN (SELECT account FROM tenant_roles WHERE role = current_user)",
    "invoices": "account IN (SELECT account FROM tenant_roles WHERE role = current_user)",
    "invoice_lines": "number IN (SELECT number FROM invoices)",  # invoices is filtered too
    "usage_daily": "subscription_id IN (SELECT subscription_id FROM quota)",
    "usage_by_member": "subscription_id IN (SELECT subscription_id FROM quota)",
    "tenant_roles": "role = current_user",
}


def setup_roles(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing-roles'))")
        for role in (WORKER_ROLE, TENANT_ROLE):
            conn.execute(sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {0}) THEN "
                "CREATE ROLE {1} NOLOGIN; END IF; END $$").format(sql.Literal(role),
                                                                   sql.Identifier(role)))
        conn.execute("CREATE TABLE IF NOT EXISTS tenant_roles (role name NOT NULL, "
                     "account text NOT NULL, PRIMARY KEY (role, account))")
        worker, tenant = sql.Identifier(WORKER_ROLE), sql.Identifier(TENANT_ROLE)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {0}, {1}").format(worker, tenant))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {0}")
                     .format(worker))
        for table in EVENT_TABLES:
            name = sql.Identifier(table)
            conn.execute(sql.SQL("REVOKE ALL ON {0} FROM {1}, {2}").format(name, worker, tenant))
            conn.execute(sql.SQL("GRANT SELECT, INSERT ON {0} TO {1}").format(name, worker))
        conn.execute(sql.SQL("GRANT MAINTAIN ON billing_events TO {0}").format(worker))
        # Input positions (one row per consumer and partition) only move forward: the
        # library's upsert updates a row only to a higher position. No DELETE.
        conn.execute(sql.SQL("GRANT UPDATE ON billing_tracking TO {0}").format(worker))
        for table in READ_MODELS:
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {0} TO {1}")
                         .format(sql.Identifier(table), worker))
        conn.execute(sql.SQL("GRANT SELECT ON tenant_roles TO {0}").format(worker))
        for table, rule in TENANT_POLICIES.items():
            name = sql.Identifier(table)
            conn.execute(sql.SQL("GRANT SELECT ON {0} TO {1}").format(name, tenant))
            conn.execute(sql.SQL("ALTER TABLE {0} ENABLE ROW LEVEL SECURITY").format(name))
            for policy, grantee, using in ((f"{table}_tenant", tenant, rule),
                                           (f"{table}_worker", worker, "true")):
                conn.execute(sql.SQL("DROP POLICY IF EXISTS {0} ON {1}").format(
                    sql.Identifier(policy), name))
                conn.execute(sql.SQL("CREATE POLICY {0} ON {1} TO {2} USING ({3})").format(
                    sql.Identifier(policy), name, grantee, sql.SQL(using)))


def add_tenant(conn: psycopg.Connection[Any], role: str, account: str,
               password: str | None = None) -> None:
    """A login role that sees `account`'s rows only (call again to give it more accounts)."""
    with conn.transaction():
        _login_role(conn, role, password, TENANT_ROLE)
        conn.execute("INSERT INTO tenant_roles VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (role, account))


def add_worker_login(conn: psycopg.Connection[Any], role: str,
                     password: str | None = None) -> None:
    """A login role for worker processes, member of `billing_worker`."""
    with conn.transaction():
        _login_role(conn, role, password, WORKER_ROLE)


def _login_role(conn: psycopg.Connection[Any], role: str, password: str | None,
                member_of: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE ROLE {0} LOGIN").format(sql.Identifier(role)))
    if password:
        conn.execute(sql.SQL("ALTER ROLE {0} PASSWORD {1}").format(
            sql.Identifier(role), sql.Literal(password)))
    conn.execute(sql.SQL("GRANT {0} TO {1}").format(sql.Identifier(member_of),
                                                    sql.Identifier(role)))
