"""The billing clock: apply to every subscription whatever became due by a time, then move
the persisted clock. Re-running after a crash redoes only what is still due."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from domain.app.ports import LedgerPruning
from domain.app.retry import retry_on_conflict
from domain.billing.clock import CLOCK_ID, BillingClock
from domain.subscription.aggregate import Subscription

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def advance_clock(app: BillingApplication, to: datetime, subscription_ids: Iterable[str],
                  batch: int = 500,
                  runner: Callable[[datetime, list[str]], tuple[int, int]] | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Everything due by `to`, in batches of one transaction each; `runner` may spread the
    subscriptions over processes (each batch is independent). `progress` is told how many
    subscriptions each finished batch held (without a runner). Returns (subscriptions
    changed, events written)."""
    clock = app.stored(CLOCK_ID, BillingClock)
    if clock is None:
        clock = BillingClock.start(to)
    else:
        clock.check_forward(to)
    ids = list(subscription_ids)
    if runner is None:
        changed, events = advance_subscriptions(app, to, ids, batch, progress)
    else:
        changed, events = runner(to, ids)
    if clock.now != to or clock.version > 1:
        clock.advance(to, changed, events)
    app.save(clock)
    return changed, events


def advance_subscriptions(app: BillingApplication, to: datetime, ids: Sequence[str],
                          batch: int = 500, progress: Callable[[int], None] | None = None
                          ) -> tuple[int, int]:
    changed = events = 0
    for start in range(0, len(ids), batch):
        c, e = _advance_batch(app, ids[start:start + batch], to)
        changed, events = changed + c, events + e
        if progress is not None:
            progress(len(ids[start:start + batch]))
    return changed, events


def _advance_batch(app: BillingApplication, ids: Sequence[str],
                   to: datetime) -> tuple[int, int]:
    def attempt() -> tuple[int, int]:
        changed: list[Subscription] = []
        events = 0
        app.revalidate(ids)
        app.preload(ids)
        for subscription_id in ids:
            subscription = app.find(subscription_id)
            if subscription is None:
                continue
            emitted = subscription.advance_to(to, app.catalog)
            if emitted:
                changed.append(subscription)
                events += emitted
        app.save_batch(changed, tracking=None)
        # Every one of them is now at `to`: usage whose window closed by then is refused as too
        # late by the subscription itself, so its id can leave the ledger.
        recorder: object = app.recorder
        if isinstance(recorder, LedgerPruning):
            recorder.prune_usage(list(ids), to)
        return len(changed), events

    # A concurrent writer: reload and redo what is still due.
    return retry_on_conflict(attempt, after_conflict=lambda: app.evict(ids))
