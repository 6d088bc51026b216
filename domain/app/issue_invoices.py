"""Issuing invoices: for the events that invoice (`Subscription.invoices_on`), every
uninvoiced line up to the event under the next number of the issuer's gapless series, all in
one transaction with the input position."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Tracking

from domain.app.ports import ExclusiveSections
from domain.billing.invoice_series import InvoiceSeries, series_id
from domain.subscription.aggregate import Subscription

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication

Due = tuple[Subscription, int, datetime, dict[str, Any] | None]


def series_as_stored(app: BillingApplication, prefix: str, at: datetime,
                     touched: dict[str, InvoiceSeries]) -> InvoiceSeries:
    """The series as stored now: a cached one is brought forward with the events recorded
    since (by another issuer), one query, instead of being loaded whole again."""
    sid = series_id(prefix, at.year)
    if sid in touched:
        return touched[sid]
    found: Any = app.cached(sid)
    if found is not None:
        newer: Iterable[Any] = app.events.get(sid, gt=found.version)
        for later in newer:
            found = later.mutate(found)
    else:
        try:
            found = app.repository.get(sid)
        except AggregateNotFoundError:
            found = InvoiceSeries.open(prefix, at.year, at)
    assert isinstance(found, InvoiceSeries)
    touched[sid] = found
    return found


def refund_notes(app: BillingApplication, refunds: list[tuple[Subscription, datetime]],
                 series: dict[str, InvoiceSeries]) -> list[dict[str, Any]]:
    """Terminations' refunds, as credit notes numbered from the credit-note series (taken
    after the invoice series, always in that order)."""
    if not refunds:
        return []
    issuer = app.issuer
    prefix = issuer["credit_note_prefix"]
    notes = []
    with numbering(app, prefix):
        for subscription, at in sorted(refunds, key=lambda r: r[1]):
            numbers = series_as_stored(app, prefix, at, series)
            issued_at = numbers.issue_dates([at])[-1]
            number = numbers.assign(subscription.id, issued_at)
            notes.append(subscription.issue_refund_note(number, issuer, issued_at))
    return notes


def numbering(app: BillingApplication, prefix: str) -> AbstractContextManager[object]:
    """Issuers take turns from reading a series to committing its numbers. Correctness does
    not depend on it (the series' version check refuses a second writer), but without it
    parallel invoicers would mostly redo their batches."""
    recorder: object = app.recorder
    if not isinstance(recorder, ExclusiveSections):
        return nullcontext()
    return recorder.exclusive(f"invoice-series:{prefix}")


def invoice_batch(app: BillingApplication, triggers: Sequence[tuple[str, int, datetime, str]],
                  tracking: Tracking | None) -> list[dict[str, Any]]:
    """For each (subscription, triggering version, time, event kind) that invoices. The
    loading and the drafts are done first; only numbering and saving are done in the series'
    exclusive section, so several invoicer processes work in parallel. A writer outside it
    makes the save fail on the series version, and the caller redoes the batch: numbers stay
    gapless and unique."""
    app.revalidate(t[0] for t in triggers)
    app.preload(t[0] for t in triggers)
    issuer = app.issuer
    subscriptions: dict[str, Subscription] = {}
    due: list[Due] = []
    refunds: dict[str, tuple[Subscription, datetime]] = {}  # terminations' credit notes
    through: dict[str, int] = {}  # invoiced-through, counting this batch's invoices
    for subscription_id, version, at, kind in triggers:
        subscription = subscriptions.get(subscription_id) or app.find(subscription_id)
        if subscription is not None and kind == "Terminated" and subscription.refund_due_now():
            refunds[subscription_id] = (subscription, at)
            subscriptions[subscription_id] = subscription
        if subscription is None or not subscription.invoices_on(kind, version):
            continue
        done = through.get(subscription_id, subscription.invoiced_through)
        if version <= done or not any(line["event_version"] > done
                                      for line in subscription.lines_due(version)):
            continue  # nothing new since the last invoice, or already invoiced
        # A draft now is the invoice later (unless an earlier one of this batch for the same
        # subscription takes some of its lines: then it is drafted at issue).
        draft = (subscription.preview_invoice(issuer, at, version)
                 if subscription_id not in through else None)
        due.append((subscription, version, at, draft))
        through[subscription_id] = version
        subscriptions[subscription_id] = subscription
    if not due and not refunds:
        if tracking is not None:
            app.save_batch([], tracking)
        return []
    issued: list[dict[str, Any]] = []
    series: dict[str, InvoiceSeries] = {}
    by_year: dict[int, list[Due]] = {}
    # In time order (a subscription's triggers stay in version order): each invoice is dated
    # when its charges fell due unless one dated later has its number already.
    for item in sorted(due, key=lambda item: item[2]):
        by_year.setdefault(item[2].year, []).append(item)
    with numbering(app, issuer["invoice_prefix"]):
        try:
            # One numbering event per series and batch, the years in order.
            for _, items in sorted(by_year.items()):
                numbers = series_as_stored(app, issuer["invoice_prefix"], items[0][2], series)
                dates = numbers.issue_dates([at for _, _, at, _ in items])
                assigned = numbers.assign_many([s.id for s, _, _, _ in items], dates[-1])
                for number, issued_at, (subscription, version, at, draft) in zip(
                        assigned, dates, items, strict=True):
                    issued.append(subscription.issue_invoice(
                        number, issuer, version, issued_at,
                        draft=draft if issued_at == at else None))
            issued += refund_notes(app, list(refunds.values()), series)
            app.save_batch([*subscriptions.values(), *series.values()], tracking)
        except Exception:  # the aggregates in hand hold unsaved changes
            app.evict([*subscriptions, *series])
            raise
    return issued
