"""Shared by the benchmarks: the machine line, appending figures to docs/BENCHMARKS.md, worker
memory and ingestion timed from the first commit."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.ops.memory import peak_rss_mib  # noqa: E402  (after the path is set)

__all__ = ["ROOT", "machine", "peak_rss_mib", "record", "timed_from_first_commit"]


def machine() -> str:
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cores} cores, {mem_gib:.0f} GiB, {platform.python_implementation()} "
            f"{platform.python_version()}")


def timed_from_first_commit(url: str, topic: str, done: Callable[[], bool]
                            ) -> tuple[float, int]:
    """Wait until `done()`, timing ingestion of `topic` from the first commit of its worker(s)
    (their start-up, and joining a consumer group, are not ingestion). Returns (seconds, events
    already ingested by that first commit), so the caller leaves those out of its count."""
    query = ("SELECT count(*), coalesce(sum(notification_id + 1), 0) FROM billing_tracking "
             "WHERE application_name LIKE %s")
    first, done_at_first = None, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not done():
            if first is None:
                row = conn.execute(query, (topic + ":%",)).fetchone()
                if row and row[0]:
                    first, done_at_first = time.perf_counter(), int(row[1])
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
