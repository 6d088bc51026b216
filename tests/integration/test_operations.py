"""Operations: heartbeats with `billing health` / `billing ready`, JSON logs, a clean SIGTERM,
and secrets kept out of logs and dead letters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse, urlunparse

import orjson
import pytest

from infra.engine import Engine
from tests.integration.helpers import publish, read_topic, subscribe, until

pytestmark = pytest.mark.integration

SECRET = "S3cret-Passw0rd-for-tests"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_health_ready_logs_and_secrets(engine: Engine) -> None:
    subscribe(engine, "sub-o")
    parsed = urlparse(engine.database_url)  # the embedded server trusts local logins
    with_secret = urlunparse(parsed._replace(
        netloc=f"{parsed.username}:{SECRET}@{parsed.hostname}:{parsed.port}"))
    env = engine.subprocess_env(with_secret)
    worker = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "run", "--only", "ingest", "--only", "relay",
         "--report-every", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert worker.stdout is not None
        assert b"running" in worker.stdout.readline()
        until(lambda: json.loads(_cli(env, "health", "--json").stdout).get("workers"),
              lambda: time.sleep(0.3), timeout=30)
        health = _cli(env, "health", "--json")
        report = json.loads(health.stdout)
        assert health.returncode == 0 and report["healthy"] is True
        assert {w["role"] for w in report["workers"]} == {"ingest", "relay"}
        assert _cli(env, "ready").returncode == 0
        assert _cli(env, "health", "--role", "project").returncode == 1  # none running

        publish(engine, [(b"sub-o", b'{"id": "bad", "quantity": "NaN"}')])
        letters = read_topic(engine, engine.settings.topics.dlq, 1)
        assert letters and SECRET not in letters[0].value.decode()
        assert orjson.loads(letters[0].value)["code"] == "missing_field"
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0  # a clean stop: batches in hand finished
    assert SECRET.encode() not in out + err
    for line in err.decode().splitlines():  # every log line is a JSON object
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry)
    after = _cli(env, "health", "--json")
    assert json.loads(after.stdout)["workers"] == []  # a stopped worker removes its heartbeat
    assert after.returncode == 1  # and no worker running is not healthy


def test_a_killed_worker_goes_stale(engine: Engine) -> None:
    env = engine.subprocess_env()
    worker = subprocess.Popen([sys.executable, "-m", "infra.cli", "run", "--only", "relay"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert worker.stdout is not None
    assert b"running" in worker.stdout.readline()
    until(lambda: _cli(env, "health", "--max-age", "3").returncode == 0,
          lambda: time.sleep(0.3), timeout=30)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    until(lambda: _cli(env, "health", "--max-age", "3").returncode == 1,
          lambda: time.sleep(0.5), timeout=30)
    stale = json.loads(_cli(env, "health", "--json", "--max-age", "3").stdout)
    assert [w["healthy"] for w in stale["workers"]] == [False]
