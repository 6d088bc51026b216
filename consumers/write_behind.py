"""Write-behind for a consumer: batch N commits in a thread of its own while batch N+1 is parsed
and applied in memory, so the consumer's thread stops idling while PostgreSQL works (a third of
ingestion's wall time before).

At most one batch is in flight, and a batch is handed over only once the one before it has
committed. If a commit fails, the batch prepared on top of it is thrown away too: the failure is
raised to the consumer loop at the next hand-over (or flush), both batches' aggregates are
evicted, and the loop seeks back to the stored positions, as for any failed batch.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from domain.app.billing_app import BillingApplication, PreparedWrite
from domain.app.ports import UsageKey


@dataclass
class _InFlight:
    future: Future[None]
    write: PreparedWrite


class WriteBehind:
    def __init__(self, app: BillingApplication, name: str = "write-behind") -> None:
        self.app = app
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._in_flight: _InFlight | None = None

    @property
    def usage_keys_in_flight(self) -> frozenset[UsageKey]:
        """Usage ids applied by the batch being committed: not yet in the ledger, but no
        longer new."""
        return frozenset(self._in_flight.write.usage_keys) if self._in_flight else frozenset()

    def position_in_flight(self, tracking_name: str) -> int | None:
        """The input position the batch being committed records for this name, if any: a
        redelivery at or below it is already applied."""
        if self._in_flight is None:
            return None
        write = self._in_flight.write
        for tracking in (write.tracking, *write.more_tracking):
            if tracking is not None and tracking.application_name == tracking_name:
                return tracking.notification_id
        return None

    def submit(self, write: PreparedWrite, on_commit: Callable[[], None]) -> None:
        """Wait for the batch in flight (raising its failure), then start committing this one.
        `on_commit` runs in the writer thread right after this batch commits."""
        self.flush()
        future = self._executor.submit(self._commit, write, on_commit)
        self._in_flight = _InFlight(future, write)

    def _commit(self, write: PreparedWrite, on_commit: Callable[[], None]) -> None:
        self.app.commit_write(write)
        on_commit()

    def flush(self) -> None:
        """Wait until nothing is in flight; a failed commit is raised here, after evicting the
        aggregates it wrote (their in-memory state is ahead of the store)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            in_flight.future.result()
        except BaseException:
            self.app.evict(in_flight.write.aggregate_ids)
            raise
