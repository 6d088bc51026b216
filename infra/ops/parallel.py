"""Spreading the billing clock over processes: each subscription's roll is independent, so
slices of the subscription list advance in parallel, each in its own process with its own
connections; the parent then moves the persisted clock once."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from infra.config import Settings
from infra.ops.memory import peak_rss_mib

R = TypeVar("R")


def _measured_at(call: tuple[int, Callable[[Any], R], Any]) -> tuple[int, R, int, float]:
    index, func, job = call
    return index, func(job), os.getpid(), peak_rss_mib()


def map_in_processes(func: Callable[[Any], R], jobs: Sequence[Any], processes: int = 0,
                     finished: Callable[[int], None] | None = None
                     ) -> tuple[list[R], dict[int, float]]:
    """`func` over `jobs` in `processes` fresh processes (default: one per job; spawned: no
    state inherited); `finished(i)` as job i ends. Returns the results in order and the peak
    resident memory of each process, by process id (one that ran two jobs reports its later,
    higher peak)."""
    results: dict[int, R] = {}
    peaks: dict[int, float] = {}
    with multiprocessing.get_context("spawn").Pool(processes or len(jobs)) as pool:
        for index, result, pid, rss in pool.imap_unordered(
                _measured_at, [(i, func, job) for i, job in enumerate(jobs)], chunksize=1):
            results[index], peaks[pid] = result, max(rss, peaks.get(pid, 0.0))
            if finished is not None:
                finished(index)
    return [results[i] for i in range(len(jobs))], peaks


def _advance_slice(args: tuple[str, Settings, datetime, list[str], int]) -> tuple[int, int]:
    from infra.wiring.engine import open_billing

    url, settings, to, ids, batch = args
    app = open_billing(url, settings)
    try:
        return app.advance_subscriptions(to, ids, batch)
    finally:
        app.close()


class ProcessRunner:
    """Advances the slices in a pool of fresh processes; after each run, `peak_rss_mib` holds
    the peak resident memory of each process, by process id."""

    def __init__(self, url: str, settings: Settings, processes: int, batch: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.url, self.settings, self.processes, self.batch = url, settings, processes, batch
        self.progress = progress  # told the size of each slice as it is done
        self.peak_rss_mib: dict[int, float] = {}

    def __call__(self, to: datetime, ids: list[str]) -> tuple[int, int]:
        # A slice per process, or smaller ones where progress is wanted (each slice opens the
        # application again: a few tenths of a second).
        progress = self.progress
        count = self.processes * (4 if progress else 1)
        slices = [ids[i::count] for i in range(count)]
        results, self.peak_rss_mib = map_in_processes(
            _advance_slice, [(self.url, self.settings, to, s, self.batch) for s in slices],
            processes=self.processes,
            finished=(lambda i: progress(len(slices[i]))) if progress else None)
        return sum(r[0] for r in results), sum(r[1] for r in results)


def process_runner(url: str, settings: Settings, processes: int, batch: int = 1_000,
                   progress: Callable[[int], None] | None = None) -> ProcessRunner:
    return ProcessRunner(url, settings, processes, batch, progress)
