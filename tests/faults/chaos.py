"""The fault scenario shared by `tests/faults` (CI size) and `bench/soak.py` (soak size).

A known stream (usage with redeliveries, shuffled order, hostile messages, late usage after the
month closed, subscribe commands sent twice) flows through every worker, each in its own OS
process, while the harness kills workers with SIGKILL at random moments, pauses the broker with
SIGSTOP for longer than the clients' timeouts, and crash-restarts PostgreSQL. The harness is
also the supervisor: a worker that exits is started again, as systemd or Kubernetes would.

Afterwards the read models are compared with figures computed here from the input alone: usage
per subscription and metric, quota rows, the amount invoiced per subscription, every invoice
number once and none missing, every hostile message dead-lettered.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from infra.config import Settings, Topics
from infra.kafka import clients as kafka
from infra.kafka import dead_letters as dlq
from infra.stack.embedded import Stack, start_stack
from infra.wiring.engine import Engine, Monitor

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("ingest", "commands", "relay", "project", "invoicer", "invoices")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 12, 1, tzinfo=UTC)
INCLUDED, UNIT = Decimal(50_000), Decimal("0.004")  # Basic: conversations (starter catalog)
PRICE = Decimal("190.00")
CENT = Decimal("0.01")


@dataclass
class Size:
    events: int = 20_000
    subscriptions: int = 30
    kills: int = 10
    pauses: int = 1
    restarts: int = 1
    pause_seconds: float = 6.0  # > the clients' request timeout set below (4 s)


@dataclass
class Report:
    events: int = 0
    redeliveries: int = 0
    hostile: int = 0
    late: int = 0
    commands: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    pauses: int = 0
    restarts: int = 0
    respawns: int = 0
    seconds: float = 0.0
    invoices: int = 0

    def line(self) -> str:
        return (f"{self.events:,} usage events (+{self.redeliveries:,} redelivered, "
                f"{self.late:,} late, {self.hostile} hostile), {self.commands} commands; "
                f"{sum(self.kills.values())} kills {self.kills}, {self.pauses} broker pauses, "
                f"{self.restarts} database restarts, {self.respawns} worker restarts; "
                f"{self.invoices} invoices; {self.seconds:.0f}s")


@dataclass
class Expected:
    usage: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    subscriptions: list[str] = field(default_factory=list)
    hostile_offsets: int = 0
    applied_ids: int = 0

    def add(self, sub: str, metric: str, quantity: int) -> None:
        key = (sub, metric)
        self.usage[key] = self.usage.get(key, Decimal(0)) + quantity

    def invoiced(self, sub: str) -> Decimal:
        """Two months of Basic (November at the start, December at the roll) plus November's
        conversations over the allowance."""
        over = max(self.usage.get((sub, "conversations"), Decimal(0)) - INCLUDED, Decimal(0))
        return 2 * PRICE + (over * UNIT).quantize(CENT, ROUND_HALF_UP)


class Cluster:
    """The workers as OS processes on one stack, and the faults."""

    def __init__(self, stack: Stack, engine: Engine, logs: Path) -> None:
        self.stack = stack
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.respawns = 0
        self.spawned = 0
        self.log_of: dict[str, Path] = {}
        self.env = engine.subprocess_env(
            BILLING_MAX_POLL_RECORDS="500", BILLING_SESSION_TIMEOUT_MS="3000",
            BILLING_KAFKA_REQUEST_TIMEOUT_MS="4000", BILLING_LOG_FORMAT="json")

    def spawn(self, role: str) -> None:
        self.spawned += 1
        path = self.logs / f"{role}.{self.spawned}.log"
        self.log_of[role] = path
        out = path.open("ab")
        self.procs[role] = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "run", "--only", role, "--report-every", "5"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)

    def start(self) -> None:
        for role in ROLES:
            self.spawn(role)
        threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                for role, proc in list(self.procs.items()):
                    if proc.poll() is not None and not self.stopping.is_set():
                        self.respawns += 1
                        self.spawn(role)
            time.sleep(0.2)

    def kill(self, role: str) -> None:
        with self.lock:
            proc = self.procs[role]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.respawns += 1
            self.spawn(role)

    def pause_broker(self, seconds: float) -> None:
        pid = self.stack.broker.pid  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart_postgres(self) -> None:
        self.stack.postgres.restart("immediate")  # type: ignore[attr-defined]

    def stop(self) -> dict[str, int]:
        """SIGTERM every worker; returns the exit codes (0 = a clean stop)."""
        self.stopping.set()
        with self.lock:
            for role in self.procs:  # a process still importing has no handler yet
                _until(f"{role} started", lambda r=role: b"workers running" in
                       self.log_of[r].read_bytes(), 60)
            for proc in self.procs.values():
                proc.send_signal(signal.SIGTERM)
            return {role: proc.wait(60) for role, proc in self.procs.items()}


class Chaos(threading.Thread):
    """Runs the planned faults at random moments; `done` is set when all have happened."""

    def __init__(self, cluster: Cluster, size: Size, rng: random.Random, report: Report) -> None:
        super().__init__(daemon=True)
        self.cluster, self.rng, self.report = cluster, rng, report
        plan = (["kill"] * size.kills + ["pause"] * size.pauses + ["restart"] * size.restarts)
        rng.shuffle(plan)
        self.plan = plan
        self.pause_seconds = size.pause_seconds
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for action in self.plan:
                time.sleep(self.rng.uniform(0.5, 2.5))
                if action == "kill":
                    role = self.rng.choice(ROLES)
                    self.cluster.kill(role)
                    self.report.kills[role] = self.report.kills.get(role, 0) + 1
                elif action == "pause":
                    self.cluster.pause_broker(self.pause_seconds)
                    self.report.pauses += 1
                else:
                    self.cluster.restart_postgres()
                    self.report.restarts += 1
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.done.set()


def _usage(uid: str, sub: str, metric: str, quantity: int, at: datetime) -> tuple[bytes, bytes]:
    return sub.encode(), orjson.dumps({"id": uid, "subscription": sub, "metric": metric,
                                       "quantity": quantity, "at": at.isoformat()})


HOSTILE = [
    b"{not json", b'{"id": "h1", "subscription": "f-000", "metric": "conversations", '
    b'"quantity": -5, "at": "2026-11-03T00:00:00+00:00"}',
    b'{"id": "h2", "subscription": "nobody", "metric": "conversations", "quantity": 1, '
    b'"at": "2026-11-03T00:00:00+00:00"}',
    b'{"id": "h3", "subscription": "f-001", "metric": "conversations", "quantity": "NaN", '
    b'"at": "2026-11-03T00:00:00+00:00"}',
    b"\xff\xfe invalid utf-8",
]


def publish(bootstrap: str, topic: str,
            messages: list[tuple[bytes, bytes]], chunk: int = 2_000) -> dict[int, int]:
    """Publish in chunks, retrying a chunk whose acknowledgements did not come (the broker may
    be paused): the ids make a resent message harmless."""
    ends: dict[int, int] = {}
    producer = kafka.producer(bootstrap, request_timeout_ms=4000)
    for first in range(0, len(messages), chunk):
        while True:
            try:
                for p, end in kafka.publish(producer, topic, messages[first:first + chunk]).items():
                    ends[p] = max(ends.get(p, 0), end)
                break
            except Exception:
                producer.close(timeout=1)
                time.sleep(1)
                producer = kafka.producer(bootstrap, request_timeout_ms=4000)
    producer.close()
    return ends


def generate(size: Size, rng: random.Random, expected: Expected,
             report: Report) -> list[tuple[bytes, bytes]]:
    subs = [f"f-{i:03d}" for i in range(size.subscriptions)]
    heavy = set(subs[:5])  # these go over the allowance: an overage line
    messages = []
    for n in range(size.events):
        sub = rng.choice(subs)
        metric = "conversations" if rng.random() < 0.8 else "tokens"
        quantity = rng.randint(100, 400) if sub in heavy and metric == "conversations" \
            else rng.randint(1, 9)
        at = T0 + timedelta(days=1, seconds=rng.randrange(27 * 86_400))
        messages.append(_usage(f"u{n}", sub, metric, quantity, at))
        expected.add(sub, metric, quantity)
    redelivered = rng.sample(messages, size.events // 10)
    messages += redelivered
    messages += [(b"f-000", m) for m in HOSTILE]
    rng.shuffle(messages)
    report.events, report.redeliveries, report.hostile = size.events, len(redelivered), len(HOSTILE)
    expected.hostile_offsets = len(HOSTILE)
    expected.applied_ids = size.events + 5  # and the five subscribe commands
    return messages


def _commands(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        sub = f"{prefix}{i:03d}"
        out.append((sub.encode(), orjson.dumps({
            "id": f"create-{sub}", "type": "subscribe", "subscription": sub,
            "account": f"acct-{sub}", "plan": "basic", "at": T0.isoformat()})))
    return out + out  # each one delivered twice


def _until(what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except psycopg.Error:
            pass  # the database is restarting
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout:.0f}s: {what}")
        time.sleep(0.25)


def _advance_clock(cluster: Cluster, to: datetime) -> None:
    """`billing clock advance`, as an operator would run it, until it succeeds (it may meet the
    database restarting); advancing twice to the same time changes nothing."""
    while True:
        done = subprocess.run([sys.executable, "-m", "infra.cli", "clock", "advance", "--to",
                               to.isoformat()], cwd=ROOT, env=cluster.env, capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(1)


def run_scenario(size: Size, seed: int, workdir: Path, fsync: bool = False
                 ) -> tuple[Report, list[str]]:
    """Returns the report and the list of mismatches (empty when every figure is exact)."""
    rng = random.Random(seed)
    report, expected = Report(), Expected()
    settings = dataclasses.replace(
        Settings.from_env(), stack="embedded", data_dir=workdir / "stack", pg_fsync=fsync,
        topics=Topics.with_prefix(f"f{seed}."), partitions=4)
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with start_stack(settings) as stack:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        subs = [f"f-{i:03d}" for i in range(size.subscriptions)]
        engine.app.subscribe_many([(s, f"acct-{s}", "basic") for s in subs], T0)
        expected.subscriptions = subs + [f"c-{i:03d}" for i in range(5)]
        messages = generate(size, rng, expected, report)
        commands = _commands("c-", 5)
        report.commands = len(commands)
        cluster = Cluster(stack, engine, workdir)
        cluster.start()
        chaos = Chaos(cluster, size, rng, report)
        monitor = Monitor(engine)
        try:
            chaos.start()
            command_ends = publish(stack.kafka_bootstrap, settings.topics.commands,
                                   commands)
            usage_ends = publish(stack.kafka_bootstrap, settings.topics.usage, messages)
            _until("usage ingested, relayed and projected",
                   lambda: monitor.caught_up(usage_ends)
                   and monitor.ingested(command_ends, settings.topics.commands),
                   600)
            problems = check_usage(engine, expected)

            _advance_clock(cluster, MONTH_END + timedelta(minutes=30))  # rolled, grace open
            late = [_usage(f"late{n}", s, "conversations", 7, MONTH_END - timedelta(minutes=5))
                    for n, s in enumerate(subs)]
            for _, body in late:
                expected.add(orjson.loads(body)["subscription"], "conversations", 7)
            report.late = len(late)
            late_ends = publish(stack.kafka_bootstrap, settings.topics.usage, late)
            _until("late usage ingested",
                   lambda: monitor.ingested({p: max(late_ends.get(p, 0), usage_ends.get(p, 0))
                                             for p in set(late_ends) | set(usage_ends)}), 600)
            _advance_clock(cluster, MONTH_END + timedelta(hours=2))  # grace over: invoices
            _until("every fault injected", chaos.done.is_set, 600)
            if chaos.error is not None:
                raise chaos.error
            _until("invoices issued and projected",
                   lambda: monitor.invoices_done() and _invoiced_subscriptions(engine)
                   >= len(expected.subscriptions), 600)
            problems += check_invoices(engine, expected, report)
        finally:
            report.respawns = cluster.respawns
            codes = cluster.stop()
            engine.close()
        problems += [f"worker {role} exited {code} on SIGTERM"
                     for role, code in codes.items() if code != 0]
    report.seconds = time.monotonic() - started
    return report, problems


def _invoiced_subscriptions(engine: Engine) -> int:
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute("SELECT count(DISTINCT subscription_id) FROM invoices "
                           "WHERE issued_at >= %s", (MONTH_END,)).fetchone()
    return int(row[0]) if row else 0


def check_usage(engine: Engine, expected: Expected) -> list[str]:
    problems = []
    with psycopg.connect(engine.database_url) as conn:
        quota = {(s, m): Decimal(u) for s, m, u in conn.execute(
            "SELECT subscription_id, metric, used FROM quota WHERE used > 0")}
        applied = conn.execute("SELECT count(*) FROM usage_dedup").fetchone()
        subs = [r[0] for r in conn.execute("SELECT DISTINCT subscription_id FROM quota")]
    if quota != expected.usage:
        wrong = sorted(k for k in set(quota) | set(expected.usage)
                       if quota.get(k) != expected.usage.get(k))
        problems.append(f"quota differs for {wrong[:5]}: "
                        f"{[(quota.get(k), expected.usage.get(k)) for k in wrong[:5]]}")
    if applied is None or applied[0] != expected.applied_ids:
        problems.append(f"{applied} usage ids applied, expected {expected.applied_ids}")
    missing = set(expected.subscriptions) - set(subs)
    if missing:
        problems.append(f"subscriptions missing from the quota model: {sorted(missing)}")
    dead = _dead_letters(engine)
    if dead != expected.hostile_offsets:
        problems.append(f"{dead} distinct usage messages dead-lettered, expected "
                        f"{expected.hostile_offsets}")
    return problems


def _dead_letters(engine: Engine) -> int:
    """Distinct usage messages dead-lettered (a crash may duplicate a letter, never lose one)."""
    letters = dlq.read_letters(engine.kafka_bootstrap, engine.settings, quiet_seconds=3)
    return len({(x["partition"], x["offset"]) for x in letters
                if x["topic"] == engine.settings.topics.usage})


def check_invoices(engine: Engine, expected: Expected, report: Report) -> list[str]:
    problems = []
    with psycopg.connect(engine.database_url) as conn:
        numbers = [r[0] for r in conn.execute("SELECT number FROM invoices WHERE kind = "
                                              "'invoice' ORDER BY number")]
        invoiced = {s: Decimal(t) for s, t in conn.execute(
            "SELECT subscription_id, sum(subtotal) FROM invoices WHERE kind = 'invoice' "
            "GROUP BY subscription_id")}
    report.invoices = len(numbers)
    by_series: dict[str, list[int]] = {}
    for number in numbers:
        series, _, seq = number.rpartition("-")
        by_series.setdefault(series, []).append(int(seq))
    for series, seqs in by_series.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            problems.append(f"series {series}: numbers not 1..{len(seqs)} once each")
    for sub in expected.subscriptions:
        if invoiced.get(sub) != expected.invoiced(sub):
            problems.append(f"{sub}: invoiced {invoiced.get(sub)}, expected "
                            f"{expected.invoiced(sub)}")
    return problems
