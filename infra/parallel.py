"""Spreading the billing clock over processes: each subscription's roll is independent, so
slices of the subscription list advance in parallel, each in its own process with its own
connections; the parent then moves the persisted clock once."""

from __future__ import annotations

import multiprocessing
from datetime import datetime
from typing import Any

from infra.config import Settings


def _advance_slice(args: tuple[str, Settings, datetime, list[str], int]) -> tuple[int, int]:
    from infra.engine import load_catalog
    from infra.eventstore import open_application

    url, settings, to, ids, batch = args
    app = open_application(url, load_catalog(settings))
    try:
        return app.advance_subscriptions(to, ids, batch)
    finally:
        app.close()


def process_runner(url: str, settings: Settings, processes: int,
                   batch: int = 1_000) -> Any:
    def run(to: datetime, ids: list[str]) -> tuple[int, int]:
        slices = [ids[i::processes] for i in range(processes)]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(_advance_slice, [(url, settings, to, s, batch) for s in slices])
        return sum(r[0] for r in results), sum(r[1] for r in results)

    return run
