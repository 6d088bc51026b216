"""A credit note for an issued invoice, numbered from the credit-note series."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.app.issue_invoices import numbering, series_as_stored
from domain.app.retry import retry_on_conflict
from domain.billing.invoice_series import InvoiceSeries

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def issue_credit_note(app: BillingApplication, subscription_id: str, invoice_number: str,
                      at: datetime) -> dict[str, Any]:
    series: dict[str, InvoiceSeries] = {}

    def attempt() -> dict[str, Any]:
        series.clear()
        app.revalidate([subscription_id])
        subscription = app.get(subscription_id)
        prefix = app.issuer["credit_note_prefix"]
        try:
            with numbering(app, prefix):
                number = series_as_stored(app, prefix, at, series).assign(subscription_id, at)
                document = subscription.issue_credit_note(invoice_number, number, app.issuer,
                                                          at)
                app.save_batch([subscription, *series.values()], tracking=None)
            return document
        except Exception:  # the aggregates in hand hold unsaved changes
            app.evict([subscription_id, *series])
            raise

    return retry_on_conflict(attempt)
