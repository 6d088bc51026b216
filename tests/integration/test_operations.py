"""Operations: heartbeats with `billing health` / `billing ready`, JSON logs, a clean SIGTERM,
and secrets kept out of logs and dead letters."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import orjson
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import publish, read_topic, subscribe, until

pytestmark = pytest.mark.integration



def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_health_ready_logs_and_secrets(engine: Engine) -> None:
    subscribe(engine, "sub-o")
    secret = urlparse(engine.database_url).password  # the embedded superuser's, generated
    assert secret and len(secret) >= 24
    env = engine.subprocess_env()
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
        assert letters and secret not in letters[0].value.decode()
        assert orjson.loads(letters[0].value)["code"] == "missing_field"
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0  # a clean stop: batches in hand finished
    assert secret.encode() not in out + err
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


def _start(env: dict[str, str], *roles: str) -> tuple[subprocess.Popen[bytes], int]:
    """A `billing run` of these roles; returns it and its endpoints' port."""
    args = [a for role in roles for a in ("--only", role)]
    worker = subprocess.Popen([sys.executable, "-m", "infra.cli", "run", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert worker.stdout is not None
    line = worker.stdout.readline().decode()
    assert "running" in line, line
    return worker, int(line.split("http://127.0.0.1:")[1].split(";")[0])


def _get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_stalled_partition_turns_health_red_then_green_again(engine: Engine) -> None:
    """Input waits while a lock blocks ingestion: health names the partition within the
    stall time (and /healthz says 503); once the lock goes, both are green again."""
    import psycopg

    subscribe(engine, "sub-s")
    env = {**engine.subprocess_env(), "BILLING_STALL_SECONDS": "3"}
    worker, port = _start(env, "ingest")
    try:
        publish(engine, [(b"sub-s", orjson.dumps({"id": "s0", "subscription": "sub-s",
                                                    "metric": "tokens", "quantity": 1,
                                                    "at": "2026-11-02T10:00:00+00:00"}))])
        until(lambda: _cli(env, "health").returncode == 0, lambda: time.sleep(0.3),
              timeout=30)
        assert _get(port, "/healthz")[0] == 200 and _get(port, "/readyz") == (200, b"ready\n")
        with psycopg.connect(engine.database_url) as blocker:
            blocker.execute("LOCK TABLE billing_events IN ACCESS EXCLUSIVE MODE")
            publish(engine, [(b"sub-s", orjson.dumps({
                "id": f"s{n}", "subscription": "sub-s", "metric": "tokens", "quantity": 1,
                "at": "2026-11-02T10:00:00+00:00"})) for n in range(1, 20)])
            started = time.monotonic()

            def stalled() -> bool:
                answer = _cli(env, "health", "--json")
                problems = json.loads(answer.stdout)["problems"]
                return answer.returncode == 1 and any(
                    "stalled" in p and engine.settings.topics.usage in p for p in problems)

            until(stalled, lambda: time.sleep(0.5), timeout=30)
            red_after = time.monotonic() - started
            assert _get(port, "/healthz")[0] == 503
            blocker.rollback()
        until(lambda: _cli(env, "health").returncode == 0, lambda: time.sleep(0.5),
              timeout=30)
        assert _get(port, "/healthz")[0] == 200
        status, metrics = _get(port, "/metrics")
        assert status == 200
        assert b'billing_partition_lag{partition="' in metrics
        assert b"billing_batch_seconds_bucket" in metrics
        assert b"billing_usage_applied_total 20.0" in metrics
        # sub-s, read from the store (again after the failed batches) and kept: later
        # batches found it cached
        assert b'billing_cached_subscriptions{role="ingest"} 1.0' in metrics
        assert re.search(rb'billing_cache_loads_total\{role="ingest"\} [1-9]', metrics)
        assert re.search(rb'billing_cache_hits_total\{role="ingest"\} [1-9]', metrics)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert red_after < 3 + 10  # the stall time, a heartbeat and a health run


def test_a_replaced_worker_turns_health_green_by_itself(engine: Engine) -> None:
    env = engine.subprocess_env()
    first, _ = _start(env, "relay")
    until(lambda: _cli(env, "health", "--max-age", "3").returncode == 0,
          lambda: time.sleep(0.3), timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    until(lambda: _cli(env, "health", "--max-age", "3").returncode == 1,
          lambda: time.sleep(0.5), timeout=30)
    time.sleep(5)  # a heartbeat older than a replacement's start by a few beats is its own
    second, _ = _start(env, "relay")
    try:
        until(lambda: _cli(env, "health", "--max-age", "3").returncode == 0,
              lambda: time.sleep(0.5), timeout=30)
        workers = json.loads(_cli(env, "health", "--json", "--max-age", "3").stdout)["workers"]
        assert len(workers) == 1
        ready = _cli(env, "ready")
        assert ready.returncode == 0 and ready.stdout.strip().endswith("ready")
        assert "NOT" not in ready.stdout
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
