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


def _measured(call: tuple[Callable[[Any], R], Any]) -> tuple[R, int, float]:
    func, job = call
    return func(job), os.getpid(), peak_rss_mib()


def map_in_processes(func: Callable[[Any], R], jobs: Sequence[Any]
                     ) -> tuple[list[R], dict[int, float]]:
    """`func` over `jobs`, one fresh process each (spawned: no state inherited). Returns the
    results in order and the peak resident memory of each process, by process id (one that
    ran two jobs reports its later, higher peak)."""
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        out = pool.map(_measured, [(func, job) for job in jobs], chunksize=1)
    return [result for result, _, _ in out], {pid: rss for _, pid, rss in out}


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

    def __init__(self, url: str, settings: Settings, processes: int, batch: int) -> None:
        self.url, self.settings, self.processes, self.batch = url, settings, processes, batch
        self.peak_rss_mib: dict[int, float] = {}

    def __call__(self, to: datetime, ids: list[str]) -> tuple[int, int]:
        slices = [ids[i::self.processes] for i in range(self.processes)]
        results, self.peak_rss_mib = map_in_processes(
            _advance_slice, [(self.url, self.settings, to, s, self.batch) for s in slices])
        return sum(r[0] for r in results), sum(r[1] for r in results)


def process_runner(url: str, settings: Settings, processes: int,
                   batch: int = 1_000) -> ProcessRunner:
    return ProcessRunner(url, settings, processes, batch)
