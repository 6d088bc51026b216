"""Shared by the benchmarks: the machine line, appending figures to docs/BENCHMARKS.md, worker
memory and ingestion timed from the first commit."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.ops.memory import peak_rss_mib  # noqa: E402  (after the path is set)

__all__ = ["ROOT", "WORKER_ROLES", "PostgresCost", "committed_records", "fill_store", "machine",
           "memory_app", "peak_rss_mib", "process_cpu", "raw_log_read", "record",
           "start_workers", "timed_from_first_commit"]
WORKER_ROLES = ("ingest", "relay", "project")


class PostgresCost:
    """What PostgreSQL spends over a section: CPU seconds of the server (the postmaster, its
    live processes and those that ended) and bytes of WAL written. Linux (/proc) only."""

    def __init__(self, database_url: str) -> None:
        from urllib.parse import urlparse

        self.url = database_url
        port = str(urlparse(database_url).port or 5432)
        self.postmaster = next(
            (int(pid) for pid in os.listdir("/proc") if pid.isdigit()
             and _cmdline(pid)[:1] and _cmdline(pid)[0].endswith("postgres")
             and "-p" in _cmdline(pid) and port in _cmdline(pid)), None)
        self.cpu0, self.wal0 = self._cpu(), self._wal()

    def _cpu(self) -> float:
        if self.postmaster is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(pid) == self.postmaster:  # with its ended children's (cutime, cstime)
                total += sum(int(f) for f in fields[11:15])
            elif int(fields[1]) == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def _wal(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
            return int(row[0]) if row else 0

    def spent(self) -> tuple[float, int]:
        """(CPU seconds, WAL bytes) since this was made."""
        return self._cpu() - self.cpu0, self._wal() - self.wal0


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def fill_store(app: Any, subscriptions: int, batches: int, start: datetime) -> list[str]:
    """`subscriptions` on the basic plan, each with `batches` usage events (one domain event
    each), written straight to the store in batches of 1,000 subscriptions."""
    from decimal import Decimal

    from domain.contracts.usage import UsageItem

    ids = [f"sub-{i:06d}" for i in range(subscriptions)]
    for first in range(0, len(ids), 1_000):
        app.subscribe_many([(s, s, "basic") for s in ids[first:first + 1_000]], start)
    for n in range(batches):
        for first in range(0, len(ids), 1_000):
            subs = [app.get(s) for s in ids[first:first + 1_000]]
            for sub in subs:
                sub.record_usage([UsageItem(f"u{n}", sub.id, "tokens", Decimal(n + 1),
                                            start + timedelta(minutes=n), member=f"m{n % 3}")])
            app.save_batch(subs, None)
    return ids


def raw_log_read(recorder: Any) -> tuple[int, float]:
    """The baseline: the whole notification log read in pages of 5,000. (events, seconds)"""
    t0 = time.perf_counter()
    position, read = 1, 0
    while notifications := recorder.select_notifications(start=position, limit=5_000):
        read += len(notifications)
        position = notifications[-1].id + 1
    return read, time.perf_counter() - t0


def machine() -> str:
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cores} cores, {mem_gib:.0f} GiB, {platform.python_implementation()} "
            f"{platform.python_version()}")


def memory_app(subscriptions: int, at: datetime) -> Any:
    """The billing application on the library's in-memory store, with `subscriptions` of the
    default catalog's plans in turn (`sub-0000000`, ...), subscribed at `at` in chunks."""
    from domain.app.billing_app import BillingApplication
    from infra.config import Settings
    from infra.wiring.engine import load_catalog

    app = BillingApplication(load_catalog(Settings.from_env()),
                             env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    plans = ("basic", "scale", "enterprise")
    for first in range(0, subscriptions, 2_000):
        app.subscribe_many([(f"sub-{i:07d}", f"acct-{i}", plans[i % 3])
                            for i in range(first, min(first + 2_000, subscriptions))], at)
    return app


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a live process has used so far. Linux (/proc) only."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_COMMITTED = ("SELECT count(*), coalesce(sum(notification_id + 1), 0) FROM billing_tracking "
              "WHERE application_name LIKE %s")


def committed_records(url: str, topic: str) -> int:
    """How many of `topic`'s records the workers have committed (the sum of their stored
    positions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_COMMITTED, (topic + ":%",)).fetchone()
    return int(row[1]) if row else 0


def timed_from_first_commit(url: str, topic: str, done: Callable[[], bool],
                            on_first: Callable[[], None] | None = None) -> tuple[float, int]:
    """Wait until `done()`, timing ingestion of `topic` from the first commit of its worker(s)
    (their start-up, and joining a consumer group, are not ingestion). Returns (seconds, events
    already ingested by that first commit), so the caller leaves those out of its count.
    `on_first` is called at that first commit."""
    first, done_at_first = None, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not done():
            if first is None:
                row = conn.execute(_COMMITTED, (topic + ":%",)).fetchone()
                if row and row[0]:
                    first, done_at_first = time.perf_counter(), int(row[1])
                    if on_first is not None:
                        on_first()
            time.sleep(0.02)
    return time.perf_counter() - (first or time.perf_counter()), done_at_first


def record(title: str, lines: list[str], enabled: bool = True) -> None:
    command = "python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix()
                                    if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                                    *sys.argv[1:]])
    block = [f"## {title}: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
             f"- command: `{command.strip()}`", f"- machine: {machine()}", *lines]
    print("\n".join(block))
    if not enabled:
        return
    path = ROOT / "docs" / "BENCHMARKS.md"
    header = "# Benchmarks\n\nFigures appended by the scripts in `bench/`; newest last.\n"
    text = path.read_text() if path.exists() else header
    path.write_text(text + "\n" + "\n".join(block) + "\n")


def start_workers(env: dict[str, str], roles: tuple[str, ...] = WORKER_ROLES) -> list[Any]:
    """One `billing run --only ROLE` process per role, each running (its first line read)."""
    import subprocess

    workers = [subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "run", "--only", role, "--report-every", "3600"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for role in roles]
    for w in workers:
        assert w.stdout is not None
        w.stdout.readline()
    return workers
