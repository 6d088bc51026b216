"""What a plan costs: its terms as copied into events, a period's charges in advance, an
upgrade's blended allowances, and which of two plans is the higher."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.billing.charges import Charge, charge, remaining_fraction
from domain.catalog.model import Catalog, Plan
from domain.shared.periods import length_of

ZERO = Decimal(0)


def dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def plan_terms(plan: Plan, period: str, catalog: Catalog) -> dict[str, Any]:
    terms = plan.terms(period)
    terms["catalog_id"] = catalog.id
    terms["catalog_version"] = catalog.version
    terms["thresholds"] = list(catalog.thresholds)
    terms["late_usage_grace_minutes"] = catalog.late_usage_grace_minutes
    if plan.user_plans and catalog.user_plan_features:  # absent otherwise, as before
        terms["user_plan_features"] = {s: {level: list(features) for level, features in
                                           sorted(levels.items())}
                                       for s, levels in sorted(catalog.user_plan_features.items())}
    return terms


def addon_users(addon: dict[str, Any], members: dict[str, dict[str, str]]) -> int:
    """How many times an add-on is charged: once, or per member (`users = "members"`), or per
    member holding a user plan of a solution (`users = "solution:<name>"`)."""
    users = addon.get("users")
    if users is None:
        return 1
    if users == "members":
        return len(members)
    solution = users.removeprefix("solution:")
    return sum(1 for plans in members.values() if solution in plans)


def is_upgrade(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if int(new["rank"]) != int(old["rank"]):
        return int(new["rank"]) > int(old["rank"])
    return dec(new["price"]) > dec(old["price"])


def blended_allowances(old: dict[str, Any], new: dict[str, Any], at: datetime,
                        start: datetime, end: datetime) -> dict[str, Any]:
    """After a prorated upgrade the cycle's allowance is the old plan's for the time elapsed
    plus the new plan's for the time left, in whole units (HALF_UP): usage before the upgrade
    cannot escape the old plan's overage, and the extra allowance is there at once."""
    left = remaining_fraction(at, start, end)
    blended = {
        # A metric the new plan does not meter keeps the old allowance for the time elapsed,
        # so usage before the upgrade is still billed past it.
        metric: {**allowance, "included": str((dec(allowance["included"]) * (1 - left))
                                               .quantize(Decimal(1), ROUND_HALF_UP))}
        for metric, allowance in old["allowances"].items() if metric not in new["allowances"]
    }
    for metric, allowance in new["allowances"].items():
        before = old["allowances"].get(metric)
        old_included = dec(before["included"]) if before else ZERO
        included = old_included * (1 - left) + dec(allowance["included"]) * left
        blended[metric] = {**allowance,
                           "included": str(included.quantize(Decimal(1), ROUND_HALF_UP))}
    return blended


def period_charges(terms: dict[str, Any], seats: int | None, addons: dict[str, Any],
                    members: dict[str, dict[str, str]], start: datetime, end: datetime,
                    catalog: Catalog | None) -> list[Charge]:
    """What a period costs in advance: plan fee, extra seats, add-ons, user plans."""
    lines: list[Charge] = []
    price = dec(terms["price"])
    if price > 0:
        lines.append(charge("plan", f"{terms['plan_name']} ({terms['period']})", 1, price, price,
                            start, end))
    included = terms.get("included_seats")
    seat_price = terms.get("extra_seat_price")
    if seats is not None and included is not None and seat_price is not None:
        extra = seats - int(included)
        if extra > 0:
            lines.append(charge("seats", "Extra seats", extra, dec(seat_price),
                                extra * dec(seat_price), start, end))
    months = length_of(terms).count  # add-ons and user plans: on month-counted plans only
    for addon_id, addon in sorted(addons.items()):
        users = addon_users(addon, members)
        amount = dec(addon["monthly_price"]) * months
        if users:
            lines.append(charge("addon", str(addon["name"]), users, amount, users * amount,
                                start, end, addon=addon_id))
    if catalog is not None and terms.get("user_plans"):
        for member, plans in sorted(members.items()):
            for solution, level in sorted(plans.items()):
                amount = catalog.user_plan_monthly_price(solution, level) * months
                lines.append(charge("user_plan", f"{solution}-{level} for {member}", 1, amount,
                                    amount, start, end, member=member, solution=solution,
                                    level=level))
    return lines
