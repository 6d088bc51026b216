"""Coupons in the catalog (`[coupons.<id>]`, docs/catalog.md "Coupons"): a percentage or an
amount off the plan fee or the whole invoice, for one, N or every billing period, with an
optional redemption limit, last redemption time and list of plans. A subscription copies the
coupon's terms when the coupon is applied, so a later catalog never changes a discount given."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.catalog import fields
from domain.shared.errors import CatalogError, CommandRefused

COUPON_KEYS = {"name", "percent_off", "amount_off", "duration", "periods", "applies_to",
               "max_redemptions", "redeem_by", "plans"}
DURATIONS = ("once", "repeating", "forever")
COUPON_SCOPES = ("plan", "invoice")


@dataclass(frozen=True)
class Coupon:
    id: str
    name: str
    percent_off: Decimal | None
    amount_off: Decimal | None
    duration: str
    periods: int | None  # billing periods discounted; None: every one
    applies_to: str
    max_redemptions: int | None = None
    redeem_by: datetime | None = None
    plans: tuple[str, ...] = ()

    def terms(self) -> dict[str, Any]:
        """What a subscription keeps of the coupon (copied into CouponApplied)."""
        off = {"percent_off": str(self.percent_off)} if self.percent_off is not None \
            else {"amount_off": str(self.amount_off)}
        return {"id": self.id, "name": self.name, **off, "applies_to": self.applies_to,
                "periods": self.periods}

    def check_redeemable(self, plan_id: str, at: datetime) -> None:
        if self.redeem_by is not None and at > self.redeem_by:
            raise CommandRefused(f"coupon {self.id} could be applied until "
                                 f"{self.redeem_by.isoformat()}", "coupon_expired")
        if self.plans and plan_id not in self.plans:
            raise CommandRefused(f"coupon {self.id} applies to plans {', '.join(self.plans)}, "
                                 f"not {plan_id}", "coupon_not_applicable")


def parse_coupon(cid: str, body: dict[str, Any], plan_ids: set[str]) -> Coupon:
    where = f"coupon {cid}"
    fields.known_keys(body, COUPON_KEYS, where)
    if ("percent_off" in body) == ("amount_off" in body):
        raise CatalogError(f"{where}: give percent_off or amount_off (one of them)")
    percent = None
    if "percent_off" in body:
        percent = fields.amount(body["percent_off"], f"{where}.percent_off")
        if not 0 < percent <= 100:
            raise CatalogError(f"{where}.percent_off: above 0 and at most 100")
    amount = None if "amount_off" not in body else fields.money(body["amount_off"],
                                                                 f"{where}.amount_off")
    if amount is not None and amount <= 0:
        raise CatalogError(f"{where}.amount_off: above 0")
    duration = body.get("duration", "once")
    if not isinstance(duration, str) or duration not in DURATIONS:
        raise CatalogError(f"{where}: duration must be one of {DURATIONS}")
    periods = fields.whole(body, "periods", where, None)
    if (duration == "repeating") != (periods is not None) or periods == 0:
        raise CatalogError(f"{where}: duration = \"repeating\" goes with periods (1 or more)")
    scope = body.get("applies_to", "invoice")
    if not isinstance(scope, str) or scope not in COUPON_SCOPES:
        raise CatalogError(f"{where}: applies_to must be one of {COUPON_SCOPES}")
    limit = fields.whole(body, "max_redemptions", where, None)
    if limit == 0:
        raise CatalogError(f"{where}: max_redemptions is 1 or more (or absent: no limit)")
    plans = fields.names(body, "plans", where)
    unknown = sorted(set(plans) - plan_ids)
    if unknown:
        raise CatalogError(f"{where}: no plan {', '.join(unknown)}")
    return Coupon(
        id=cid, name=fields.text(body, "name", where), percent_off=percent, amount_off=amount,
        duration=duration, periods={"once": 1, "forever": None}.get(duration, periods),
        applies_to=scope, max_redemptions=limit,
        redeem_by=None if body.get("redeem_by") is None
        else fields.moment(body["redeem_by"], f"{where}.redeem_by"),
        plans=plans)
