"""Coupons on a subscription: applying one (its terms copied), and spending its periods as
invoices are discounted (domain/billing/discounts.py). Commands and appliers of
`Subscription`, named in its class body."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.catalog.coupons import Coupon
from domain.shared.errors import CommandRefused
from domain.shared.periods import require_aware

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

# Records one redemption of a coupon by a subscription, or refuses it (`coupon_exhausted`):
# the caller keeps the coupon's redemptions aggregate and saves it with the subscription.
Redeem = Callable[[Coupon, str, datetime], None]


def apply_coupon(self: Subscription, coupon: Coupon, at: datetime,
                 redeem: Redeem | None) -> None:
    """One coupon at a time: another is refused while this one has periods left. The
    redemption is recorded last, after every check of the subscription."""
    require_aware(at)
    self.check_not_ended()
    active = self.coupon_now()
    if active is not None:
        raise CommandRefused(f"coupon {active['id']} is still active on {self.id}",
                             "coupon_active")
    if coupon.id in getattr(self, "coupons_redeemed", []):
        raise CommandRefused(f"{self.id} has redeemed coupon {coupon.id} already",
                             "coupon_already_redeemed")
    coupon.check_redeemable(self.plan_id, at)
    if redeem is not None:
        redeem(coupon, self.id, at)
    self._coupon_applied(coupon=coupon.terms(), timestamp=at)


def _coupon_applied(self: Subscription, coupon: dict[str, Any], timestamp: datetime) -> None:
    self.coupon = {**coupon, "periods_left": coupon["periods"]}
    self.coupons_redeemed = [*getattr(self, "coupons_redeemed", []), coupon["id"]]


def coupon_now(self: Subscription) -> dict[str, Any] | None:
    """The active coupon's terms and `periods_left` (None: every period); absent from
    subscriptions (and snapshots) that never had one."""
    return getattr(self, "coupon", None)


def _spend_coupon_period(self: Subscription) -> None:
    """An invoice was discounted: one period of the coupon is spent."""
    coupon = self.coupon_now()
    if coupon is None or coupon["periods_left"] is None:
        return
    left = int(coupon["periods_left"]) - 1
    self.coupon = None if left <= 0 else {**coupon, "periods_left": left}
