"""The CLI policy (docs/cli.md) without a stack: one-line errors, JSON errors, exit codes, help
for every command and option, the catalog view, and the lists the parser keeps."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("BILLING_STACK", "BILLING_DATABASE_URL", "BILLING_KAFKA_BOOTSTRAP",
                 "BILLING_CATALOG", "BILLING_PARTITIONS", "BILLING_OPTIMISTIC_INGEST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,exit_code,words", [
    (["quota", "s1", "--at", "2026-13-01"], 2, "--at: not an RFC 3339 date-time"),
    (["quota", "s1", "--at", "2026-13-01T00:00:00Z"], 2, "month must be in 1..12"),
    (["state", "s1", "--as-of", "yesterday"], 2, "--as-of"),
    (["clock", "advance", "--to", "2026-02-30T00:00:00Z"], 2, "--to"),
    (["clock", "advance"], 2, "--to is required"),
    (["catalog", "publish", "/no/such/prices.toml"], 2, "no such file"),
    (["usage", "publish", "/no/such/usage.jsonl"], 2, "no such file"),
    (["report", "no_such_view"], 2, "invalid choice"),
    (["rebuild", "nothing"], 2, "unknown read model"),
    (["run", "--only", "everything"], 2, "invalid choice"),
    (["dlq", "list", "--id", "7"], 2, "PARTITION:OFFSET"),
    (["clock", "advance", "--to", "2026-12-01T00:00:00Z", "--processes", "0"], 2, "from 1"),
    (["history"], 2, "name a subscription"),
    (["command", "cancel", "s1", "plan"], 2, "key=value"),
    (["quota", "s1", "--bogus"], 2, "unrecognized arguments"),
    (["quota", "s\x00"], 2, "PostgreSQL text"),
    (["quota", "s1"], 1, "no running embedded stack"),
])
def test_bad_input_is_one_line_and_an_exit_code(
        capsys: pytest.CaptureFixture[str], no_stack: Path, argv: list[str], exit_code: int,
        words: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (exit_code, "")
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
    code, out, err = run(capsys, *argv, "--json")
    error = json.loads(err)
    assert code == exit_code and set(error) == {"error", "code"} and words in error["error"]


def test_configuration_errors_name_the_variable_and_exit_2(
        capsys: pytest.CaptureFixture[str], no_stack: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_OPTIMISTIC_INGEST", "onn")
    code, _, err = run(capsys, "quota", "s1")
    assert code == 2 and err.count("\n") == 1 and "BILLING_OPTIMISTIC_INGEST='onn'" in err
    monkeypatch.setenv("BILLING_OPTIMISTIC_INGEST", "on")
    monkeypatch.setenv("BILLING_PARTITIONS", "abc")
    code, _, err = run(capsys, "quota", "s1", "--json")
    assert code == 2 and json.loads(err) == {
        "error": "BILLING_PARTITIONS='abc' is not valid: a whole number from 1 to 10,000",
        "code": "invalid_config"}


def test_an_unreachable_database_is_one_line(capsys: pytest.CaptureFixture[str], no_stack: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_STACK", "external")
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://u:secret@127.0.0.1:1/billing")
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    code, out, err = run(capsys, "quota", "s1")
    assert code == 1 and out == "" and err.startswith("billing: database unreachable")
    assert err.count("\n") == 1 and "secret" not in err
    code, _, err = run(capsys, "invoice", "show", "INV-1", "--json")
    assert code == 1 and json.loads(err)["code"] == "database_unreachable"


def test_version_and_help_for_every_command_and_option(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("billing ")
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, child in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(child, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "billing")
    assert not missing, missing


def test_help_names_real_roles_reports_and_documents() -> None:
    from domain.catalog.model import PERIOD_NAMES
    from infra.cli.rebuild import READ_MODELS
    from infra.cli.report import REPORTS
    from infra.cli.run import ROLES
    from infra.cli.subscribe import PERIODS as SOLD
    from infra.ops.rebuild import TABLES
    from infra.wiring.engine import ROLES as ENGINE_ROLES
    from projections.analytics.store import VIEWS

    parser_lists = (ROLES, REPORTS, READ_MODELS, SOLD)
    assert parser_lists == (ENGINE_ROLES, VIEWS, tuple(TABLES), PERIOD_NAMES)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_help = sub.choices["run"].format_help()
    assert "all three" not in run_help and all(role in run_help for role in ROLES)
    report_help = sub.choices["report"].format_help()
    assert "analytics.md" not in report_help and "docs/read-models.md" in report_help
    assert all(view in " ".join(report_help.split()) for view in VIEWS)
    assert (ROOT / "docs" / "read-models.md").is_file()
    policy = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for line in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |"):
        assert line in policy


def test_command_fields_may_follow_the_options() -> None:
    """The tester's `billing command assign_user_plan SUB --at T member=u1 ...`."""
    from infra.cli.main import parse

    args = parse(["command", "assign_user_plan", "sub-1", "member=u1", "--at",
                  "2026-11-02T00:00:00Z", "solution=sales", "level=premium", "--json"])
    assert args.fields == ["member=u1", "solution=sales", "level=premium"] and args.json
    assert args.at.isoformat() == "2026-11-02T00:00:00+00:00"


def test_the_catalog_shows_packs_add_ons_user_plans_and_seat_prices(
        capsys: pytest.CaptureFixture[str], no_stack: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_CATALOG", str(ROOT / "examples" / "crm_user_plans.toml"))
    code, out, _ = run(capsys, "catalog", "--json")
    view: dict[str, Any] = json.loads(out)
    assert code == 0 and view["currency"] == "NOK"
    assert view["user_plans"]["sales"] == {"essential": "45.00", "premium": "75.00"}
    assert {"id": "ai", "name": "SuperOffice AI", "monthly_price": "10.00",
            "features": ["ai"]} in view["addons"]
    assert view["plans"][0]["prices"]["year"] == "0.00"  # `price = "0"`: two places
    code, text, _ = run(capsys, "catalog")
    assert "user plans" in text and "premium 75.00" in text and "SuperOffice AI" in text
    monkeypatch.setenv("BILLING_CATALOG", str(ROOT / "examples" / "workspace_tokens.toml"))
    code, out, _ = run(capsys, "catalog", "--json")
    view = json.loads(out)
    assert view["plans"][0]["extra_seat_monthly_price"] == "99.00"
    assert view["packs"][0]["price"] == "199.00" and "E" not in out
    code, text, _ = run(capsys, "catalog")
    assert "extra seat 99.00/month" in text and "Token pack" in text


def test_money_is_plain_with_the_currency_places() -> None:
    from decimal import Decimal

    from infra.render.terminal import money

    assert money(Decimal("3.8E+2"), "EUR") == "380.00"
    assert money(Decimal("0"), "NOK") == "0.00"
    assert money(Decimal("0.0025"), "EUR") == "0.0025"  # a unit price finer than a cent
    assert money(Decimal("1200"), "JPY") == "1200"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`billing invoice show N | head`: no BrokenPipeError traceback."""
    script = ("import sys\n"
              "import infra.cli.catalog as c\n"
              "c.print_catalog = lambda view, recorded: print('x' * 80 + '\\n') or "
              "[print('line ' * 20) for _ in range(20000)]\n"
              "from infra.cli.main import main\n"
              "sys.exit(main(['catalog']))\n")
    env = {"BILLING_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    producer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.read(100)
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
