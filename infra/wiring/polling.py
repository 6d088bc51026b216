"""Workers that poll a table rather than a topic (the relay, the anchor exporter): one loop
that retries after any failure, and the progress their health reports."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Progress:
    failures: int = 0
    failing_since: float | None = None  # monotonic time of the first failure in a row
    last_error: str | None = None
    progressed_at: float = field(default_factory=time.monotonic)

    def succeeded(self) -> None:
        self.progressed_at = time.monotonic()
        self.failing_since = None

    def failed(self, error: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:500]
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def health(self, stall_seconds: float, source: str, position: int | None,
               waiting: int | None) -> dict[str, Any]:
        """Stalled when something waits (`waiting` None: unknown, counted as waiting) and
        nothing progressed for `stall_seconds`."""
        now = time.monotonic()
        idle = now - self.progressed_at
        failing = 0.0 if self.failing_since is None else now - self.failing_since
        stalled = [source] if idle > stall_seconds and waiting != 0 else []
        return {"partitions": {source: {"position": position, "lag": waiting,
                                        "seconds_since_progress": round(idle, 1)}},
                "stalled": stalled, "failing_seconds": round(failing, 1),
                "failures": self.failures, "last_error": self.last_error,
                "healthy": not stalled and failing <= stall_seconds}


def run_polling(stop: threading.Event, run_once: Callable[[], int], progress: Progress,
                reset: Callable[[], None], what: str, idle_sleep: float) -> None:
    """`run_once()` until stopped, waiting `idle_sleep` when it did nothing; after a failure,
    `reset()` (forget cached positions and connections) and try again a second later."""
    while not stop.is_set():
        try:
            done = run_once()
            progress.succeeded()
            if done == 0:
                stop.wait(idle_sleep)
        except Exception as e:
            progress.failed(e)
            log.exception("%s failed; retrying from the recorded position", what)
            reset()
            stop.wait(1.0)
