"""The README's walkthrough runs as written: every command of its `<!-- walkthrough -->`
blocks, in order, on a fresh data directory, with `billing run` (the `background` block) in
another process. A line that fails fails the test with its output. Between lines the test waits
for the workers to apply what was sent, as a person typing would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.deployment import Deployment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- walkthrough(?P<background>: background)? -->\n```sh\n(?P<body>.*?)```",
                   re.S)


def walkthrough() -> tuple[list[str], list[str]]:
    """(the background commands, every other line in order)."""
    background, lines = [], []
    for block in BLOCK.finditer((ROOT / "README.md").read_text("utf-8")):
        commands = [line for line in block["body"].splitlines() if line.strip()]
        (background if block["background"] else lines).extend(commands)
    return background, lines


def test_the_readme_has_a_walkthrough_to_run() -> None:
    background, lines = walkthrough()
    assert background == ["./billing run", "./billing serve"]
    assert len(lines) > 30 and all(line.startswith(("./billing ", "sed ", "PW=", "curl "))
                                   for line in lines)


@pytest.fixture
def workdir(tmp_path: Path, stack: object) -> Iterator[tuple[Path, Deployment]]:
    """A folder like a fresh clone's root: `./billing` (the CLI of this checkout) and
    `examples/`."""
    shim = tmp_path / "billing"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m infra.cli "$@"\n')
    shim.chmod(0o755)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    d = Deployment(tmp_path / ".billing")
    d.env["PYTHONPATH"] = str(ROOT)
    try:
        yield tmp_path, d
    finally:
        d.stop_all()


def settled(d: Deployment) -> bool:
    """Every worker's heartbeat says nothing waits, twice, a heartbeat apart: what `billing
    health --json` reports, read in this process (a CLI process a check cost a second, and
    the walkthrough checks some thirty times)."""
    from infra.config import Settings
    from infra.ops import health as health_check
    from infra.stack import local_deployment

    settings = Settings.from_env(d.env)

    def idle() -> bool:
        stack = local_deployment.running_stack(settings)
        assert stack is not None, "billing run is not running"
        health = health_check.check(stack["database_url"], stack["kafka_bootstrap"],
                                    settings.topics.all(), 10.0, settings.kafka_options)
        lags = [p.get("lag") or 0 for w in health["workers"]
                for p in w["detail"].get("partitions", {}).values()]
        return not any(lags) and not health["lag"].get("relay_events")
    if not idle():
        return False
    time.sleep(2.5)
    return idle()


@pytest.mark.skipif(os.environ.get("BILLING_TEST_BROKER") == "apache-kafka",
                    reason="the README's walkthrough runs on the default broker (the embedded "
                           "deployment on Apache Kafka is test_local_deployment's)")
def test_every_walkthrough_command_runs_as_written(workdir: tuple[Path, Deployment]) -> None:
    folder, d = workdir
    _, lines = walkthrough()
    d.start()
    d.serve()
    outputs = {}
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=folder, env=d.env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        outputs[line] = done.stdout
        if any(verb in line for verb in ("publish", "replay", "subscribe", "command ",
                                         "clock advance", "/v1/usage")):
            d.wait_for(lambda: settled(d), True)
    by_verb = {line.split("#")[0].strip(): out for line, out in outputs.items()}
    if os.environ.get("WALKTHROUGH_DUMP"):
        Path(os.environ["WALKTHROUGH_DUMP"]).write_text(
            "\n".join(f"$ {line}\n{out}" for line, out in outputs.items()))
    # What the walkthrough shows happened: usage applied once (u-0007 twice in the file),
    # the bad letters replayed, invoices issued, the audit intact.
    quota = orjson.loads(by_verb["./billing quota sub-2 --json"])
    assert {m["metric"]: m["used"] for m in quota["metrics"]} == {
        "conversations": "8000", "documents": "120", "tokens": "1250000.5"}
    assert "INV-2026-000001" in by_verb["./billing invoice list"]
    assert "intact" in by_verb["./billing verify"]
    assert (folder / "INV-2026-000001.pdf").read_bytes().startswith(b"%PDF")
    assert (folder / "usage.svg").exists()
    history = by_verb["./billing history sub-1"]
    assert history.count("UsageRecorded") >= 1 and "PlanUpgraded" in history
    assert "version 2027-01-1" in by_verb["./billing catalog"]  # the last one: after publishing
    # The fixed letter counted (250,000 + 310,000 + 5,000), the replayed ones marked.
    assert re.search(r"tokens +used +565000 ", by_verb["./billing state sub-1 --as-of "
                                                       "2026-11-15T00:00:00Z"])
    assert by_verb["./billing dlq list --all"].count("(replayed)") == 2
    assert "2 dead letter(s)" in by_verb["./billing dlq list"]
    # The integration in five lines: the usage sent over HTTP counted, and the check says so.
    posted, check = (orjson.loads(out) for line, out in outputs.items() if "curl " in line)
    assert posted["status"] == "accepted", posted
    assert check["has_access"] is True and check["metric"] == "tokens", check
    state = orjson.loads(d.cli("state", "sub-1", "--json"))
    assert check["used"] == state["allowances"]["tokens"]["used"]
    assert check["freshness"]["pending_events"] == 0
    portal = next(out for line, out in outputs.items() if "portal link" in line)
    assert portal.startswith("http://127.0.0.1:8080/portal/enter?token=")
