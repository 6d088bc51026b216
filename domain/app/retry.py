"""Redoing a use case that met another writer (a version conflict on a stream or a unique
key of the usage ledger): it reloads and decides again, a bounded number of times."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

T = TypeVar("T")
CONFLICT_RETRIES = 30


def conflict_backoff(attempt: int) -> None:
    """A short randomised pause before retrying after a version conflict, so writers that keep
    meeting on one subscription (two ingesters and an operator) stop colliding in step."""
    time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))


def retry_on_conflict(attempt: Callable[[], T],
                      after_conflict: Callable[[], None] = lambda: None) -> T:
    """`attempt()` until it does not meet a conflict (at most CONFLICT_RETRIES times);
    `after_conflict` drops what the attempt held (cached aggregates) before the next one."""
    for n in range(CONFLICT_RETRIES):
        try:
            return attempt()
        except IntegrityError:
            after_conflict()
            if n == CONFLICT_RETRIES - 1:
                raise
            conflict_backoff(n)
    raise AssertionError("unreachable")
