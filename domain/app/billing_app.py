"""The billing application: loads and saves Subscription aggregates in the event store.

Persistence is chosen by the composition root (`infra/`) through the eventsourcing environment;
this module imports only the event-sourcing base and the standard library.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from domain.billing.clock import CLOCK_ID, BillingClock
from domain.billing.invoice_document import issuer_with_defaults
from domain.billing.invoice_series import InvoiceSeries, series_id
from domain.catalog.model import Catalog
from domain.catalog.versions import (
    DEPLOYMENT_STREAM,
    CatalogVersions,
    DeploymentCatalog,
    catalog_stream_id,
)
from domain.contracts.commands import Command, Outcome, execute
from domain.shared.errors import SubscriptionExists, UnknownSubscription
from domain.subscription.aggregate import Subscription

UsageKey = tuple[str, str]  # (subscription id, usage id)


@runtime_checkable
class UsageLedger(Protocol):
    """Durable record of usage ids already applied, written in the same transaction as events."""

    def seen_usage(self, keys: Sequence[UsageKey]) -> set[UsageKey]: ...


@dataclass(frozen=True)
class PreparedWrite:
    """A save ready for the database (`BillingApplication.prepare_write`)."""

    events: list[StoredEvent]
    snapshots: list[StoredEvent]
    tracking: Tracking | None
    more_tracking: tuple[Tracking, ...]
    usage_keys: tuple[UsageKey, ...]
    aggregate_ids: tuple[str, ...]


@runtime_checkable
class ExclusiveSections(Protocol):
    """A named section one process at a time runs (released if the process dies)."""

    def exclusive(self, name: str) -> AbstractContextManager[object]: ...


T = TypeVar("T")


class BillingApplication(Application[str]):
    name = "billing"
    snapshotting_intervals = {Subscription: 50}
    cache_limit = 200_000

    def __init__(self, catalog: Catalog, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env=env)
        self.catalog = catalog
        # Aggregates this process has loaded or saved. A stale entry cannot do harm: saving it
        # fails with a version conflict, after which the caller evicts it and reloads.
        self._cache: dict[str, Any] = {}

    # --- loading ----------------------------------------------------------------------------

    def find(self, subscription_id: str) -> Subscription | None:
        cached = self._cache.get(subscription_id)
        if isinstance(cached, Subscription):
            return cached
        try:
            aggregate: object = self.repository.get(subscription_id)
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, Subscription)
        self._remember(aggregate)
        return aggregate

    def get(self, subscription_id: str) -> Subscription:
        aggregate = self.find(subscription_id)
        if aggregate is None:
            raise UnknownSubscription(f"no subscription {subscription_id!r}")
        return aggregate

    def load_as_stored(self, subscription_id: str, version: int | None = None) -> Subscription:
        """Bypass the cache (for reads that must reflect exactly what is stored)."""
        try:
            aggregate: object = self.repository.get(subscription_id, version=version)
        except AggregateNotFoundError:
            raise UnknownSubscription(f"no subscription {subscription_id!r}") from None
        assert isinstance(aggregate, Subscription)
        return aggregate

    def preload(self, ids: Iterable[str]) -> None:
        """Load the uncached subscriptions among `ids` in bulk (two queries, not one each)."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._cache]
        recorder: Any = self.recorder
        if len(missing) < 2 or not hasattr(recorder, "select_streams"):
            return
        snapshots: Any = self.snapshots
        if snapshots is None:
            return
        table = snapshots.recorder.events_table_name
        for snapshot, stored in recorder.select_streams(missing, table).values():
            aggregate: Any = None
            if snapshot is not None:
                aggregate = snapshots.mapper.to_domain_event(snapshot).mutate(None)
            for event in stored:
                domain_event: Any = self.mapper.to_domain_event(event)
                aggregate = domain_event.mutate(aggregate)
            if isinstance(aggregate, Subscription):
                self._remember(aggregate)

    def revalidate(self, ids: Iterable[str]) -> set[str]:
        """Drop cached aggregates that another process has changed since, so decisions (and
        refusals) are made on current state; one query for the whole batch. Returns the ids
        dropped."""
        cached = [i for i in set(ids) if i in self._cache]
        if not cached:
            return set()
        recorder: Any = self.recorder
        latest = recorder.max_versions(cached)
        dropped = set()
        for i in cached:
            stored = latest.get(i)
            # Behind the store: another writer. Ahead of it (or not in it yet): this process's
            # own write still committing (consumers.write_behind); a failed one is evicted.
            if stored is not None and stored > self._cache[i].version:
                self._cache.pop(i, None)
                dropped.add(i)
        return dropped

    def evict(self, subscription_ids: Iterable[str]) -> None:
        for sid in subscription_ids:
            self._cache.pop(sid, None)

    def _remember(self, aggregate: Any) -> None:
        if len(self._cache) >= self.cache_limit:
            self._cache.clear()
        self._cache[aggregate.id] = aggregate

    # --- saving -----------------------------------------------------------------------------

    def save_batch(self, aggregates: Sequence[Any],
                   tracking: Tracking | Sequence[Tracking] | None,
                   usage_keys: Sequence[UsageKey] = ()) -> None:
        """One transaction: new events, the input position(s) and the applied usage ids."""
        try:
            self.commit_write(self.prepare_write(aggregates, tracking, usage_keys))
        except Exception:
            self.evict(a.id for a in aggregates)
            raise

    def prepare_write(self, aggregates: Sequence[Any],
                      tracking: Tracking | Sequence[Tracking] | None,
                      usage_keys: Sequence[UsageKey] = ()) -> PreparedWrite:
        """Everything of a save but the database: the aggregates' new events and the snapshots
        due, encoded now (later changes to the aggregates cannot reach them), with the input
        position(s) and the usage ids. `commit_write` may then run in another thread."""
        more: Sequence[Tracking] = ()
        if tracking is not None and not isinstance(tracking, Tracking):
            tracking, more = (tracking[0], tracking[1:]) if tracking else (None, ())
        events: list[Any] = []
        # What ProcessingEvent.collect_events does, without its runtime Protocol checks (two
        # isinstance checks per aggregate: a tenth of the write path at 100,000 subscriptions).
        for aggregate in aggregates:
            events.extend(aggregate.collect_events())
            self._remember(aggregate)
        to_stored = self.mapper.to_stored_event
        return PreparedWrite(
            events=[to_stored(e) for e in events],
            snapshots=self._snapshots_due(events, {a.id: a for a in aggregates}),
            tracking=tracking, more_tracking=tuple(more), usage_keys=tuple(usage_keys),
            aggregate_ids=tuple(a.id for a in aggregates))

    def commit_write(self, write: PreparedWrite) -> None:
        kwargs: dict[str, Any] = {"usage_keys": write.usage_keys}
        if write.more_tracking:
            kwargs["more_tracking"] = write.more_tracking
        self.recorder.insert_events(write.events, tracking=write.tracking, **kwargs)
        if write.snapshots and self.snapshots is not None:
            self.snapshots.recorder.insert_events(write.snapshots)

    def _snapshots_due(self, events: Sequence[Any],
                       aggregates: Mapping[str, Any]) -> list[StoredEvent]:
        """Snapshots from the aggregates in hand. The library reloads each one from the store
        first: a round trip and a replay of 50 events per snapshot, which made ingestion slow
        down in bursts whenever many subscriptions crossed a multiple of the interval together.
        A snapshot at a later version than the crossing one is as good (loads take the newest
        snapshot at or below the version asked for)."""
        if not self.snapshots or not self.snapshotting_intervals:
            return []
        due: dict[str, Any] = {}
        for event in events:
            aggregate = aggregates.get(event.originator_id)
            if aggregate is None:
                continue
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and snapshot_due(aggregate.id, event.originator_version,
                                                     interval):
                due[aggregate.id] = aggregate
        stored = []
        for aggregate in due.values():
            snapshot_class: Any = getattr(type(aggregate), "Snapshot",
                                          type(self).snapshot_class)
            stored.append(self.snapshots.mapper.to_stored_event(snapshot_class.take(aggregate)))
        return stored

    def usage_ledger(self) -> UsageLedger:
        recorder: Any = self.recorder
        if not isinstance(recorder, UsageLedger):
            raise TypeError("the configured recorder does not keep a usage ledger")
        return recorder

    # --- use cases --------------------------------------------------------------------------

    def subscribe(self, subscription_id: str, account: str, plan_id: str, at: datetime,
                  **options: Any) -> None:
        if self.find(subscription_id) is not None:
            raise SubscriptionExists(f"subscription {subscription_id!r} exists")
        subscription = Subscription.subscribe(subscription_id, account, plan_id, self.catalog,
                                              at, **options)
        self.save_batch([subscription], tracking=None)

    def subscribe_many(self, specs: Sequence[tuple[Any, ...]], at: datetime) -> None:
        """(subscription id, account, plan id[, customer]) each; all or none, in one
        transaction."""
        created = []
        for subscription_id, account, plan_id, *customer in specs:
            if self.find(subscription_id) is not None:
                raise SubscriptionExists(f"subscription {subscription_id!r} exists")
            created.append(Subscription.subscribe(
                subscription_id, account, plan_id, self.catalog, at,
                customer=customer[0] if customer else None))
        self.save_batch(created, tracking=None)

    def handle(self, command: Command) -> Outcome:
        """Run one command, exactly once per (subscription, command id): a replayed id has no
        second effect and answers "duplicate". Refusals raise BillingError with a code."""
        key = command_key(command)
        for attempt in range(CONFLICT_RETRIES):
            if self.usage_ledger().seen_usage([key]):
                return Outcome(command, "duplicate", 0)
            self.revalidate([command.subscription])
            subscription, outcome = execute(self.find(command.subscription), command,
                                            self.catalog)
            try:
                self.save_batch([subscription], tracking=None, usage_keys=[key])
                return outcome
            except IntegrityError:
                # Another writer changed the subscription (or ran this command) first: the
                # cached aggregate is evicted by save_batch; reload and decide again.
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                conflict_backoff(attempt)
        raise AssertionError("unreachable")

    def publish_catalog(self, at: datetime, catalog: Catalog | None = None) -> bool:
        """Record a catalog version in the event store and bill with it from now on (new
        subscriptions at once, existing ones from their next cycle). The first one recorded
        chooses the deployment's catalog; later ones must be versions of it. Once per
        version; a changed text under a reused version label is refused."""
        catalog = catalog or self.catalog
        pointer = self._stored(DEPLOYMENT_STREAM, DeploymentCatalog)
        chosen_now = pointer is None
        if pointer is None:
            pointer = DeploymentCatalog.choose(catalog, at)
        pointer.check_same(catalog)
        versions = self._stored(catalog_stream_id(catalog.id), CatalogVersions)
        if versions is None:
            versions = CatalogVersions.register(catalog, at)
        changed = versions.publish(catalog, at)
        if changed or chosen_now:
            self.save(pointer, versions)
        if changed:
            self.catalog = catalog
        return changed

    def deployment_catalog(self, configured: Catalog, explicit: bool = True) -> Catalog:
        """The catalog this deployment bills with: its version in force as recorded in the
        store, whatever the writer's environment configured. `configured` counts only on a
        store with nothing recorded yet (the first start). Given explicitly (BILLING_CATALOG),
        it must name the deployment's catalog and may not reuse a recorded version label with
        other content; the default (no BILLING_CATALOG) defers to what the store recorded."""
        pointer = self._stored(DEPLOYMENT_STREAM, DeploymentCatalog)
        if pointer is not None and not explicit and pointer.catalog_id != configured.id:
            chosen = self._stored(catalog_stream_id(pointer.catalog_id), CatalogVersions)
            recorded = None if chosen is None else chosen.in_force()
            if recorded is not None:
                return recorded
        if pointer is not None:
            pointer.check_same(configured)
        versions = self._stored(catalog_stream_id(configured.id), CatalogVersions)
        if versions is None:
            return configured
        versions.check_version_label(configured)
        return versions.in_force() or configured

    def _stored(self, stream: str, kind: type[T]) -> T | None:
        try:
            found: object = self.repository.get(stream)
        except AggregateNotFoundError:
            return None
        assert isinstance(found, kind)
        return found

    # --- invoices ---------------------------------------------------------------------------

    @property
    def issuer(self) -> dict[str, Any]:
        return issuer_with_defaults(self.catalog.issuer)

    def _series(self, prefix: str, at: datetime,
                touched: dict[str, InvoiceSeries]) -> InvoiceSeries:
        """The series as stored now: a cached one is brought forward with the events recorded
        since (by another issuer), one query, instead of being loaded whole again."""
        sid = series_id(prefix, at.year)
        if sid in touched:
            return touched[sid]
        found: Any = self._cache.get(sid)
        if found is not None:
            newer: Iterable[Any] = self.events.get(sid, gt=found.version)
            for later in newer:
                found = later.mutate(found)
        else:
            try:
                found = self.repository.get(sid)
            except AggregateNotFoundError:
                found = InvoiceSeries.open(prefix, at.year, at)
        assert isinstance(found, InvoiceSeries)
        touched[sid] = found
        return found

    def _numbering(self, prefix: str) -> AbstractContextManager[object]:
        """Issuers take turns from reading a series to committing its numbers. Correctness
        does not depend on it (the series' version check refuses a second writer), but
        without it parallel invoicers would mostly redo their batches."""
        recorder: Any = self.recorder
        if not isinstance(recorder, ExclusiveSections):
            return nullcontext()
        return recorder.exclusive(f"invoice-series:{prefix}")

    def invoice_batch(self, triggers: Sequence[tuple[str, int, datetime, str]],
                      tracking: Tracking | None) -> list[dict[str, Any]]:
        """Issue the invoices due: for each (subscription, triggering version, time, event
        kind) that invoices (`Subscription.invoices_on`), every uninvoiced line under the next
        number of the issuer's series. All in one transaction
        with the input position. The loading and the drafts are done first; only numbering and
        saving are done in the series' exclusive section, so several invoicer processes work
        in parallel. A writer outside it makes the save fail on the series version, and the
        caller redoes the batch: numbers stay gapless and unique."""
        self.revalidate(t[0] for t in triggers)
        self.preload(t[0] for t in triggers)
        issuer = self.issuer
        subscriptions: dict[str, Subscription] = {}
        due: list[tuple[Subscription, int, datetime, dict[str, Any] | None]] = []
        through: dict[str, int] = {}  # invoiced-through, counting this batch's invoices
        for subscription_id, version, at, kind in triggers:
            subscription = subscriptions.get(subscription_id) or self.find(subscription_id)
            if subscription is None or not subscription.invoices_on(kind, version):
                continue
            done = through.get(subscription_id, subscription.invoiced_through)
            if version <= done or not any(line["event_version"] > done
                                          for line in subscription.lines_due(version)):
                continue  # nothing new since the last invoice, or already invoiced
            # A draft now is the invoice later (unless an earlier one of this batch for the
            # same subscription takes some of its lines: then it is drafted at issue).
            draft = (subscription.preview_invoice(issuer, at, version)
                     if subscription_id not in through else None)
            due.append((subscription, version, at, draft))
            through[subscription_id] = version
            subscriptions[subscription_id] = subscription
        if not due:
            if tracking is not None:
                self.save_batch([], tracking)
            return []
        issued: list[dict[str, Any]] = []
        series: dict[str, InvoiceSeries] = {}
        by_year: dict[int, list[tuple[Subscription, int, datetime, dict[str, Any] | None]]] = {}
        # In time order (a subscription's triggers stay in version order): each invoice is
        # dated when its charges fell due unless one dated later has its number already.
        for item in sorted(due, key=lambda item: item[2]):
            by_year.setdefault(item[2].year, []).append(item)
        with self._numbering(issuer["invoice_prefix"]):
            try:
                # One numbering event per series and batch, the years in order.
                for _, items in sorted(by_year.items()):
                    numbers = self._series(issuer["invoice_prefix"], items[0][2], series)
                    dates = numbers.issue_dates([at for _, _, at, _ in items])
                    assigned = numbers.assign_many([s.id for s, _, _, _ in items], dates[-1])
                    for number, issued_at, (subscription, version, at, draft) in zip(
                            assigned, dates, items, strict=True):
                        issued.append(subscription.issue_invoice(
                            number, issuer, version, issued_at,
                            draft=draft if issued_at == at else None))
                self.save_batch([*subscriptions.values(), *series.values()], tracking)
            except Exception:  # the aggregates in hand hold unsaved changes
                self.evict([*subscriptions, *series])
                raise
        return issued

    def issue_credit_note(self, subscription_id: str, invoice_number: str,
                          at: datetime) -> dict[str, Any]:
        for attempt in range(CONFLICT_RETRIES):
            self.revalidate([subscription_id])
            subscription = self.get(subscription_id)
            series: dict[str, InvoiceSeries] = {}
            prefix = self.issuer["credit_note_prefix"]
            try:
                with self._numbering(prefix):
                    number = self._series(prefix, at, series).assign(subscription_id, at)
                    document = subscription.issue_credit_note(invoice_number, number,
                                                              self.issuer, at)
                    self.save_batch([subscription, *series.values()], tracking=None)
                return document
            except Exception as error:
                self.evict([subscription_id, *series])
                if not isinstance(error, IntegrityError) or attempt == CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def clock(self) -> BillingClock | None:
        try:
            clock: object = self.repository.get(CLOCK_ID)
        except AggregateNotFoundError:
            return None
        assert isinstance(clock, BillingClock)
        return clock

    def advance_clock(self, to: datetime, subscription_ids: Iterable[str],
                      batch: int = 500,
                      runner: Callable[[datetime, list[str]], tuple[int, int]] | None = None
                      ) -> tuple[int, int]:
        """Apply everything due by `to` to every subscription (in batches of one transaction
        each), then move the persisted clock. Re-running after a crash redoes only what is
        still due. `runner` may spread the subscriptions over processes (each batch is
        independent). Returns (subscriptions changed, events written)."""
        clock = self.clock()
        if clock is None:
            clock = BillingClock.start(to)
        else:
            clock.check_forward(to)
        ids = list(subscription_ids)
        if runner is None:
            changed, events = self.advance_subscriptions(to, ids, batch)
        else:
            changed, events = runner(to, ids)
        if clock.now != to or clock.version > 1:
            clock.advance(to, changed, events)
        self.save(clock)
        return changed, events

    def advance_subscriptions(self, to: datetime, ids: Sequence[str],
                              batch: int = 500) -> tuple[int, int]:
        changed = events = 0
        for start in range(0, len(ids), batch):
            c, e = self._advance_batch(ids[start:start + batch], to)
            changed, events = changed + c, events + e
        return changed, events


    def _advance_batch(self, ids: Sequence[str], to: datetime) -> tuple[int, int]:
        for attempt in range(CONFLICT_RETRIES):
            changed: list[Subscription] = []
            events = 0
            self.revalidate(ids)
            self.preload(ids)
            for subscription_id in ids:
                subscription = self.find(subscription_id)
                if subscription is None:
                    continue
                emitted = subscription.advance_to(to, self.catalog)
                if emitted:
                    changed.append(subscription)
                    events += emitted
            try:
                self.save_batch(changed, tracking=None)
                return len(changed), events
            except IntegrityError:  # a concurrent writer: reload and redo what is still due
                self.evict(ids)
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                conflict_backoff(attempt)
        raise AssertionError("unreachable")


CONFLICT_RETRIES = 30


def snapshot_due(stream_id: str, version: int, interval: int) -> bool:
    """Every `interval` versions, at a phase of the stream's own (a stable hash of its id).
    Subscriptions that receive usage at the same pace would otherwise all cross a multiple of
    the interval in the same batch: at 5,000 events/s over 1,000 subscriptions, one batch in
    every ten seconds took 1,000 snapshots at once and stalled ingestion for about 250 ms."""
    return (version + zlib.crc32(stream_id.encode())) % interval == 0


def conflict_backoff(attempt: int) -> None:
    """A short randomised pause before retrying after a version conflict, so writers that keep
    meeting on one subscription (two ingesters and an operator) stop colliding in step."""
    time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))


def command_key(command: Command) -> UsageKey:
    """Commands share the idempotency ledger with usage, in their own id space."""
    return (command.subscription, f"cmd:{command.id}")
