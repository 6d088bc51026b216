"""What the application needs from storage beyond the event library's recorder: typed ports
that the composition root's recorder implements (infra/eventstore/recorder.py). Where a port is
missing (the library's in-memory recorder in tests), the application does without it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from eventsourcing.persistence import StoredEvent

UsageKey = tuple[str, str]  # (subscription id, usage id)


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one command (applied, unchanged, refused with a code), recorded in the
    transaction that records its id, so that whoever sent it can ask (`GET /v1/commands/ID`)."""

    subscription: str
    command_id: str
    type: str
    account: str | None  # the subscription's account, or the one a subscribe command named
    result: str  # "applied", "unchanged", ... (Outcome.result) or "refused"
    code: str | None = None
    message: str | None = None
    events: int = 0


@runtime_checkable
class UsageLedger(Protocol):
    """Durable record of usage ids already applied, written in the same transaction as events."""

    def seen_usage(self, keys: Sequence[UsageKey]) -> set[UsageKey]: ...


@runtime_checkable
class LedgerPruning(Protocol):
    """The ledger forgets ids whose usage can no longer be accepted (docs/reliability.md)."""

    def prune_usage(self, subscription_ids: Sequence[str], before: datetime) -> int: ...


@runtime_checkable
class ExclusiveSections(Protocol):
    """A named section one process at a time runs (released if the process dies)."""

    def exclusive(self, name: str) -> AbstractContextManager[object]: ...


@runtime_checkable
class StreamReader(Protocol):
    """Many streams at once: the newest snapshot and the events after it, and the latest
    version of each (one query each, not one per stream)."""

    def select_streams(self, ids: Sequence[str], snapshots_table: str
                       ) -> dict[str, tuple[StoredEvent | None, list[StoredEvent]]]: ...

    def max_versions(self, ids: Sequence[str]) -> dict[str, int]: ...
