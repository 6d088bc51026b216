"""`billing run` and the CLI in a data directory of their own, as a user runs them: the
embedded stack (the session's broker kind), started, killed and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class Deployment:
    """`billing run` and the CLI in one data directory, as a user runs them."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
        self.env.update(BILLING_STACK="embedded", BILLING_DATA_DIR=str(data_dir),
                        BILLING_PG_FSYNC="1", BILLING_LOG_FORMAT="text",
                        BILLING_BROKER=os.environ.get("BILLING_TEST_BROKER", "tansu"))
        if self.env["BILLING_BROKER"] == "apache-kafka":  # Maven's class path, resolved once
            cache = Path(".billing/apache-kafka").resolve()
            if cache.exists() and not (data_dir / "apache-kafka").exists():
                (data_dir / "apache-kafka").symlink_to(cache)
        self.runs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, expect: str = "billing workers running") -> subprocess.Popen[str]:
        """`billing run ARGS`, once it printed `expect`; its output goes to `self.log(run)`."""
        log = self.data_dir / f"run-{len(self.runs)}.log"
        with log.open("w") as out:
            run = subprocess.Popen([sys.executable, "-m", "infra.cli", "run", "--report-every",
                                    "60", *args], env=self.env, stdout=out,
                                   stderr=subprocess.STDOUT, text=True)
        self.runs.append(run)
        deadline = time.monotonic() + 240
        while expect not in log.read_text():
            assert run.poll() is None, f"billing run exited {run.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        return run

    def serve(self, port: int = 8080) -> subprocess.Popen[str]:
        """`billing serve --port PORT` beside the running stack, once its /healthz answers."""
        import urllib.request

        log = self.data_dir / f"run-{len(self.runs)}.log"
        with log.open("w") as out:
            server = subprocess.Popen([sys.executable, "-m", "infra.cli", "serve", "--port",
                                       str(port)], env=self.env, stdout=out,
                                      stderr=subprocess.STDOUT, text=True)
        self.runs.append(server)
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"billing serve exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return server
            except OSError:
                time.sleep(0.3)

    def log(self, run: subprocess.Popen[str]) -> str:
        return (self.data_dir / f"run-{self.runs.index(run)}.log").read_text()

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "infra.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def wait_for(self, what: Any, expected: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (found := what()) != expected:
            assert time.monotonic() < deadline, f"{found} != {expected}"
            time.sleep(0.5)

    def stack_pids(self) -> list[int]:
        """The broker's and PostgreSQL's processes, where running."""
        stack = self.data_dir / "stack"
        files = [stack / "broker.pid", stack / "pg" / "postmaster.pid"]
        return [int(f.read_text().split()[0]) for f in files if f.exists()]

    def kill(self, run: subprocess.Popen[str], servers_too: bool) -> None:
        pids = self.stack_pids() if servers_too else []
        assert len(pids) == (2 if servers_too else 0)
        run.send_signal(signal.SIGKILL)
        run.wait()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for run in self.runs:
            if run.poll() is None:
                run.send_signal(signal.SIGTERM)
                try:
                    run.wait(60)
                except subprocess.TimeoutExpired:
                    run.kill()
        from infra.stack.embedded import EmbeddedPostgres, kill_if_ours

        stack = self.data_dir / "stack"
        if (stack / "broker.pid").exists():
            kill_if_ours(stack / "broker.pid")
        if (stack / "pg" / "postmaster.pid").exists():
            EmbeddedPostgres(stack / "pg").stop_left_running()
