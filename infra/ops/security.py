"""Least privilege and tenant isolation in PostgreSQL (docs/reliability.md).

- `billing_worker`: what the workers need and no more. The event history (events, snapshots,
  usage ids, hashes, anchors) is append-only for it: SELECT and INSERT, no UPDATE, DELETE or
  TRUNCATE. Input positions (`billing_tracking`) move only through `billing_move_position`, a
  SECURITY DEFINER function that moves them forward and never back (no INSERT or UPDATE on the
  table; a trigger refuses a backward move even by the owner). Usage ids leave the ledger only
  through `billing_prune_usage`, which removes those whose window has closed. MAINTAIN
  on the events table lets it take the write lock that keeps the notification log in commit
  order (LOCK TABLE ... EXCLUSIVE needs it; it changes no row). Read models: full DML, as
  rebuilding them needs.
- `billing_tenant`: the tenant-scoped read role. Row-level security shows each member role the
  rows of its own account(s) only, as listed in `tenant_roles`; nothing of the event store.
- `billing_analyst` (projections/analytics/store.py): the `billing_read` views only.
- `billing_api`: what `billing serve` needs (docs/api.md): it reads the event store and the
  read models and publishes to the topics, so SELECT on them, every row; of its own tables,
  SELECT on `api_keys` (keys are made and revoked by the owner's CLI) and SELECT, INSERT on
  `portal_secrets` (the first signing secret is made on first use). Nothing it can write
  changes history or a read model.

Run by the owner of the tables (`billing roles setup`); idempotent.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from infra.kafka import topic_identity

WORKER_ROLE = "billing_worker"
TENANT_ROLE = "billing_tenant"
API_ROLE = "billing_api"

EVENT_TABLES = ("billing_events", "billing_snapshots", "billing_tracking", "usage_dedup",
                "event_hashes", "event_anchors", "command_outcomes")
READ_MODELS = ("quota", "usage_daily", "usage_by_member", "usage_by_group",
               "unit_credit_balances", "quota_unmetered",
               "projection_versions",
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
    "usage_by_group": "subscription_id IN (SELECT subscription_id FROM quota)",
    "unit_credit_balances": "subscription_id IN (SELECT subscription_id FROM quota)",
    "quota_unmetered": "account IN (SELECT account FROM tenant_roles WHERE role = current_user)",
    "tenant_roles": "role = current_user",
}


# What PostgreSQL lets every login do that tells one tenant about the others, or stores
# what it likes: large objects (any role may create them), and the statistics views and
# functions that count every table's rows. Only a superuser can take them from PUBLIC; the
# monitoring role and the workers keep the statistics.
LARGE_OBJECT_FUNCTIONS = ("lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)",
                          "lo_import(text)", "lo_import(text, oid)", "lo_put(oid, bigint, bytea)",
                          "lowrite(integer, bytea)")
STATISTICS_VIEWS = ("pg_stat_all_tables", "pg_stat_user_tables", "pg_stat_sys_tables",
                    "pg_stat_xact_all_tables", "pg_stat_xact_user_tables",
                    "pg_statio_all_tables", "pg_statio_user_tables", "pg_stat_all_indexes",
                    "pg_stat_user_indexes")
STATISTICS_FUNCTIONS = tuple(f"pg_stat_get_{name}(oid)" for name in (
    "live_tuples", "dead_tuples", "tuples_inserted", "tuples_updated", "tuples_deleted",
    "tuples_hot_updated", "tuples_returned", "tuples_fetched", "numscans",
    "mod_since_analyze", "ins_since_vacuum", "blocks_fetched", "blocks_hit"))


def close_side_channels(conn: psycopg.Connection[Any]) -> list[str]:
    """Take large objects and row-count statistics from PUBLIC (superuser only); returns
    what stays open, for the operator."""
    remaining = ["planner estimates (pg_class.reltuples) and EXPLAIN ANALYZE row counts of "
                 "tables a tenant may read: PostgreSQL shows them to every login"]
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                             ).fetchone()
    if not (superuser and superuser[0]):
        return [*remaining, "large objects and statistics views: need a superuser to close "
                            "(run `billing roles setup` as one)"]
    keep = sql.SQL("pg_monitor, {0}").format(sql.Identifier(WORKER_ROLE))
    for function in (*LARGE_OBJECT_FUNCTIONS, *STATISTICS_FUNCTIONS):
        conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {0} FROM PUBLIC").format(
            sql.SQL(function)))
    for function in STATISTICS_FUNCTIONS:
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {0} TO {1}").format(
            sql.SQL(function), keep))
    for view in STATISTICS_VIEWS:
        conn.execute(sql.SQL("REVOKE SELECT ON {0} FROM PUBLIC").format(sql.Identifier(view)))
        conn.execute(sql.SQL("GRANT SELECT ON {0} TO {1}").format(sql.Identifier(view), keep))
    return remaining


def setup_roles(conn: psycopg.Connection[Any], attempts: int = 100) -> list[str]:
    """Create or correct the roles, privileges and policies. Only what differs from what is
    wanted is changed, so a second run takes no table lock; a change that would wait for a
    lock (a tenant's open transaction) gives up after LOCK_TIMEOUT and is retried, so workers
    never queue behind it for longer than that."""
    for attempt in range(attempts):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                _setup_roles(conn)
                return close_side_channels(conn)
        except psycopg.errors.LockNotAvailable:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 1.0))
    raise AssertionError("unreachable")


LOCK_TIMEOUT = "200ms"


def _setup_roles(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing-roles'))")
    for role in (WORKER_ROLE, TENANT_ROLE, API_ROLE):
        conn.execute(sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {0}) THEN "
            "CREATE ROLE {1} NOLOGIN; END IF; END $$").format(sql.Literal(role),
                                                               sql.Identifier(role)))
    conn.execute("CREATE TABLE IF NOT EXISTS tenant_roles (role name NOT NULL, "
                 "account text NOT NULL, PRIMARY KEY (role, account))")
    worker, tenant = sql.Identifier(WORKER_ROLE), sql.Identifier(TENANT_ROLE)
    api = sql.Identifier(API_ROLE)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {0}, {1}, {2}").format(
        worker, tenant, api))
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {0}")
                 .format(worker))
    for table in EVENT_TABLES:
        _table_privileges(conn, table, WORKER_ROLE, {"SELECT", "INSERT"})
        _table_privileges(conn, table, TENANT_ROLE, set())
    # Positions move only through billing_move_position (forward only; see
    # infra/eventstore/recorder.py).
    _table_privileges(conn, "billing_tracking", WORKER_ROLE, {"SELECT"})
    _table_privileges(conn, "billing_events", WORKER_ROLE, {"SELECT", "INSERT", "MAINTAIN"})
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION billing_move_position(text, bigint) "
                         "TO {0}").format(worker))
    # The ledger forgets ids only through billing_prune_usage (closed windows only).
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION billing_prune_usage(text[], timestamptz) "
                         "TO {0}").format(worker))
    for table in READ_MODELS:
        _table_privileges(conn, table, WORKER_ROLE, {"SELECT", "INSERT", "UPDATE", "DELETE"})
    _table_privileges(conn, "tenant_roles", WORKER_ROLE, {"SELECT"})
    # Which topics the positions belong to: read by every worker at start, written only by
    # the owner (infra/kafka/topic_identity.py).
    conn.execute(topic_identity.DDL)
    _table_privileges(conn, "kafka_topic_identities", WORKER_ROLE, {"SELECT"})
    _table_privileges(conn, "kafka_topic_identities", TENANT_ROLE, set())
    for table, rule in TENANT_POLICIES.items():
        _table_privileges(conn, table, TENANT_ROLE, {"SELECT"})
        _row_level_security(conn, table)
        for policy, grantee, using in ((f"{table}_tenant", TENANT_ROLE, rule),
                                       (f"{table}_worker", WORKER_ROLE, "true"),
                                       (f"{table}_api", API_ROLE, "true")):
            _policy(conn, table, policy, grantee, using)
    _api_privileges(conn)


def _api_privileges(conn: psycopg.Connection[Any]) -> None:
    from infra.api import keys
    from infra.portal import links

    conn.execute(keys.SCHEMA)
    conn.execute(links.SCHEMA)
    for table in (*EVENT_TABLES, *READ_MODELS, "kafka_topic_identities", "api_keys"):
        _table_privileges(conn, table, API_ROLE, {"SELECT"})
    _table_privileges(conn, "tenant_roles", API_ROLE, set())
    _table_privileges(conn, "portal_secrets", API_ROLE, {"SELECT", "INSERT"})
    conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE portal_secrets_id_seq TO {0}").format(
        sql.Identifier(API_ROLE)))


def _table_privileges(conn: psycopg.Connection[Any], table: str, role: str,
                      wanted: set[str]) -> None:
    """Grant and revoke so that `role` holds exactly `wanted` on `table` (directly)."""
    held = {row[0] for row in conn.execute(
        "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = %s::regclass AND a.grantee = %s::regrole", (table, role)).fetchall()}
    name, grantee = sql.Identifier(table), sql.Identifier(role)
    if held - wanted:
        conn.execute(sql.SQL("REVOKE {0} ON {1} FROM {2}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in sorted(held - wanted)), name, grantee))
    if wanted - held:
        conn.execute(sql.SQL("GRANT {0} ON {1} TO {2}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in sorted(wanted - held)), name, grantee))


def _row_level_security(conn: psycopg.Connection[Any], table: str) -> None:
    enabled = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass",
                           (table,)).fetchone()
    if not (enabled and enabled[0]):
        conn.execute(sql.SQL("ALTER TABLE {0} ENABLE ROW LEVEL SECURITY").format(
            sql.Identifier(table)))


def _policy(conn: psycopg.Connection[Any], table: str, policy: str, grantee: str,
            using: str) -> None:
    """(Re)create a policy only when it is missing or says something else: each change
    takes the table's strongest lock. Its rule is kept as its comment to compare with."""
    found = conn.execute(
        "SELECT obj_description(p.oid, 'pg_policy'), "
        "array(SELECT rolname FROM pg_roles WHERE oid = ANY(p.polroles)) "
        "FROM pg_policy p WHERE p.polrelid = %s::regclass AND p.polname = %s",
        (table, policy)).fetchone()
    if found is not None and found[0] == using and list(found[1]) == [grantee]:
        return
    name, ident = sql.Identifier(table), sql.Identifier(policy)
    conn.execute(sql.SQL("DROP POLICY IF EXISTS {0} ON {1}").format(ident, name))
    conn.execute(sql.SQL("CREATE POLICY {0} ON {1} TO {2} USING ({3})").format(
        ident, name, sql.Identifier(grantee), sql.SQL(using)))
    conn.execute(sql.SQL("COMMENT ON POLICY {0} ON {1} IS {2}").format(
        ident, name, sql.Literal(using)))


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


def add_api_login(conn: psycopg.Connection[Any], role: str,
                  password: str | None = None) -> None:
    """A login role for `billing serve`, member of `billing_api`."""
    with conn.transaction():
        _login_role(conn, role, password, API_ROLE)


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
