"""Analytics views over the read models, and the analyst role that can read only them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from domain.contracts.commands import parse_command
from infra.wiring.engine import Engine
from projections.analytics import store as analytics
from tests.integration.helpers import invoice_everything

pytestmark = pytest.mark.integration


def test_mrr_movements_and_revenue_views_and_the_read_only_analyst(engine: Engine) -> None:
    app = engine.app

    def run(cid: str, ctype: str, sub: str, at: str, **fields: object) -> None:
        app.handle(parse_command({"id": cid, "type": ctype, "subscription": sub, "at": at,
                                  **fields}))

    run("a1", "subscribe", "a", "2026-11-01T00:00:00+00:00", plan="basic")
    run("b1", "subscribe", "b", "2026-11-01T00:00:00+00:00", plan="scale")
    run("c1", "subscribe", "c", "2026-11-01T00:00:00+00:00", plan="basic",
        period="month")
    run("a2", "change_plan", "a", "2026-11-15T00:00:00+00:00", plan="scale")  # upgrade
    run("b2", "change_plan", "b", "2026-11-20T00:00:00+00:00", plan="basic")  # downgrade
    run("c2", "cancel", "c", "2026-11-10T00:00:00+00:00")  # churn at the period end
    app.advance_clock(datetime(2026, 12, 2, tzinfo=UTC),
                      app.recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine)

    with psycopg.connect(engine.database_url) as conn:
        _, movements = analytics.report(conn, "movements_by_month")
        _, mrr = analytics.report(conn, "mrr_by_plan_month")
        _, revenue = analytics.report(conn, "revenue_by_invoice_month")
        _, active = analytics.report(conn, "active_subscriptions")
    nov, dec = date(2026, 11, 1), date(2026, 12, 1)
    assert (nov, 3, 1, 0, 0, 0, 0) in movements  # three new, one upgrade
    assert (dec, 0, 0, 1, 1, 0, 0) in movements  # the downgrade and the churn apply Dec 1
    mrr_dec = {plan: m for month, plan, cur, m, arr, paying in mrr if month == dec}
    # a: scale 490; b: basic 190 (downgraded); c: churned (no plan catalog free -> 0)
    assert mrr_dec == {"scale": Decimal("490.0000"), "basic": Decimal("190.0000")}
    assert dict((m, (a, p)) for m, a, p in active)[dec] == (2, 2)
    assert sum(row[4] for row in revenue) > 0  # net revenue invoiced

    with psycopg.connect(engine.database_url) as conn:
        conn.execute(f"SET ROLE {analytics.ANALYST_ROLE}")
        rows = conn.execute("SELECT count(*) FROM billing_read.mrr_by_plan_month").fetchone()
        assert rows is not None and rows[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM invoices")
    with psycopg.connect(engine.database_url) as conn:
        conn.execute(f"SET ROLE {analytics.ANALYST_ROLE}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM billing_read.subscription_changes")


def test_no_amount_is_ever_printed_in_scientific_notation(engine: Engine) -> None:
    """Reports in every format and the catalog's JSON printed 3.8E+2 and 5E+1."""
    import os
    import re
    import subprocess
    import sys

    app = engine.app
    for n, plan in enumerate(("basic", "scale", "basic")):
        app.handle(parse_command({"id": f"s{n}", "type": "subscribe", "subscription": f"e{n}",
                                  "at": "2026-11-01T00:00:00+00:00", "plan": plan}))
    app.advance_clock(datetime(2026, 12, 2, tzinfo=UTC),
                      app.recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine)
    env = {**os.environ, **engine.subprocess_env()}
    exponent = re.compile(r"\d[eE][+-]?\d")
    outputs = []
    for view in analytics.VIEWS:
        for fmt in ("table", "csv", "json"):
            result = subprocess.run([sys.executable, "-m", "infra.cli", "report", view,
                                     "--format", fmt], capture_output=True, text=True,
                                    timeout=60, env=env)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
    catalog = subprocess.run([sys.executable, "-m", "infra.cli", "catalog", "--json"],
                             capture_output=True, text=True, timeout=60, env=env)
    outputs.append(catalog.stdout)
    assert '"price": "190.00"' in catalog.stdout
    found = [m.group(0) for text in outputs for m in exponent.finditer(text)]
    assert not found, found


def test_terminations_pauses_and_resumes_move_mrr(engine: Engine) -> None:
    app = engine.app

    def run(cid: str, ctype: str, sub: str, at: str, **fields: object) -> None:
        app.handle(parse_command({"id": cid, "type": ctype, "subscription": sub, "at": at,
                                  **fields}))

    run("d1", "subscribe", "d", "2026-11-01T00:00:00+00:00", plan="basic", period="month")
    run("e1", "subscribe", "e", "2026-11-01T00:00:00+00:00", plan="basic", period="month")
    run("d2", "terminate", "d", "2026-11-20T00:00:00+00:00")  # ends at once: churn in Nov
    run("e2", "pause", "e", "2026-11-05T00:00:00+00:00")  # from Dec 1
    app.advance_clock(datetime(2026, 12, 10, tzinfo=UTC), ["d", "e"])
    run("e3", "resume", "e", "2027-01-15T00:00:00+00:00")
    run("e4", "grant_credits", "e", "2027-01-16T00:00:00+00:00", amount="100.00",
        purchased=True)
    invoice_everything(engine)
    with psycopg.connect(engine.database_url) as conn:
        _, movements = analytics.report(conn, "movements_by_month")
        _, active = analytics.report(conn, "active_subscriptions")
    nov, dec, jan = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)
    assert {row[0]: row[1:] for row in movements} == {
        nov: (2, 0, 0, 1, 0, 0), dec: (0, 0, 0, 0, 1, 0), jan: (0, 0, 0, 0, 0, 1)}
    # the paused one stays a customer (active) without paying; the terminated one is gone
    assert {m: (a, p) for m, a, p in active} == {nov: (1, 1), dec: (1, 0), jan: (1, 1)}
    with psycopg.connect(engine.database_url) as conn:
        _, revenue = analytics.report(conn, "revenue_by_invoice_month")
    january = next(row for row in revenue if row[0] == jan)
    # credits sold are not revenue (the invoices they pay are): only e's resumed period
    assert (january[4], january[7]) == (Decimal("190.00"), Decimal("100.00"))
