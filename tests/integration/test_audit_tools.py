"""Auditor tools on real data: history export, state as of a moment, invoice explanation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from domain.contracts.commands import parse_command
from infra.ops.audit import explain_invoice, history, state_summary, version_as_of
from infra.wiring.engine import Engine
from projections.invoices import store as invoices
from tests.integration.helpers import ingest_all, invoice_everything, publish, usage

pytestmark = pytest.mark.integration


def journey(engine: Engine) -> None:
    app = engine.app

    def run(cid: str, ctype: str, at: str, **fields: object) -> None:
        app.handle(parse_command({"id": cid, "type": ctype, "subscription": "sub-x", "at": at,
                                  **fields}))

    run("c1", "subscribe", "2026-11-01T00:00:00+00:00", plan="basic", account="acme",
        customer={"name": "Acme AS", "country": "NO"})
    def use(days: range) -> None:
        ingest_all(engine, publish(engine, [
            usage(f"u{n}", "sub-x", "conversations", 3000, at=f"2026-11-{n:02d}T10:00:00+00:00")
            for n in days]))

    use(range(2, 12))  # 30,000 conversations before the upgrade
    run("c2", "change_plan", "2026-11-16T00:00:00+00:00", plan="scale")
    use(range(17, 27))  # 30,000 after it
    app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC),
                      app.recorder.subscription_ids())  # type: ignore[attr-defined]
    invoice_everything(engine)


def test_history_state_as_of_and_invoice_explanation(engine: Engine) -> None:
    journey(engine)
    with psycopg.connect(engine.database_url) as conn:
        events = history(engine.app, conn, subscription="sub-x")
        by_account = history(engine.app, conn, account="acme")
        everything = history(engine.app, conn)
    types = [e["type"] for e in events]
    assert types[0] == "Subscribed" and "PlanUpgraded" in types and "InvoiceIssued" in types
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["recorded_at"] and e["time"] for e in events)
    assert by_account == events
    assert len(everything) > len(events)  # also the catalog, the clock and the series
    orjson.loads(orjson.dumps(everything, default=str))  # exportable as JSON lines

    # State before and after the upgrade, by time and by version.
    before = version_as_of(engine.app, "sub-x", datetime(2026, 11, 15, tzinfo=UTC))
    after = version_as_of(engine.app, "sub-x", datetime(2026, 11, 20, tzinfo=UTC))
    assert state_summary(engine.app.load_as_stored("sub-x", before))["plan"] == "basic"
    upgraded = state_summary(engine.app.load_as_stored("sub-x", after))
    assert upgraded["plan"] == "scale"
    assert upgraded["allowances"]["conversations"]["used"] == "30000"  # before the 17th

    # The upgrade's invoice (its proration, issued at once), then December's (November's
    # overage and December's fee): each line explained by the event that charged it.
    with psycopg.connect(engine.database_url) as conn:
        numbers = [r["number"] for r in invoices.list_invoices(conn, "sub-x")]
        documents = [invoices.read_invoice(conn, number) for number in numbers[-2:]]
    kinds: dict[str, dict[str, Any]] = {}
    for document in documents:
        assert document is not None
        explained = explain_invoice(engine.app, document)
        assert explained["reproduced"] is True
        assert explained["recomputed"]["total"] == document["total"]
        assert all(line["catalog_version"] == "2026-11-1" for line in explained["lines"])
        kinds.update({line["kind"]: line for line in explained["lines"]})
    assert {"proration_credit", "proration_charge", "plan"} <= set(kinds)
    assert kinds["proration_charge"]["event"]["type"] == "PlanUpgraded"
    assert kinds["plan"]["event"]["type"] == "CycleRolled"

    env = {**os.environ, "BILLING_STACK": "external",
           "BILLING_DATABASE_URL": engine.database_url,
           "BILLING_KAFKA_BOOTSTRAP": engine.kafka_bootstrap}
    verified = subprocess.run([sys.executable, "-m", "infra.cli", "verify", "--json"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["clean"] is True
    shown = subprocess.run([sys.executable, "-m", "infra.cli", "invoice", "explain",
                            numbers[-1]], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and "reproduced to the cent" in shown.stdout
