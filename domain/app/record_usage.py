"""Use case `usage/record_batch`: apply a micro-batch of usage events exactly once.

Two steps so the caller can dead-letter refusals before anything commits:
`prepare_usage_batch` deduplicates and applies the batch to the aggregates in memory;
`BillingApplication.save_batch` then writes the new events, the applied usage ids and the input
position in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from eventsourcing.persistence import IntegrityError

from domain.app.billing_app import BillingApplication
from domain.app.ports import UsageKey
from domain.contracts.usage import UsageItem
from domain.shared.errors import BillingError, UnknownSubscription
from domain.subscription.aggregate import Subscription
from domain.subscription.metering import Pending, accept, routed


@dataclass
class PreparedBatch:
    aggregates: list[Subscription] = field(default_factory=list)
    usage_keys: list[UsageKey] = field(default_factory=list)
    # For each key: when its usage can no longer be accepted (its cycle's end plus the grace
    # window), after which the clock may prune it from the ledger.
    usage_until: list[datetime] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    time_events: int = 0
    rejected: list[tuple[int, BillingError]] = field(default_factory=list)  # (index, error)


class StaleRefusal(IntegrityError):
    """An optimistic batch refused usage on a cached subscription that another writer has
    changed since: the refusal may be wrong, and a refusal writes nothing that a unique key
    could catch. The caller redoes the batch cautiously."""


def prepare_usage_batch(app: BillingApplication, items: Sequence[UsageItem],
                        in_flight: Set[UsageKey] = frozenset(),
                        in_ledger: Set[UsageKey] | None = None, *,
                        optimistic: bool = False) -> PreparedBatch:
    """Items are indexed by position so refusals can be traced back to their input messages.
    `in_flight`: usage ids of a batch applied but still committing (they count as seen).
    `in_ledger`: the items' ids already in the ledger, when the caller has looked them up
    (`usage_keys`); otherwise they are looked up here.

    `optimistic`: neither the ledger nor the cached subscriptions' versions are read first.
    The write then fails on a unique key (the ledger's, or a stream's next version) if an id
    was applied before or another writer moved a subscription, and the caller redoes the
    batch cautiously; refusals, which write nothing, are checked against the store here and
    raise StaleRefusal if made on a moved subscription."""
    batch = PreparedBatch()
    first_seen: dict[UsageKey, int] = {}
    for index, item in enumerate(items):
        key = (item.subscription, item.id)
        if key in first_seen:
            batch.duplicates += 1  # the same id twice in one batch: the first one counts
        else:
            first_seen[key] = index
    if in_ledger is None:
        in_ledger = set() if optimistic else app.usage_ledger().seen_usage(list(first_seen))
    already = in_ledger | (first_seen.keys() & in_flight)
    batch.duplicates += len(already)

    if not optimistic:
        app.revalidate({item.subscription for item in items})
    app.preload(item.subscription for item in items)
    by_subscription: dict[str, list[int]] = {}
    for key, index in first_seen.items():
        if key not in already:
            by_subscription.setdefault(key[0], []).append(index)

    for subscription_id, indexes in by_subscription.items():
        subscription = app.find(subscription_id)
        if subscription is None:
            error = UnknownSubscription(f"no subscription {subscription_id!r}")
            batch.rejected.extend((i, error) for i in indexes)
            continue
        accepted = _apply(app, subscription, [(i, items[i]) for i in indexes], batch)
        if accepted or subscription.pending_events:
            batch.aggregates.append(subscription)
        batch.usage_keys.extend((subscription_id, items[i].id) for i, _ in accepted)
        batch.usage_until.extend(until for _, until in accepted)
        batch.accepted += len(accepted)
    if optimistic and batch.rejected:
        moved = app.revalidate({items[i].subscription for i, _ in batch.rejected})
        if moved:
            raise StaleRefusal(f"usage refused on {len(moved)} subscription(s) another "
                               f"writer has changed since they were cached")
    return batch


def usage_keys(items: Sequence[UsageItem]) -> list[UsageKey]:
    """The distinct (subscription, usage id) keys of a batch, in order."""
    return list(dict.fromkeys((item.subscription, item.id) for item in items))


def _apply(app: BillingApplication, subscription: Subscription,
           indexed: list[tuple[int, UsageItem]], batch: PreparedBatch
           ) -> list[tuple[int, datetime]]:
    """Apply in time order; whatever is due before an item's time happens first (as the clock
    would: a cycle roll, the closing of the last cycle, a daily reset), so each item lands in
    the cycle its time belongs to. Returns the accepted items' indexes, each with the end of
    its cycle's grace window."""
    indexed.sort(key=lambda pair: pair[1].at)
    accepted: list[tuple[int, datetime]] = []
    pending: list[UsageItem] = []
    pending_by_day: Pending = {}  # counted only where a daily cap refuses
    by_day = subscription.refuses_daily()
    due = subscription.next_due()
    limit = subscription.time_limit()
    # One object per cycle, not one per item: the ledger groups its rows by it.
    open_until, open_start = subscription.accepts_until(subscription.cycle_start), \
        subscription.cycle_start
    for index, item in indexed:
        if item.at >= limit:
            try:
                subscription.check_not_too_far_ahead(item.at)
            except BillingError as error:
                batch.rejected.append((index, error))
                continue
        if due is not None and item.at >= due:
            subscription.record_usage(pending, checked=True)
            pending, pending_by_day = [], {}
            batch.time_events += subscription.advance_to(item.at, app.catalog)
            due = subscription.next_due()
            limit = subscription.time_limit()
            by_day = subscription.refuses_daily()
            open_until, open_start = subscription.accepts_until(subscription.cycle_start), \
                subscription.cycle_start
        try:
            item = routed(item, subscription.check_usage(item, pending_by_day))
        except BillingError as error:
            batch.rejected.append((index, error))
            continue
        if by_day:
            accept(pending_by_day, item)
        pending.append(item)
        accepted.append((index, open_until if item.at >= open_start
                         else subscription.accepts_until(item.at)))
    subscription.record_usage(pending, checked=True)
    return accepted
