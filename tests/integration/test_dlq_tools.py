"""`billing dlq list|replay`: an operator sees each dead letter with its code, fixes one in a
JSON-lines file, replays it, and it counts once; a replayed letter is not replayed twice."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import (
    ingest_all,
    publish,
    store_totals,
    subscribe,
    until,
    usage,
)

pytestmark = pytest.mark.integration


def _cli(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True,
                            text=True, timeout=120, env=engine.subprocess_env())
    assert result.returncode == 0, result.stderr
    return result


def test_list_fix_and_replay_dead_letters(engine: Engine, tmp_path: Path) -> None:
    subscribe(engine, "sub-d")
    ends = publish(engine, [usage("ok", "sub-d", "tokens", 5),
                            usage("neg", "sub-d", "tokens", -40),
                            usage("typo", "sub-d", "tokenz", 3),
                            (b"sub-d", b"{broken")])
    ingest_all(engine, ends)
    listed = [json.loads(line) for line in
              _cli(engine, "dlq", "list", "--jsonl").stdout.splitlines()]
    assert sorted(letter["code"] for letter in listed) == [
        "invalid_quantity", "malformed_json", "unknown_metric"]
    assert "3 dead letter(s)" in _cli(engine, "dlq", "list").stdout

    # The operator fixes the negative quantity (it was 40) and replays that letter only.
    fixed = [letter for letter in listed if letter["code"] == "invalid_quantity"]
    fixed[0]["value"] = json.loads(fixed[0]["value"]) | {"quantity": 40}
    edited = tmp_path / "fixed.jsonl"
    edited.write_text("".join(json.dumps(letter) + "\n" for letter in fixed))
    assert json.loads(_cli(engine, "dlq", "replay", "--file", str(edited), "--json").stdout) \
        == {"replayed": 1}
    loop, _ = engine.ingestion()
    until(lambda: store_totals(engine)[("sub-d", "tokens")] == Decimal(45),
          lambda: loop.poll_once(100), timeout=30)

    # Replayed letters are hidden from the default list and not replayed again by accident.
    remaining = _cli(engine, "dlq", "list", "--json").stdout
    assert sorted(letter["code"] for letter in json.loads(remaining)) == [
        "malformed_json", "unknown_metric"]
    assert json.loads(_cli(engine, "dlq", "replay", "--file", str(edited), "--json").stdout) \
        == {"replayed": 0}
    # Replaying a letter unchanged is harmless: still refused, dead-lettered again.
    _cli(engine, "dlq", "replay", "--code", "unknown_metric")
    until(lambda: len(json.loads(_cli(engine, "dlq", "list", "--json", "--code",
                                      "unknown_metric").stdout)) == 1,
          lambda: loop.poll_once(100), timeout=30)  # its new dead letter
    assert store_totals(engine)[("sub-d", "tokens")] == Decimal(45)

