"""How usage events make a metric's measured amount (its allowance's `aggregation`), and which
charge an event counts for (filtered charges). Pure functions of stored usage records, used both
by the commands (to compute a UsageRecorded event's `totals`: the change of each measured
amount) and by the appliers (to move the state), so the two cannot disagree.

A meter is the extra state an aggregation keeps beside the measured amount, as JSON-ready text:
`latest` {"at"}: the time of the value kept; `unique` {"seen": {value: 1}}; `recurring`
{"since", "held"}: when the level last changed, and the level-seconds held since the cycle began.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.contracts.usage import UsageItem
from domain.shared.errors import CommandRefused, InvalidUsage, UnknownMetric
from domain.shared.shared_values import kept_per_shared_value

ZERO = Decimal(0)
MAX_UNIQUE_VALUES = 100_000  # per metric and cycle: a meter is part of the aggregate's state
MAX_GROUPS = 10_000  # per grouped metric and cycle: each is a line on the cycle's invoice
LEVEL_UNITS = Decimal("0.000001")  # a recurring metric's billed units, rounded half up

MICROSECOND = timedelta(microseconds=1)

Meter = dict[str, Any]


def charge_of(allowances: Mapping[str, Any], item: UsageItem) -> str:
    """The allowance an event counts for: the filtered charge of its metric whose `where` it
    matches, else the metric's own allowance. Raises UnknownMetric."""
    own = allowances.get(item.metric)
    if own is not None and "of" in own:
        raise UnknownMetric(f"{item.metric!r} is a filtered charge of {own['of']!r}: report "
                            f"{own['of']!r} with its properties")
    for charge, allowance in allowances.items():
        if allowance.get("of") == item.metric and all(
                item.dimension(name) in values for name, values in allowance["where"].items()):
            return charge
    if own is None:
        raise UnknownMetric(f"no charge of this plan counts {item.metric!r}"
                            + (" with these properties" if _filtered(allowances, item.metric)
                               else ""))
    return item.metric


def _filtered(allowances: Mapping[str, Any], metric: str) -> bool:
    return any(a.get("of") == metric for a in allowances.values())


@kept_per_shared_value
def priced_properties(allowances: Mapping[str, Any]) -> frozenset[str]:
    """The event properties these terms price on (counted distinct, or filtered by): the only
    ones a stored usage record keeps; the others have no effect on billing, and would only
    grow the store (the usage topic keeps the events whole)."""
    if not any("unique_of" in a or "of" in a or "group_by" in a for a in allowances.values()):
        return frozenset()
    names = {a[key] for a in allowances.values() for key in ("unique_of", "group_by")
             if key in a}
    names |= {name for a in allowances.values() for name in a.get("where", {})}
    return frozenset(names - {"member", "workspace"})


@kept_per_shared_value
def routes(allowances: Mapping[str, Any]) -> bool:
    """Whether any charge of these terms is filtered (events then need routing)."""
    return any("of" in a for a in allowances.values())


def check_measurable(allowance: Mapping[str, Any], item: UsageItem, meter: Meter | None,
                     late: bool) -> None:
    """What an aggregation refuses: a zero for a summed metric (it adds nothing: a producer's
    mistake), a unique metric's event without its dimension or past the values kept per
    cycle, a level out of time order for a recurring metric."""
    aggregation = allowance.get("aggregation", "sum")
    if aggregation == "sum" and not item.quantity:
        raise InvalidUsage(f"quantity 0 adds nothing to {item.metric} (summed)",
                           "invalid_quantity")
    if "group_by" in allowance and meter and len(meter["groups"]) >= MAX_GROUPS \
            and (item.dimension(allowance["group_by"]) or "") not in meter["groups"]:
        raise CommandRefused(f"{item.metric}: {MAX_GROUPS} groups this cycle already",
                             "too_many_values")
    if aggregation == "unique":
        value = item.dimension(allowance["unique_of"])
        if value is None:
            raise InvalidUsage(f"{item.metric} counts distinct {allowance['unique_of']!r}: the "
                               f"event has none", "missing_property")
        seen = meter["seen"] if meter else {}
        if value not in seen and len(seen) >= MAX_UNIQUE_VALUES:
            raise CommandRefused(f"{item.metric}: {MAX_UNIQUE_VALUES} distinct values this "
                                 f"cycle already", "too_many_values")
    if aggregation == "recurring" and (
            late or (meter and item.at < datetime.fromisoformat(meter["since"]))):
        raise CommandRefused(
            f"{item.metric} is a recurring level: a change at {item.at.isoformat()} comes "
            f"before its last change" + (f" ({meter['since']})" if meter and not late
                                         else " (in a closed cycle)"),
            "level_out_of_order")


def measured(allowance: Mapping[str, Any], used: Decimal, meter: Meter | None,
             items: list[dict[str, Any]]) -> tuple[Decimal, Meter | None]:
    """The measured amount and meter after `items` (records of one metric, checked)."""
    aggregation = allowance.get("aggregation", "sum")
    if "group_by" in allowance:  # a sum, kept per value of the dimension too
        groups = dict(meter["groups"]) if meter else {}  # at most MAX_GROUPS: check_measurable
        for item in items:
            group = group_of(item, allowance["group_by"])
            groups[group] = str(Decimal(groups.get(group, "0")) + Decimal(item["quantity"]))
        return used + sum((Decimal(i["quantity"]) for i in items), ZERO), {"groups": groups}
    if aggregation == "sum":
        return used + sum((Decimal(i["quantity"]) for i in items), ZERO), meter
    if aggregation == "count":
        return used + len(items), meter
    if aggregation == "max":
        return max([used, *(Decimal(i["quantity"]) for i in items)]), meter
    if aggregation == "unique":
        name = allowance["unique_of"]
        seen = dict(meter["seen"]) if meter else {}
        for item in items:
            seen[_dimension(item, name)] = 1
        return Decimal(len(seen)), {"seen": seen}
    ordered = sorted(items, key=lambda i: datetime.fromisoformat(i["at"]))
    if aggregation == "latest":
        kept = datetime.fromisoformat(meter["at"]) if meter else None
        for item in ordered:
            at = datetime.fromisoformat(item["at"])
            if kept is None or at >= kept:
                kept, used = at, Decimal(item["quantity"])
        return used, None if kept is None else {"at": kept.isoformat()}
    # recurring: the level held since the last change, counted in level-seconds
    since = datetime.fromisoformat(meter["since"]) if meter else None
    held = Decimal(meter["held"]) if meter else ZERO
    for item in ordered:
        at = datetime.fromisoformat(item["at"])
        if since is not None:
            held += used * _seconds(at - since)
        since, used = at, Decimal(item["quantity"])
    assert since is not None
    return used, {"since": since.isoformat(), "held": str(held)}


def group_of(record: Mapping[str, Any], name: str) -> str:
    """The group an event counts in ("" for an event without the dimension)."""
    value = record.get(name) if name in ("member", "workspace") else \
        record.get("properties", {}).get(name)
    return value if isinstance(value, str) else ""


def _dimension(record: dict[str, Any], name: str) -> str:
    value = record.get(name) if name in ("member", "workspace") else \
        record.get("properties", {}).get(name)
    assert isinstance(value, str)
    return value


def recurring_units(level: Decimal, meter: Meter | None, start: datetime,
                    nominal_end: datetime, at: datetime) -> Decimal:
    """A recurring metric's billed units for the cycle [start, nominal_end) closed at `at`:
    each level weighted by the share of the whole cycle it held, so a cycle cut short bills
    less. The level before the first report of the subscription's life is zero."""
    held = Decimal(meter["held"]) if meter else ZERO
    since = datetime.fromisoformat(meter["since"]) if meter else at
    held += level * _seconds(at - since)
    return (held / _seconds(nominal_end - start)).quantize(LEVEL_UNITS, ROUND_HALF_UP)


def _seconds(delta: timedelta) -> Decimal:
    """Non-negative: a close or change timed before the level's last change (a command dated
    before future-dated usage) holds the level for no time, never for less than none."""
    return Decimal(max(delta // MICROSECOND, 0)) / 1_000_000


def measured_totals(allowances: Mapping[str, Any], used: Mapping[str, Decimal],
                    meters: Mapping[str, Meter], records: list[dict[str, Any]]) -> dict[str, str]:
    """A UsageRecorded event's `totals`: how much each metric's measured amount changes with
    `records` (negative when a level falls). Summed metrics: the sum of their quantities."""
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_metric.setdefault(record["metric"], []).append(record)
    totals = {}
    for metric, group in sorted(by_metric.items()):
        before = used.get(metric, ZERO)
        after, _ = measured(allowances.get(metric, {}), before, meters.get(metric), group)
        totals[metric] = str(after - before)
    return totals


def apply_measures(allowances: Mapping[str, Any], used: dict[str, Decimal],
                   meters: dict[str, Meter], records: list[dict[str, Any]],
                   totals: Mapping[str, str]) -> None:
    """Move `used` and `meters` by a UsageRecorded event: summed metrics by their totals, the
    others measured again from the records."""
    levels: dict[str, list[dict[str, Any]]] = {}
    for metric, total in totals.items():
        if not measured_apart(allowances.get(metric, {})):
            used[metric] = used.get(metric, ZERO) + Decimal(total)
        else:
            levels[metric] = []
    if not levels:
        return
    for record in records:
        if record["metric"] in levels:
            levels[record["metric"]].append(record)
    for metric, group in levels.items():
        used[metric], meter = measured(allowances[metric], used.get(metric, ZERO),
                                       meters.get(metric), group)
        if meter is not None:
            meters[metric] = meter


def measured_apart(allowance: Mapping[str, Any]) -> bool:
    """Whether a metric needs more than its running sum: another aggregation, or groups."""
    return "aggregation" in allowance or "group_by" in allowance


@kept_per_shared_value
def measures_levels(allowances: Mapping[str, Any]) -> bool:
    """Whether any metric of these terms is measured other than by a plain sum."""
    return any(measured_apart(a) for a in allowances.values())


def closed_usage(allowances: Mapping[str, Any], used: Mapping[str, Decimal],
                 meters: Mapping[str, Meter], start: datetime, nominal_end: datetime,
                 at: datetime) -> dict[str, str]:
    """The measured amounts a cycle closing at `at` bills: recurring levels weighted by time."""
    return {m: str(recurring_units(q, meters.get(m), start, nominal_end, at)
                   if allowances.get(m, {}).get("aggregation") == "recurring" else q)
            for m, q in sorted(used.items())}


def carried_levels(new_allowances: Mapping[str, Any], used: Mapping[str, Decimal],
                   at: datetime) -> tuple[dict[str, Decimal], dict[str, Meter]]:
    """What a new cycle starts from: the levels of recurring metrics (a level persists across
    cycles; a metric keeps its aggregation across plans and catalog versions), each held from
    `at`; every other measured amount starts at 0."""
    levels = {m: used[m] for m, a in new_allowances.items()
              if a.get("aggregation") == "recurring" and used.get(m)}
    return levels, {m: {"since": at.isoformat(), "held": "0"} for m in levels}
