"""Subscribing: one subscription, or many in one transaction (all or none)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.shared.errors import SubscriptionExists
from domain.subscription.aggregate import Subscription

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def subscribe(app: BillingApplication, subscription_id: str, account: str, plan_id: str,
              at: datetime, **options: Any) -> None:
    if app.find(subscription_id) is not None:
        raise SubscriptionExists(f"subscription {subscription_id!r} exists")
    subscription = Subscription.subscribe(subscription_id, account, plan_id, app.catalog, at,
                                          **options)
    app.save_batch([subscription], tracking=None)


def subscribe_many(app: BillingApplication, specs: Sequence[tuple[Any, ...]],
                   at: datetime) -> None:
    """(subscription id, account, plan id[, customer]) each; all or none, in one
    transaction."""
    created = []
    existing = app.existing([spec[0] for spec in specs])
    for subscription_id, account, plan_id, *customer in specs:
        if subscription_id in existing:
            raise SubscriptionExists(f"subscription {subscription_id!r} exists")
        created.append(Subscription.subscribe(
            subscription_id, account, plan_id, app.catalog, at,
            customer=customer[0] if customer else None))
    app.save_batch(created, tracking=None)
