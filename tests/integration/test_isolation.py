"""Tenant isolation by row-level security, the analyst's read-only views, and the workers'
append-only access to the event history, checked by connecting as each role."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest

from infra.eventstore.recorder import open_application
from infra.ops import security
from infra.wiring.engine import Engine
from projections.analytics import store as analytics
from tests.integration.helpers import (
    ingest_all,
    invoice_everything,
    project_all,
    publish,
    relay_all,
    usage,
)

pytestmark = pytest.mark.integration


PASSWORD = "a-test-login-password"  # the embedded server asks every login for one


def _as(url: str, role: str) -> str:
    return urlunparse(urlparse(url)._replace(netloc=f"{role}:{PASSWORD}@"
                                                    f"{urlparse(url).hostname}:"
                                                    f"{urlparse(url).port}"))


def _all_refused(url: str, statements: tuple[str, ...]) -> None:
    """Each statement, run as the login of `url`, is refused for want of privilege."""
    with psycopg.connect(url) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


@pytest.fixture
def two_tenants(engine: Engine) -> Engine:
    from datetime import UTC, datetime
    at = datetime(2026, 11, 1, tzinfo=UTC)
    engine.app.subscribe_many([("sub-a1", "acct-a", "basic"), ("sub-a2", "acct-a", "basic"),
                               ("sub-b1", "acct-b", "basic")], at)
    ingest_all(engine, publish(engine, [usage("u1", "sub-a1", "tokens", 5),
                                        usage("u2", "sub-b1", "tokens", 7, member="m-b")]))
    relay_all(engine)
    project_all(engine)
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        security.setup_roles(conn)
        security.add_tenant(conn, "tenant_a", "acct-a", PASSWORD)
        security.add_tenant(conn, "tenant_b", "acct-b", PASSWORD)
        security.add_worker_login(conn, "worker_1", PASSWORD)
    return engine


def test_a_tenant_sees_only_its_own_rows(two_tenants: Engine) -> None:
    with psycopg.connect(_as(two_tenants.database_url, "tenant_a")) as conn:
        assert {r[0] for r in conn.execute("SELECT subscription_id FROM quota")} == {
            "sub-a1", "sub-a2"}
        assert {r[0] for r in conn.execute("SELECT account FROM invoices")} == {"acct-a"}
        lines = conn.execute("SELECT count(*) FROM invoice_lines l JOIN invoices i "
                             "USING (number)").fetchone()
        all_lines = conn.execute("SELECT count(*) FROM invoice_lines").fetchone()
        assert lines == all_lines and all_lines is not None and all_lines[0] > 0
        assert {r[0] for r in conn.execute("SELECT subscription_id FROM usage_daily")} == {
            "sub-a1"}
        assert conn.execute("SELECT count(*) FROM usage_by_member").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM tenant_roles").fetchone() == (1,)
        # Asking for another tenant's rows by name returns nothing.
        assert conn.execute("SELECT * FROM quota WHERE subscription_id = 'sub-b1'").fetchall() \
            == []
        for forbidden in ("billing_events", "usage_dedup", "projection_positions",
                          "billing_read.revenue_by_month"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {forbidden}")
            conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE quota SET used = 0")
    with psycopg.connect(_as(two_tenants.database_url, "tenant_b")) as conn:
        assert {r[0] for r in conn.execute("SELECT subscription_id FROM quota")} == {"sub-b1"}
        assert conn.execute("SELECT member FROM usage_by_member").fetchall() == [("m-b",)]


def test_the_analyst_reads_views_only(two_tenants: Engine) -> None:
    with psycopg.connect(two_tenants.database_url, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                     "'analyst_1') THEN CREATE ROLE analyst_1 LOGIN; END IF; END $$")
        conn.execute(f"ALTER ROLE analyst_1 PASSWORD '{PASSWORD}'")
        conn.execute(f"GRANT {analytics.ANALYST_ROLE} TO analyst_1")
    with psycopg.connect(_as(two_tenants.database_url, "analyst_1")) as conn:
        assert conn.execute("SELECT count(*) FROM billing_read.subscription_changes"
                            ).fetchone() == (3,)
        for statement in ("SELECT * FROM quota", "SELECT * FROM billing_events",
                          "DELETE FROM billing_read.subscription_changes"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_workers_role_appends_events_but_cannot_alter_history(
        two_tenants: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _as(two_tenants.database_url, "worker_1")
    # A worker on this role does its job: usage recorded, events appended, quota projected.
    monkeypatch.setenv("BILLING_MIGRATE", "n")
    worker = Engine.open(dataclasses.replace(two_tenants.settings, migrate=False), url,
                         two_tenants.kafka_bootstrap)
    try:
        ingest_all(worker, publish(worker, [usage("u3", "sub-a1", "tokens", 11)]))
        relay_all(worker)
        project_all(worker)
    finally:
        worker.close()
    stored = open_application(two_tenants.database_url, two_tenants.app.catalog)
    assert stored.load_as_stored("sub-a1").used["tokens"] == Decimal(16)
    stored.close()
    _all_refused(url, ("UPDATE billing_events SET state = state",
                       "DELETE FROM billing_events",
                       "TRUNCATE billing_events",
                       "UPDATE usage_dedup SET usage_id = 'x'",
                       "DELETE FROM usage_dedup",
                       "DELETE FROM billing_tracking",
                       "UPDATE billing_tracking SET notification_id = notification_id + 9",
                       "UPDATE billing_tracking SET notification_id = notification_id - 1",
                       "INSERT INTO billing_tracking VALUES ('x', 99)",
                       "DELETE FROM event_hashes",
                       "DELETE FROM billing_snapshots",
                       "DELETE FROM kafka_topic_identities",
                       "UPDATE kafka_topic_identities SET identity = 'x'",
                       "ALTER TABLE billing_events DISABLE TRIGGER ALL"))
    # Through the engine's own path, a position moves forward only.
    with psycopg.connect(url) as conn:
        name, position = conn.execute("SELECT application_name, notification_id FROM "
                                      "billing_tracking LIMIT 1").fetchone() or ("", 0)
        assert conn.execute("SELECT * FROM billing_move_position(%s, %s)",
                            (name, position - 1)).fetchall() == []
        conn.commit()
        assert conn.execute("SELECT notification_id FROM billing_tracking WHERE "
                            "application_name = %s", (name,)).fetchone() == (position,)
    # The ledger forgets only ids whose window has closed, by the time given and by the wall
    # clock: asked for a time far ahead, the worker's function keeps an id whose window is
    # still open today.
    with psycopg.connect(two_tenants.database_url, autocommit=True) as owner:
        owner.execute("INSERT INTO usage_dedup VALUES ('sub-a1', 'open', now() + '1 day')")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT billing_prune_usage(ARRAY['sub-a1'], "
                            "'2026-12-01T00:30:00Z')").fetchone() == (0,)  # grace not over
        assert conn.execute("SELECT billing_prune_usage(ARRAY['sub-a1'], "
                            "'9000-01-01T00:00:00Z')").fetchone()[0] > 0
        assert conn.execute("SELECT usage_id FROM usage_dedup WHERE subscription_id = "
                            "'sub-a1' AND until IS NOT NULL").fetchall() == [("open",)]


def test_the_api_role_serves_but_cannot_change_history_keys_or_read_models(
        two_tenants: Engine) -> None:
    from infra.api import keys
    from tests.integration.api_server import running_api

    with psycopg.connect(two_tenants.database_url, autocommit=True) as conn:
        security.add_api_login(conn, "api_1", PASSWORD)
        token = keys.create(conn, account="acct-a", admin=False).token
        operator = keys.create(conn, account=None, admin=True).token
    url = _as(two_tenants.database_url, "api_1")
    served = Engine.open(dataclasses.replace(two_tenants.settings, migrate=False), url,
                         two_tenants.kafka_bootstrap, adopt_topics=False)
    try:
        with running_api(served) as api:
            tenant = api.client(token)
            check = tenant.get("/v1/subscriptions/sub-a1/entitlements/tokens")
            assert check.status_code == 200 and check.json()["used"] == "5", check.text
            assert tenant.get("/v1/subscriptions/sub-a1/invoices").status_code == 200
            assert tenant.get("/v1/subscriptions/sub-b1").status_code == 404
            sent = tenant.post("/v1/usage", content=usage("u9", "sub-a1", "tokens", 1)[1],
                               headers={"Content-Type": "application/json"})
            assert sent.status_code == 202 and sent.json()["status"] == "accepted", sent.text
            assert api.client(operator).get("/v1/subscriptions/sub-b1").status_code == 200
            from infra.portal import links
            with api.ctx.pool.connection() as conn:
                assert links.secrets_of(conn)  # made on first use, by this role
    finally:
        served.close()
    _all_refused(url, ("INSERT INTO billing_events SELECT * FROM billing_events LIMIT 1",
                       "UPDATE billing_events SET state = state",
                       "INSERT INTO usage_dedup SELECT * FROM usage_dedup LIMIT 1",
                       "UPDATE quota SET used = 0",
                       "DELETE FROM invoices",
                       "UPDATE api_keys SET revoked_at = NULL",
                       "INSERT INTO api_keys (key_id, secret_sha256, admin) "
                       "VALUES ('k', '', true)",
                       "DELETE FROM portal_secrets",
                       "UPDATE portal_secrets SET secret = ''",
                       "SELECT * FROM tenant_roles",
                       "SELECT * FROM billing_move_position('x', 1)",
                       "SELECT billing_prune_usage(ARRAY['x'], now())"))


def test_a_backward_move_is_refused_even_for_the_owner(two_tenants: Engine) -> None:
    with psycopg.connect(two_tenants.database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="may only move forward"):
            conn.execute("UPDATE billing_tracking SET notification_id = notification_id - 1")
        conn.rollback()


def test_tenants_cannot_move_positions_store_large_objects_or_hear_writes(
        two_tenants: Engine) -> None:
    with psycopg.connect(_as(two_tenants.database_url, "tenant_a"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM billing_move_position('x', 1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT lo_from_bytea(0, 'payload')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT relname, n_live_tup FROM pg_stat_user_tables")
        conn.execute("LISTEN billing_events")
        ingest_all(two_tenants, publish(two_tenants, [usage("u9", "sub-b1", "tokens", 1)]))
        assert list(conn.notifies(timeout=1.0, stop_after=1)) == []


def test_role_setup_changes_nothing_and_waits_for_no_lock_when_all_is_in_place(
        two_tenants: Engine) -> None:
    """A tenant holds a read open on quota; setting the roles up again takes no lock that
    would queue the projector behind it, and finishes."""
    import threading
    import time

    with psycopg.connect(_as(two_tenants.database_url, "tenant_a")) as tenant:
        tenant.execute("SELECT count(*) FROM quota").fetchone()  # its transaction stays open
        done = threading.Event()

        def again() -> None:
            with psycopg.connect(two_tenants.database_url) as conn:
                security.setup_roles(conn)
            done.set()

        threading.Thread(target=again, daemon=True).start()
        assert done.wait(20)
        with psycopg.connect(two_tenants.database_url) as writer:
            writer.execute("SET lock_timeout = '2s'")
            writer.execute("UPDATE quota SET used = used WHERE false")  # not queued
        started = time.monotonic()
        tenant.rollback()
        assert time.monotonic() - started < 5


def test_the_embedded_server_asks_every_login_for_its_password(engine: Engine) -> None:
    import os
    import stat

    from infra.config import Settings

    url = urlparse(engine.database_url)
    if os.environ.get("BILLING_TEST_STACK", "embedded") != "embedded":
        pytest.skip("an external server's authentication is its operator's")
    without = urlunparse(url._replace(netloc=f"{url.username}@{url.hostname}:{url.port}"))
    wrong = urlunparse(url._replace(netloc=f"{url.username}:guess@{url.hostname}:{url.port}"))
    for attempt in (without, wrong):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(attempt, connect_timeout=5).close()
    kept = Settings.from_env().data_dir / f"stack-{os.getpid()}" / "postgres.password"
    assert kept.read_text() == url.password
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
