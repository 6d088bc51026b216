"""Who redeemed a coupon: one aggregate per coupon of a catalog, written in the same transaction
as the subscription the coupon is applied to, so two subscriptions redeeming the last use at
once meet in the event store's version check: one is decided again, and refused."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate, event

from domain.shared.errors import CommandRefused
from domain.shared.events import CreatedEvent, DomainEvent, Snapshot
from domain.shared.topics import keep_topics


def redemptions_id(catalog_id: str, coupon_id: str) -> str:
    return f"coupon:{catalog_id}:{coupon_id}"


class CouponRedemptions(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    class Opened(CreatedEvent):
        class_version = 1
        catalog_id: str
        coupon_id: str

    class Redeemed(DomainEvent):
        class_version = 1
        subscription: str

    @event(Opened)
    def __init__(self, id: str, catalog_id: str, coupon_id: str, timestamp: datetime) -> None:
        self.coupon_id = coupon_id
        self.redeemed_by: list[str] = []

    @classmethod
    def open(cls, catalog_id: str, coupon_id: str, at: datetime) -> CouponRedemptions:
        return cls(id=redemptions_id(catalog_id, coupon_id), catalog_id=catalog_id,
                   coupon_id=coupon_id, timestamp=at)

    def redeem(self, subscription: str, limit: int | None, at: datetime) -> None:
        if limit is not None and len(self.redeemed_by) >= limit:
            raise CommandRefused(f"coupon {self.coupon_id} was redeemed {limit} times, its "
                                 f"limit", "coupon_exhausted")
        self._redeemed(subscription=subscription, timestamp=at)

    @event(Redeemed)
    def _redeemed(self, subscription: str, timestamp: datetime) -> None:
        self.redeemed_by.append(subscription)


keep_topics("domain.coupon_redemptions", CouponRedemptions)
