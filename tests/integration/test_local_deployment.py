"""The single-machine deployment survives a crash: `billing run` on the embedded stack, killed
with SIGKILL (alone, leaving its servers running, or with them, as a power loss does) and
started again in the same data directory, keeps every subscription, usage total and invoice;
`verify` still passes; usage sent after the restart counts once. One stack per directory: a
second `billing run` joins it. Runs on the session's broker (Tansu, which loses its topics at
each start, or Apache Kafka, which keeps them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import deployment

pytestmark = pytest.mark.integration

SUBS = ("sub-a", "sub-b", "sub-c")


class Deployment(deployment.Deployment):
    def publish_usage(self, ids: list[str], quantity: int,
                      at: str = "2026-11-10T12:00:00Z") -> None:
        path = self.data_dir / f"usage-{ids[0]}.jsonl"
        path.write_text("".join(json.dumps({
            "id": uid, "subscription": SUBS[n % len(SUBS)], "metric": "tokens",
            "quantity": quantity, "at": at}) + "\n"
            for n, uid in enumerate(ids)))
        self.cli("usage", "publish", str(path))

    def used(self) -> dict[str, int]:
        return {sub: next(int(m["used"]) for m in self.json("quota", sub)["metrics"]
                          if m["metric"] == "tokens") for sub in SUBS}

    def figures(self) -> dict[str, Any]:
        return {"used": self.used(), "invoices": self.json("invoice", "list"),
                "verify": self.cli("verify").splitlines()[0]}



@pytest.fixture
def deployment(tmp_path: Path, stack: object) -> Iterator[Deployment]:
    d = Deployment(tmp_path / "data")
    try:
        yield d
    finally:
        d.stop_all()


def test_killing_billing_run_keeps_every_figure_and_usage_after_it_counts_once(
        deployment: Deployment) -> None:
    d = deployment
    run = d.start()
    for sub in SUBS:
        d.cli("subscribe", sub, "--account", f"acct-{sub}", "--plan", "basic",
              "--at", "2026-11-01T00:00:00Z")
    d.publish_usage([f"u{i}" for i in range(30)], quantity=7)
    d.wait_for(d.used, {sub: 70 for sub in SUBS})
    d.cli("clock", "advance", "--to", "2026-12-03T00:00:00Z")
    d.wait_for(lambda: len(d.json("invoice", "list")), 6)  # first period + the renewal, each
    before = d.figures()
    assert "intact" in before["verify"]

    # The process alone (its PostgreSQL and broker left running), then everything (power loss).
    for servers_too in (False, True):
        d.kill(run, servers_too)
        run = d.start()
        assert d.figures() == before
        # Tansu kept nothing: the positions are reset and the store published again;
        # Apache Kafka kept its topics: the engine resumes where it was.
        reset = "positions are reset" in d.log(run)
        assert reset == (d.env["BILLING_BROKER"] == "tansu")

    # Ids applied before the crashes, replayed as they were (their cycle has closed, and the
    # clock pruned them from the ledger: refused as too late), and new ones in the new period.
    d.publish_usage([f"u{i}" for i in range(9)], quantity=7)
    d.publish_usage([f"v{i}" for i in range(6)], quantity=5, at="2026-12-05T12:00:00Z")
    d.wait_for(d.used, {sub: 10 for sub in SUBS})
    assert "intact" in d.cli("verify")


def test_one_stack_per_directory_a_second_run_joins_it_and_fresh_starts_empty(
        deployment: Deployment) -> None:
    d = deployment
    owner = d.start()
    d.cli("subscribe", "sub-a", "--account", "acct-a", "--plan", "basic",
          "--at", "2026-11-01T00:00:00Z")
    addresses = (d.data_dir / "current-stack.json").read_text()
    joined = d.start("--only", "ingest", expect="joining the stack")
    assert (d.data_dir / "current-stack.json").read_text() == addresses
    d.publish_usage(["j1", "j2", "j3"], quantity=4)  # all for sub-a, b, c: only sub-a exists
    d.wait_for(lambda: _used_a(d), 4)

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert joined.wait(60) == 1  # the owner's stack is gone: the joined run says so and stops
    failed = subprocess.run([sys.executable, "-m", "infra.cli", "quota", "sub-a"], env=d.env,
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "is gone" in failed.stderr  # the file left is not trusted

    d.start("--fresh")
    refused = subprocess.run([sys.executable, "-m", "infra.cli", "quota", "sub-a"], env=d.env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "sub-a" in refused.stderr  # an empty stack
    # The audit anchors' copy of the deleted store is set aside, not compared with the new one.
    assert list(d.data_dir.glob("audit.before-fresh-*/*.jsonl"))
    assert "intact" in d.cli("verify")


def _used_a(d: Deployment) -> int:
    return next(int(m["used"]) for m in d.json("quota", "sub-a")["metrics"]
                if m["metric"] == "tokens")


def test_billing_run_stops_when_its_broker_dies_and_the_next_start_recovers(
        deployment: Deployment) -> None:
    d = deployment
    run = d.start()
    d.cli("subscribe", "sub-a", "--account", "acct-a", "--plan", "basic",
          "--at", "2026-11-01T00:00:00Z")
    broker_pid = d.stack_pids()[0]
    os.kill(broker_pid, signal.SIGKILL)
    assert run.wait(60) == 1
    assert "the embedded broker exited" in d.log(run)
    d.start()
    d.publish_usage(["after"], quantity=9)
    d.wait_for(lambda: _used_a(d), 9)


def test_kept_data_without_its_password_file_is_refused_not_replaced(tmp_path: Path) -> None:
    from infra.config import ConfigError
    from infra.stack.embedded import EmbeddedPostgres

    data = tmp_path / "stack" / "pg"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("18\n")
    with pytest.raises(ConfigError, match=r"password file .* is missing"):
        EmbeddedPostgres(data).start(keep=True)
    assert (data / "PG_VERSION").exists()  # nothing deleted


def test_a_file_left_by_a_dead_run_is_not_joined_while_a_new_owner_starts(
        tmp_path: Path) -> None:
    """The lock is held (a new owner starting) but current-stack.json is still the dead run's:
    its writer (pid and start time) is not alive, so nobody joins those addresses."""
    import json
    import os

    from infra.config import Settings
    from infra.stack import local_deployment
    from infra.stack.embedded import started_at

    settings = Settings.from_env({"BILLING_DATA_DIR": str(tmp_path)})
    owner = local_deployment.Ownership.take(settings)
    assert owner is not None
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        file = local_deployment.stack_file(settings)
        addresses = {"database_url": "postgresql://x", "kafka_bootstrap": "127.0.0.1:1"}
        file.write_text(json.dumps({"pid": int(dead), "started": "1", **addresses}))
        assert local_deployment.running_stack(settings) is None
        file.write_text(json.dumps({"pid": os.getpid(), "started": started_at(os.getpid()),
                                    **addresses}))
        assert local_deployment.running_stack(settings) is not None
    finally:
        owner.release()
    assert local_deployment.running_stack(settings) is None  # no owner any more
