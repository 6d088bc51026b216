"""Ingestion committing behind (consumers/write_behind.py): batch N commits in its own thread
while batch N+1 is prepared. A failed commit throws away the batch prepared on top of it, and
every usage event still counts exactly once."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from domain.app.billing_app import PreparedWrite
from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import publish, store_totals, subscribe, until, usage

pytestmark = pytest.mark.integration
SUBS = ("sub-a", "sub-b", "sub-c")


def _small_polls(engine: Engine) -> None:
    engine.settings = replace(engine.settings, max_poll_records=40)


def _drive(engine: Engine, loop: Any, ends: dict[int, int]) -> None:
    monitor = Monitor(engine)
    until(lambda: monitor.ingested(ends), lambda: loop.poll_once(100))


def test_a_failed_commit_discards_the_batch_built_on_it_and_nothing_is_lost(
        engine: Engine) -> None:
    subscribe(engine, *SUBS)
    _small_polls(engine)
    messages = [usage(f"u{i}", SUBS[i % 3], quantity=i + 1) for i in range(400)]
    ends = publish(engine, messages)
    loop, ingestor = engine.ingestion()
    assert ingestor.writer is not None
    app = ingestor.app
    commits = {"n": 0}
    real_commit = app.commit_write

    def failing_second_and_fifth(write: PreparedWrite) -> None:
        # A database failure of these commits (before anything is written): the batches
        # prepared on top of them in memory must not survive it.
        commits["n"] += 1
        if commits["n"] in (2, 5):
            raise ConnectionError("injected: the database went away")
        real_commit(write)

    app.commit_write = failing_second_and_fifth  # type: ignore[method-assign]
    _drive(engine, loop, ends)
    loop.close()

    assert loop.failures >= 2
    expected = {(s, "tokens"): Decimal(sum(i + 1 for i in range(400) if SUBS[i % 3] == s))
                for s in SUBS}
    assert store_totals(engine) == expected
    assert ingestor.stats.accepted == 400 and ingestor.stats.duplicates == 0


def test_an_id_redelivered_while_its_first_copy_is_still_committing_counts_once(
        engine: Engine) -> None:
    subscribe(engine, *SUBS)
    _small_polls(engine)
    first = [usage(f"u{i}", SUBS[i % 3], quantity=1) for i in range(120)]
    # Each id comes back 40 messages later: in the next poll, while the batch holding its
    # first copy is (usually) still committing.
    messages = []
    for start in range(0, 120, 40):
        messages += first[start:start + 40] + first[start:start + 40]
    ends = publish(engine, messages)
    loop, ingestor = engine.ingestion()
    _drive(engine, loop, ends)
    loop.close()

    assert store_totals(engine) == {(s, "tokens"): Decimal(40) for s in SUBS}
    assert ingestor.stats.accepted == 120 and ingestor.stats.duplicates == 120


def test_ids_looked_up_while_their_first_copies_commit_count_once(engine: Engine) -> None:
    """A full poll's ids are looked up in the ledger while the poll before it commits: the
    lookup cannot see that poll's ids yet, so they count as seen from the start."""
    subscribe(engine, "sub-a")  # one subscription: one partition, polls of exactly 40
    _small_polls(engine)
    engine.settings = replace(engine.settings, optimistic_ingest=False)  # lookups only then
    messages = []
    for start in range(0, 120, 40):
        first = [usage(f"u{i}", "sub-a", quantity=1) for i in range(start, start + 40)]
        messages += first + first
    ends = publish(engine, messages)
    loop, ingestor = engine.ingestion()
    app = ingestor.app
    real_commit = app.commit_write

    def slow_commit(write: PreparedWrite) -> None:
        time.sleep(0.2)  # the next poll is read and looked up while this one commits
        real_commit(write)

    app.commit_write = slow_commit  # type: ignore[method-assign]
    _drive(engine, loop, ends)
    loop.close()

    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(120)}
    assert ingestor.stats.accepted == 120 and ingestor.stats.duplicates == 120
    assert ingestor.looked_ahead > 0
    # Counted once without the ledger's unique key having to refuse a batch (that backstop
    # would also keep the totals right, at the price of a failed batch and a retry).
    assert loop.failures == 0


def test_in_line_commits_when_write_behind_is_off(engine: Engine) -> None:
    engine.settings = replace(engine.settings, write_behind=False)
    subscribe(engine, "sub-a")
    ends = publish(engine, [usage(f"u{i}", "sub-a", quantity=2) for i in range(30)])
    loop, ingestor = engine.ingestion()
    assert ingestor.writer is None
    _drive(engine, loop, ends)
    loop.close()
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(60)}


def test_a_position_moved_on_by_another_process_is_read_again(engine: Engine) -> None:
    """Each ingester remembers the positions it committed rather than reading them before
    every poll; records another process applied meanwhile still count once."""
    subscribe(engine, "sub-a")
    first_ends = publish(engine, [usage(f"u{i}", "sub-a", quantity=1) for i in range(50)])
    mine, ingestor = engine.ingestion()
    _drive(engine, mine, first_ends)
    ends = publish(engine, [usage(f"v{i}", "sub-a", quantity=1) for i in range(50)])
    other, _ = engine.ingestion()  # starts from the stored positions
    _drive(engine, other, ends)
    other.close()
    # `mine` now reads the records `other` applied, its own last position still remembered.
    more = publish(engine, [usage(f"w{i}", "sub-a", quantity=1) for i in range(50)])
    _drive(engine, mine, more)
    mine.close()
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(150)}
    assert ingestor.stats.accepted == 100  # its own 50 and the w's; the v's were not its own
