"""The README's commands, run as a user would: `billing demo`, `usage publish`, `quota`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import (
    T0,
    ingest_all,
    project_all,
    relay_all,
    subscribe,
)

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_demo_runs_the_spine_on_its_own_embedded_stack(tmp_path: Path) -> None:
    result = _cli("demo", "--subscriptions", "50", "--events", "4000", "--json",
                  "--out", str(tmp_path / "out"),  # never the user's out/
                  env={"BILLING_DATA_DIR": str(tmp_path), "BILLING_STACK": "embedded"})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert summary["usage_accepted"] == 4000
    assert summary["duplicates_ignored"] == summary["duplicates_published"] == 120
    assert summary["dead_lettered"] == 10
    assert summary["quota_matches_input"] is True
    assert "quota read model (sample)" in result.stdout
    assert not list(tmp_path.glob("stack-*"))  # the stack was stopped and removed
    assert list((tmp_path / "out").glob("INV-*.pdf"))


def _external(engine: Engine) -> dict[str, str]:
    """The CLI's environment for the engine's stack."""
    return {
        "BILLING_STACK": "external",
        "BILLING_DATABASE_URL": engine.database_url,
        "BILLING_KAFKA_BOOTSTRAP": engine.kafka_bootstrap,
        "BILLING_TOPIC_PREFIX": engine.settings.topics.usage.removesuffix("billing.usage"),
    }


def test_usage_publish_then_quota_reads_the_read_model(engine: Engine, tmp_path: Path) -> None:
    subscribe(engine, "sub-cli", plan="scale")
    lines = [orjson.dumps({"id": f"c{i}", "subscription": "sub-cli", "metric": "documents",
                           "quantity": 3, "at": T0.replace(day=5).isoformat()})
             for i in range(20)]
    usage_file = tmp_path / "usage.jsonl"
    usage_file.write_bytes(b"\n".join(lines) + b"\n")
    env = _external(engine)
    published = _cli("usage", "publish", str(usage_file), "--json", env=env)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["published"] == 20

    ends = json.loads(published.stdout)["end_offsets"]
    ingest_all(engine, {int(p): o for p, o in ends.items()})
    relay_all(engine)
    project_all(engine)

    shown = _cli("quota", "sub-cli", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    monitor = json.loads(shown.stdout)
    rows = {r["metric"]: r for r in monitor["metrics"]}
    assert rows["documents"]["per_day"] == {"2026-11-05": "60"}
    assert rows["documents"]["used"] == "60"
    assert rows["documents"]["included"] == "10000"
    assert rows["documents"]["remaining"] == "9940"
    chart = tmp_path / "usage.svg"
    text = _cli("quota", "sub-cli", "--chart", str(chart), env=env)
    assert "documents" in text.stdout and "9940" in text.stdout
    svg = chart.read_text()
    assert svg.startswith("<svg") and "documents per day" in svg and "2026-11-05: 60" in svg
    missing = _cli("quota", "sub-nobody", env=env)
    assert missing.returncode == 4 and "no quota rows" in missing.stderr



def test_subscribe_and_command_take_the_customers_details(engine: Engine) -> None:
    """Issue 17.10: the country that decides VAT could be set only through a JSON line."""
    env = engine.subprocess_env()
    made = _cli("subscribe", "sub-pl", "--plan", "basic", "--at", "2026-11-01T00:00:00Z",
                "--name", "Łódź sp. z o.o.", "--country", "pl", "--vat-id", "PL5260250274",
                "--business", "--email", "billing@example.pl", env=env)
    assert made.returncode == 0, made.stderr
    changed = _cli("command", "update_customer", "sub-pl", "customer.address=ul. Piotrkowska 1",
                   "--at", "2026-11-02T00:00:00Z", env=env)
    assert changed.returncode == 0, changed.stderr
    customer = engine.app.load_as_stored("sub-pl").customer
    assert customer == {"name": "Łódź sp. z o.o.", "country": "PL", "vat_id": "PL5260250274",
                        "business": True, "email": "billing@example.pl",
                        "address": "ul. Piotrkowska 1"}


def test_the_credit_monitor_counts_today_by_the_billing_clock(
        settings: object, database_url: str, stack: object) -> None:
    """Issue 17.4: "today" was the last day with usage; no remaining today, no next reset,
    and not exhausted at the daily cap."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from domain.catalog.model import Catalog
    from tests.integration.helpers import publish, usage

    path = Path(__file__).resolve().parents[2] / "examples" / "credit_plans.toml"
    engine = Engine.open(settings, database_url, stack.kafka_bootstrap,  # type: ignore[arg-type, attr-defined]
                         catalog=Catalog.from_file(path))
    try:
        engine.app.subscribe("sub-cr", "acct-cr", "free", datetime(2026, 11, 1, tzinfo=UTC))
        ingest_all(engine, publish(engine, [
            usage("c1", "sub-cr", "credits", 3, at="2026-11-03T09:00:00+00:00"),
            usage("c2", "sub-cr", "credits", 2, at="2026-11-03T10:00:00+00:00")]))
        relay_all(engine)
        project_all(engine)
        env = {**engine.subprocess_env(), "BILLING_CATALOG": str(path)}

        def monitor(clock_to: str) -> dict[str, object]:
            moved = _cli("clock", "advance", "--to", clock_to, env=env)
            assert moved.returncode == 0, moved.stderr
            shown = _cli("quota", "sub-cr", "--json", env=env)
            assert shown.returncode == 0, shown.stderr
            (credits,) = orjson.loads(shown.stdout)["metrics"]
            return credits  # type: ignore[no-any-return]

        day = monitor("2026-11-03T18:00:00+00:00")
        assert (day["today"], day["today_used"], day["remaining_today"]) == (
            "2026-11-03", "5", "0")
        assert day["daily_cap_reached"] is True and day["exhausted"] is True
        assert day["next_daily_reset"] == "2026-11-04T00:00:00+00:00"
        assert Decimal(str(day["remaining_this_cycle"])) == Decimal(25)
        next_day = monitor("2026-11-04T08:00:00+00:00")
        assert (next_day["today"], next_day["today_used"], next_day["remaining_today"]) == (
            "2026-11-04", "0", "5")
        assert next_day["exhausted"] is False
    finally:
        engine.close()


def test_every_writer_bills_with_the_catalog_recorded_in_the_store(
        engine: Engine, tmp_path: Path) -> None:
    """Issue 17.2: writers loaded BILLING_CATALOG themselves. A changed price under a
    recorded version label was invoiced, an unpublished version went into terms, and a
    terminal without BILLING_CATALOG subscribed a EUR plan on a USD deployment."""
    root = Path(__file__).resolve().parents[2]
    starter = (root / "infra" / "catalogs" / "starter.toml").read_text("utf-8")
    reused = tmp_path / "reused.toml"
    reused.write_text(starter.replace('price = "190.00"', 'price = "1.00"', 1), "utf-8")
    unpublished = tmp_path / "next.toml"
    unpublished.write_text(starter.replace('version = "2026-11-1"', 'version = "2026-12-1"')
                           .replace('price = "190.00"', 'price = "200.00"', 1), "utf-8")
    env = engine.subprocess_env()

    def subscribe(sub: str, catalog: Path | None) -> subprocess.CompletedProcess[str]:
        extra = {"BILLING_CATALOG": str(catalog)} if catalog else {}
        return _cli("subscribe", sub, "--plan", "basic", "--at", "2026-11-01T00:00:00Z",
                    env={**env, **extra})

    refused = subscribe("sub-reused", reused)
    assert refused.returncode == 3 and "version_reused" in refused.stderr
    assert engine.app.find("sub-reused") is None
    warned = subscribe("sub-next", unpublished)
    assert warned.returncode == 0, warned.stderr
    terms = engine.app.load_as_stored("sub-next").terms
    assert (terms["catalog_version"], terms["price"]) == ("2026-11-1", "190.00")
    published = _cli("catalog", "publish", str(unpublished), env=env)
    assert published.returncode == 0 and "published" in published.stdout, published.stderr
    assert subscribe("sub-after", None).returncode == 0  # no BILLING_CATALOG: the store's
    terms = engine.app.load_as_stored("sub-after").terms
    assert (terms["catalog_version"], terms["price"]) == ("2026-12-1", "200.00")
    again = _cli("catalog", "publish", str(reused), env=env)
    assert again.returncode == 3 and "version_reused" in again.stderr
    other = subscribe("sub-usd", root / "examples" / "credit_plans.toml")
    assert other.returncode == 3 and "catalog_mismatch" in other.stderr


def test_the_tester_findings_on_a_running_store(settings: object, database_url: str,
                                                stack: object) -> None:
    """Issue 18: fields after an option, `subscribe --period`, the invoice's tax warning in the
    text view, and the policy's exit codes and JSON errors against a store."""
    from domain.catalog.model import Catalog

    path = Path(__file__).resolve().parents[2] / "examples" / "crm_user_plans.toml"
    engine = Engine.open(settings, database_url, stack.kafka_bootstrap,  # type: ignore[arg-type, attr-defined]
                         catalog=Catalog.from_file(path))
    try:
        env = {**engine.subprocess_env(), "BILLING_CATALOG": str(path)}
        at = "2026-11-01T00:00:00Z"
        made = _cli("subscribe", "sub-y", "--plan", "crm", "--period", "year", "--at", at,
                    "--country", "DE", "--vat-id", "DE000", "--business", "--json", env=env)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["period"] == "year"
        assert engine.app.load_as_stored("sub-y").terms["period"] == "year"
        bad = _cli("subscribe", "sub-z", "--plan", "crm", "--period", "fortnight", env=env)
        assert bad.returncode == 2 and "invalid choice" in bad.stderr
        assert _cli("command", "add_member", "sub-y", "--at", "2026-11-02T00:00:00Z",
                    "member=u1", env=env).returncode == 0
        assigned = _cli("command", "assign_user_plan", "sub-y", "--at", "2026-11-02T00:00:00Z",
                        "member=u1", "solution=sales", "level=premium", "--json", env=env)
        assert assigned.returncode == 0, assigned.stderr
        assert json.loads(assigned.stdout)["result"] == "applied"
        preview = _cli("invoice", "preview", "sub-y", "--at", "2026-11-03T00:00:00Z", env=env)
        assert preview.returncode == 0, preview.stderr
        assert "WARNING: VAT id 'DE000' is not a valid DE VAT number" in preview.stdout

        refused = _cli("command", "assign_user_plan", "sub-y", "member=u1", "solution=sales",
                       "level=nope", "--at", "2026-11-02T00:00:00Z", "--json", env=env)
        assert refused.returncode == 3 and refused.stdout == ""
        error = json.loads(refused.stderr)
        assert set(error) == {"error", "code"} and error["code"]
        unknown = _cli("command", "add_member", "sub-nobody", "member=u2", "--json", env=env)
        assert unknown.returncode == 4
        assert json.loads(unknown.stderr)["code"] == "unknown_subscription"
        missing = _cli("invoice", "show", "INV-0000-000000", env=env)
        assert missing.returncode == 4 and missing.stderr.count("\n") == 1
        bad_date = _cli("command", "add_member", "sub-y", "member=u3", "--at", "2026-13-01",
                        env=env)
        assert bad_date.returncode == 2 and "Traceback" not in bad_date.stderr
    finally:
        engine.close()


def test_commands_without_at_take_the_billing_clocks_time(engine: Engine) -> None:
    """Found from outside (issue 19): without --at, commands took the wall clock, so after
    `clock advance` into the future every command was refused as stale."""
    env = engine.subprocess_env()
    advanced = _cli("clock", "advance", "--to", "2031-03-01T00:00:00Z", env=env)
    assert advanced.returncode == 0, advanced.stderr
    subscribed = _cli("subscribe", "sub-clock", "--plan", "basic", "--json", env=env)
    assert subscribed.returncode == 0, subscribed.stderr
    assert json.loads(subscribed.stdout)["at"] == "2031-03-01T00:00:00+00:00"
    cancelled = _cli("command", "cancel", "sub-clock", "--json", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["result"] == "applied"
    assert engine.app.load_as_stored("sub-clock").cycle_start.year == 2031


def test_a_published_command_is_timed_by_the_billing_clock_unless_at_is_given(
        engine: Engine) -> None:
    env = engine.subprocess_env()
    assert _cli("clock", "advance", "--to", "2031-03-01T00:00:00Z", env=env).returncode == 0
    default = _cli("command", "cancel", "sub-pub", "--publish", "--json", env=env)
    given = _cli("command", "cancel", "sub-pub", "--publish", "--json",
                 "--at", "2031-03-02T00:00:00Z", env=env)
    assert default.returncode == given.returncode == 0, default.stderr + given.stderr
    assert json.loads(default.stdout)["published"]["at"] == "2031-03-01T00:00:00+00:00"
    assert json.loads(given.stdout)["published"]["at"] == "2031-03-02T00:00:00+00:00"


def test_a_file_larger_than_a_chunk_is_published_whole(engine: Engine, tmp_path: Path) -> None:
    from infra.cli.publish import CHUNK_BYTES

    line = orjson.dumps({"id": "x" * 64, "subscription": "sub-big", "metric": "tokens",
                         "quantity": 1, "at": T0.isoformat()})
    count = 3 * CHUNK_BYTES // len(line) + 7  # three chunks and a few lines
    usage_file = tmp_path / "big.jsonl"
    with usage_file.open("wb") as f:
        for i in range(count):
            f.write(line.replace(b"x" * 64, f"{i:064d}".encode()) + b"\n")
    env = _external(engine)
    published = _cli("usage", "publish", str(usage_file), "--json", env=env)
    assert published.returncode == 0, published.stderr
    result = json.loads(published.stdout)
    assert result["published"] == count
    assert sum(result["end_offsets"].values()) == count  # one key: one partition, all of it
