"""Spreading the billing clock over processes: each subscription's roll is independent, so
slices of the subscription list advance in parallel, each in its own process with its own
connections; the parent then moves the persisted clock once."""

from __future__ import annotations

import multiprocessing
import os
from datetime import datetime

from infra.config import Settings
from infra.memory import peak_rss_mib


def _advance_slice(args: tuple[str, Settings, datetime, list[str], int]
                   ) -> tuple[int, int, int, float]:
    from infra.engine import load_catalog
    from infra.eventstore import open_application

    url, settings, to, ids, batch = args
    app = open_application(url, load_catalog(settings))
    try:
        changed, events = app.advance_subscriptions(to, ids, batch)
    finally:
        app.close()
    return changed, events, os.getpid(), peak_rss_mib()


class ProcessRunner:
    """Advances the slices in a pool of fresh processes; after each run, `peak_rss_mib` holds
    the peak resident memory of each process, by process id."""

    def __init__(self, url: str, settings: Settings, processes: int, batch: int) -> None:
        self.url, self.settings, self.processes, self.batch = url, settings, processes, batch
        self.peak_rss_mib: dict[int, float] = {}

    def __call__(self, to: datetime, ids: list[str]) -> tuple[int, int]:
        slices = [ids[i::self.processes] for i in range(self.processes)]
        with multiprocessing.get_context("spawn").Pool(self.processes) as pool:
            results = pool.map(_advance_slice, [(self.url, self.settings, to, s, self.batch)
                                                for s in slices], chunksize=1)
        self.peak_rss_mib = {r[2]: r[3] for r in results}  # a later slice's peak is higher
        return sum(r[0] for r in results), sum(r[1] for r in results)


def process_runner(url: str, settings: Settings, processes: int,
                   batch: int = 1_000) -> ProcessRunner:
    return ProcessRunner(url, settings, processes, batch)
