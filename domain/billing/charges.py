"""Charge lines and the money rules behind them.

Proration rule (documented in docs/domain.md): a price for a period [start, end) charged from
time t is `price x (end - t) / (end - start)`, with the durations counted exactly in
microseconds, and each line rounded HALF_UP to the cent on its own. A plan change mid-period is
two lines: a credit for the unused rest of the old item and a charge for the rest of the new one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
_MICRO = timedelta(microseconds=1)

Charge = dict[str, Any]


def round_money(amount: Decimal) -> Decimal:
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    return rounded if rounded != 0 else abs(rounded)  # never "-0.00"


def remaining_fraction(at: datetime, start: datetime, end: datetime) -> Decimal:
    """(end - at) / (end - start), exact, clamped to [0, 1]."""
    total = (end - start) // _MICRO
    if total <= 0:
        return Decimal(0)
    rest = min(max((end - at) // _MICRO, 0), total)
    return Decimal(rest) / Decimal(total)


def charge(kind: str, description: str, quantity: Decimal | int, unit_price: Decimal,
           amount: Decimal, start: datetime | None = None,
           end: datetime | None = None, **extra: Any) -> Charge:
    line: Charge = {
        "kind": kind,
        "description": description,
        "quantity": str(quantity),
        "unit_price": str(unit_price),
        "amount": str(round_money(amount)),
    }
    if start is not None and end is not None:
        line["period_start"] = start.isoformat()
        line["period_end"] = end.isoformat()
    line.update(extra)
    return line


def prorated(kind: str, description: str, quantity: Decimal | int, unit_price: Decimal,
             at: datetime, start: datetime, end: datetime, *, credit: bool = False,
             **extra: Any) -> Charge:
    """A charge (or, with credit=True, a credit) for the rest of [start, end) from `at`."""
    fraction = remaining_fraction(at, start, end)
    amount = Decimal(quantity) * unit_price * fraction
    return charge(kind, description, quantity, unit_price, -amount if credit else amount,
                  at, end, fraction=str(fraction.quantize(Decimal("0.000001"))), **extra)


def total(lines: list[Charge]) -> Decimal:
    return sum((Decimal(line["amount"]) for line in lines), Decimal(0))


def percentage_fee(rule: dict[str, str], quantity: Decimal) -> Decimal:
    """One usage event's fee under a percentage allowance (exact; the cycle's line rounds)."""
    fee = quantity * Decimal(rule["rate"]) / 100 + Decimal(rule.get("fixed_fee", "0"))
    if "per_event_min" in rule:
        fee = max(fee, Decimal(rule["per_event_min"]))
    if "per_event_max" in rule:
        fee = min(fee, Decimal(rule["per_event_max"]))
    return fee


def minimum_spend_line(metric: str, allowance: dict[str, Any], spent: Decimal,
                       start: datetime, end: datetime, full_end: datetime) -> list[Charge]:
    """The true-up of an allowance's `minimum_spend` for the cycle [start, end): what its usage
    charges (`spent`) fall short of the minimum."""
    if "minimum_spend" not in allowance:
        return []
    return true_up_line(f"{metric}: minimum spend", Decimal(allowance["minimum_spend"]), spent,
                        start, end, full_end, metric=metric)


def true_up_line(label: str, minimum: Decimal, spent: Decimal, start: datetime, end: datetime,
                 full_end: datetime, **extra: Any) -> list[Charge]:
    """What `spent` falls short of `minimum` for the cycle [start, end), the minimum prorated
    when the cycle was cut short (an upgrade that restarts the cycle) by (end - start) /
    (full_end - start)."""
    share = Decimal(1) - remaining_fraction(end, start, full_end)
    due = round_money(minimum * share)
    if spent >= due:
        return []
    prorated_note = "" if share == 1 else f" ({share.quantize(Decimal('0.000001'))} of it)"
    return [charge("true_up", f"{label} of {minimum} per period{prorated_note}, true-up", 1,
                   due - spent, due - spent, start, end, **extra)]


def settled_at_close(metric: str, allowance: dict[str, Any], lines: list[Charge],
                     billed: Decimal, start: datetime, end: datetime) -> tuple[list[Charge],
                                                                            Decimal]:
    """A metric charged during its cycle (billed on use, or progressively), at the cycle's
    close: `lines` (the cycle's usage priced in arrears) less what was `billed` during it, when
    more; and what the cycle's usage charges came to."""
    due = total(lines)
    if due <= billed:
        return [], billed
    rest = due - billed
    return [charge("overage", f"{measured_name(metric, allowance)} over allowance, settled at "
                   f"close: {due} for the cycle, {billed} billed during it", 1, rest, rest,
                   start, end, metric=metric)], due


def usage_lines(metric: str, allowance: dict[str, Any], used: Decimal, extra: Decimal,
                meter: dict[str, Any] | None, start: datetime, end: datetime,
                fees: Decimal | None = None) -> list[Charge]:
    """A metric's usage lines for a cycle: `overage_lines`, or with `group_by` the same
    pricing for each value of the dimension apart (its own allowance each), one set of lines
    per group in the order of their values."""
    if "group_by" not in allowance:
        return overage_lines(metric, allowance, used, extra, start, end, fees)
    lines = []
    for group, amount in sorted((meter or {}).get("groups", {}).items()):
        label = f"{metric} ({allowance['group_by']} {group or '(none)'})"
        lines += [{**line, "metric": metric, "group": group} for line in overage_lines(
            label, allowance, Decimal(amount), Decimal(0), start, end)]
    return lines


def measured_name(metric: str, allowance: dict[str, Any]) -> str:
    """The metric as an invoice line names it, with what was measured when not a sum."""
    aggregation = allowance.get("aggregation", "sum")
    if aggregation == "sum":
        return metric
    what = {"count": "events", "max": "peak", "latest": "last reading",
            "recurring": "level by time held",
            "unique": f"distinct {allowance.get('unique_of')}"}[aggregation]
    return f"{metric} ({what})"


def overage_lines(metric: str, allowance: dict[str, Any], used: Decimal, extra: Decimal,
                  start: datetime, end: datetime, fees: Decimal | None = None) -> list[Charge]:
    """Usage past (included + packs) on an overage metric, priced by the allowance's charge
    model (docs/catalog.md, "Charge models"): per unit, graduated tiers (each tier's units at
    its price, plus its flat fee once reached), volume (every unit at the price of the tier
    the total reaches, plus that tier's flat fee), package (each started package) or
    percentage (`fees`: the sum of the cycle's events' fees, `percentage_fee`; without it, the
    rate on `used` alone, an estimate for what-if costs)."""
    if allowance.get("limit") != "overage":
        return []
    over = used - Decimal(allowance["included"]) - extra
    if over <= 0:
        return []
    tiers = allowance.get("tiers")
    model = allowance.get("charge_model") or ("graduated" if tiers else "per_unit")
    name = measured_name(metric, allowance)
    if model == "per_unit":
        price = Decimal(allowance["overage_unit_price"])
        return [charge("overage", f"{name} over allowance", over, price, over * price,
                       start, end, metric=metric)]
    if model == "percentage":
        rule = allowance["percentage"]
        amount = used * Decimal(rule["rate"]) / 100 if fees is None else fees
        bounds = ", ".join(f"{label} {rule[key]}" for key, label in (
            ("fixed_fee", "plus"), ("per_event_min", "at least"),
            ("per_event_max", "at most")) if key in rule)
        description = f"{metric}: {rule['rate']} % of {used}" + (
            f", {bounds} per event" if bounds else "")
        return [charge("overage", description, used, Decimal(rule["rate"]) / 100, amount,
                       start, end, metric=metric)]
    if model == "package":
        size, price = (Decimal(allowance["package"][k]) for k in ("size", "price"))
        packages = (over / size).to_integral_value(ROUND_CEILING)
        return [charge("overage", f"{name} over allowance: {over} units, {packages} "
                       f"started packages of {size}", packages, price, packages * price,
                       start, end, metric=metric)]
    lines, floor = [], Decimal(0)
    for tier in tiers or []:
        ceiling = None if tier["up_to"] is None else Decimal(tier["up_to"])
        if model == "volume" and ceiling is not None and over > ceiling:
            floor = ceiling
            continue  # the total reaches a later tier
        in_tier = over if model == "volume" else (
            over if ceiling is None else min(over, ceiling)) - floor
        if in_tier <= 0:
            break
        price = Decimal(tier["unit_price"])
        bound = "and above" if ceiling is None else f"to {ceiling}"
        units = f"all {over} units at the tier" if model == "volume" else "units"
        lines.append(charge("overage", f"{name} over allowance, {units} {floor} {bound}",
                            in_tier, price, in_tier * price, start, end, metric=metric))
        if tier.get("flat_fee") is not None:
            fee = Decimal(tier["flat_fee"])
            lines.append(charge("overage", f"{name} over allowance, flat fee of the tier "
                                f"{floor} {bound}", 1, fee, fee, start, end, metric=metric))
        if model == "volume" or ceiling is None or over <= ceiling:
            break
        floor = ceiling
    return lines
