"""Usage metering: recording usage (current and late), thresholds, daily caps, the usage
contract's checks against a subscription. Commands and appliers of `Subscription`, named in
its class body; helpers by UTC day (daily caps reset at UTC midnight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import (
    Charge,
    charge,
    measured_name,
    percentage_fee,
    total,
    usage_lines,
)
from domain.billing.pricing import (
    ZERO,
    dec,
)
from domain.contracts.usage import UsageItem
from domain.shared.errors import (
    CommandRefused,
    InvalidUsage,
    UsageTooLate,
)
from domain.shared.periods import length_of
from domain.shared.shared_values import kept_per_shared_value
from domain.subscription.measures import (
    Meter,
    apply_measures,
    carried_levels,
    charge_of,
    check_measurable,
    closed_usage,
    measured_totals,
    measures_levels,
    priced_properties,
    routes,
)

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription



def utc_day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def next_utc_midnight(day: str) -> datetime:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start + timedelta(days=1)


def by_utc_day(items: Sequence[UsageItem]) -> list[tuple[str, list[UsageItem]]]:
    days: dict[str, list[UsageItem]] = {}
    for item in items:
        days.setdefault(utc_day(item.at), []).append(item)
    return sorted(days.items())


def metric_totals(items: Sequence[UsageItem]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for item in items:
        totals[item.metric] = totals.get(item.metric, ZERO) + item.quantity
    return {m: str(q) for m, q in sorted(totals.items())}


# Usage accepted in a batch but not recorded yet, per (metric, UTC day): what a refusing daily
# cap adds to the day's recorded usage before judging the next item.
Pending = MutableMapping[tuple[str, str], Decimal]


def check_usage(self: Subscription, item: UsageItem, pending: Pending | None = None) -> str:
    """Whether `item` may be recorded now; `pending`: the batch's items accepted before it
    (see `accept`). Returns the charge the item counts for (its metric, or the filtered
    charge its properties match: `routed`)."""
    if item.subscription != self.id:
        raise InvalidUsage(f"usage for {item.subscription!r} sent to {self.id!r}",
                           "wrong_subscription")
    if self.ended:
        raise CommandRefused(f"subscription {self.id} has ended", "subscription_ended")
    late = item.at < self.cycle_start
    if late:
        closing = self.closing
        if closing is None or not (
                datetime.fromisoformat(closing["start"]) <= item.at
                < datetime.fromisoformat(closing["end"])):
            raise UsageTooLate(
                f"usage at {item.at.isoformat()} is before the open cycle "
                f"({self.cycle_start.isoformat()}) and its period is closed"
            )
        allowances = closing["allowances"]
    else:
        if self.status == "paused":
            raise CommandRefused(f"subscription {self.id} is paused", "subscription_paused")
        allowances = self.terms["allowances"]
    if item.workspace is not None and self.workspaces.get(item.workspace) == "archived":
        raise CommandRefused(f"workspace {item.workspace} is archived", "workspace_archived")
    if item.member is not None and item.member not in self.members \
            and self.counts_members:
        raise CommandRefused(f"{item.member!r} is not a member of {self.id} (never added, "
                             "or its seat was released)", "not_a_member")
    charge = charge_of(allowances, item) if routes(allowances) or item.metric not in allowances \
        else item.metric
    allowance = allowances[charge]
    if "aggregation" in allowance or "group_by" in allowance or not item.quantity:
        meters = (self.closing or {}).get("meters", {}) if late else self.meters_now()
        check_measurable(allowance, item, meters.get(charge), late)
    if allowance.get("on_daily_cap") == "refuse":
        check_daily_cap(self, charge, item, dec(allowance["daily_cap"]), pending or {})
    return charge


def routed(item: UsageItem, charge: str) -> UsageItem:
    """`item` as counted for `charge` (a copy only when the charge is not its own metric)."""
    return item if charge == item.metric else replace(item, metric=charge)


def check_daily_cap(self: Subscription, charge: str, item: UsageItem, cap: Decimal,
                    pending: Pending) -> None:
    """A refusing daily cap: the item is refused whole when the UTC day's usage with it would
    pass the cap. Usage timed on a day before the last one recorded is not judged (that day's
    total is no longer kept): it is recorded, as with `on_daily_cap = "record"`."""
    day = utc_day(item.at)
    if self.daily_day is not None and day < self.daily_day:
        return
    used = self.daily_used.get(charge, ZERO) if day == self.daily_day else ZERO
    used += pending.get((charge, day), ZERO)
    if used + item.quantity > cap:
        raise CommandRefused(
            f"{charge} on {day}: {used} of the daily cap of {cap} used; {item.quantity} "
            f"more would pass it", "daily_cap_reached")


def refuses_daily(self: Subscription) -> bool:
    """Whether a charge of the open or the closed cycle refuses usage past a daily cap: only
    then does a batch count its items per UTC day as it goes (`accept`)."""
    closing = self.closing
    return refusing_daily_caps(self.terms["allowances"]) or (
        closing is not None and refusing_daily_caps(closing["allowances"]))


@kept_per_shared_value
def refusing_daily_caps(allowances: Mapping[str, Any]) -> bool:
    return any(a.get("on_daily_cap") == "refuse" for a in allowances.values())


def accept(pending: Pending, item: UsageItem) -> None:
    """Count a checked item in `pending` until the batch is recorded."""
    key = (item.metric, utc_day(item.at))
    pending[key] = pending.get(key, ZERO) + item.quantity


def record_usage(self: Subscription, items: Sequence[UsageItem], checked: bool = False) -> None:
    """Record accepted usage. Each item is checked (`check_usage`) unless the caller has
    just done so (`checked=True`, the batch path). Usage past a hard limit is recorded too
    (it happened) and reported by threshold events."""
    if not items:
        return
    if not checked:
        pending: Pending = {}
        checked_items = []
        for item in items:
            item = routed(item, self.check_usage(item, pending))
            accept(pending, item)
            checked_items.append(item)
        items = checked_items
    late = [i for i in items if i.at < self.cycle_start]
    current = [i for i in items if i.at >= self.cycle_start]
    if late:
        closing = self.closing
        assert closing is not None
        kept = priced_properties(closing["allowances"])
        records = [i.as_record(kept) for i in late]
        totals = metric_totals(late) if not measures_levels(closing["allowances"]) else \
            measured_totals(closing["allowances"], _closed_amounts(closing),
                            closing.get("meters", {}), records)
        self._late_usage_recorded(
            period_start=datetime.fromisoformat(closing["start"]),
            period_end=datetime.fromisoformat(closing["end"]),
            items=records, totals=totals, timestamp=max(i.at for i in late))
        self.draw_units(totals, max(i.at for i in late), closing=True)
    if not current:
        return
    if not self._has_daily_caps():
        self._record_current(current, capped=False)
        return
    for day, group in by_utc_day(current):  # each day's cap is judged on its own
        if self.daily_capped and self.daily_day is not None and day > self.daily_day:
            midnight = next_utc_midnight(self.daily_day)
            self._daily_allowance_reset(day=utc_day(midnight),
                                        metrics=list(self.daily_capped), timestamp=midnight)
        self._record_current(group, capped=True)


def _record_current(self: Subscription, items: list[UsageItem], capped: bool) -> None:
    allowances = self.terms["allowances"]
    kept = priced_properties(allowances)
    records = [i.as_record(kept) for i in items]
    totals = metric_totals(items) if not measures_levels(allowances) else \
        measured_totals(allowances, self.used, self.meters_now(), records)
    before = {metric: self.used.get(metric, ZERO) for metric in totals}
    daily_before = dict(self.daily_used) if capped else {}
    day_before = self.daily_day
    at = max(i.at for i in items)
    self.trigger_event(self.UsageRecorded, items=records, totals=totals, timestamp=at)
    self.draw_units(totals, at)  # before the thresholds and charges, which count it
    self._report_thresholds(before, at)
    if "progressive_billing" in self.terms or any(
            a.get("billed") == "in_advance" for a in allowances.values()):
        self._charge_on_use(totals, at)
    if capped:
        self._report_daily_caps(daily_before, day_before, at)


def _add_usage(self: Subscription, items: list[dict[str, Any]], totals: dict[str, str]) -> None:
    allowances = self.terms["allowances"]
    if measures_levels(allowances):
        self.meters = self.meters_now()
        apply_measures(allowances, self.used, self.meters, items, totals)
    else:
        for metric, quantity in totals.items():
            self.used[metric] = self.used.get(metric, ZERO) + Decimal(quantity)
    if any("percentage" in self.terms["allowances"].get(m, ()) for m in totals):
        self.cycle_fees = with_fees(getattr(self, "cycle_fees", {}),
                                    self.terms["allowances"], items)
    if self._has_daily_caps():
        for item in items:
            day = utc_day(datetime.fromisoformat(item["at"]))
            if self.daily_day is None or day > self.daily_day:
                self.daily_day, self.daily_used = day, {}
            if day == self.daily_day:
                metric = item["metric"]
                self.daily_used[metric] = (self.daily_used.get(metric, ZERO)
                                           + Decimal(item["quantity"]))


def _late_usage_recorded(self: Subscription, period_start: datetime, period_end: datetime,
                         items: list[dict[str, str]], totals: dict[str, str],
                         timestamp: datetime) -> None:
    closing = self.closing
    assert closing is not None
    allowances = closing["allowances"]
    if measures_levels(allowances):
        amounts, meters = _closed_amounts(closing), dict(closing.get("meters", {}))
        apply_measures(allowances, amounts, meters, items, totals)
        closing["usage"] = {m: str(q) for m, q in sorted(amounts.items())}
        if meters:
            closing["meters"] = meters
    else:
        usage = closing["usage"]
        for metric, quantity in totals.items():
            usage[metric] = str(dec(usage.get(metric, "0")) + Decimal(quantity))
    if any("percentage" in allowances.get(m, ()) for m in totals):
        closing["fees"] = with_fees(closing.get("fees", {}), allowances, items)


def _charge_on_use(self: Subscription, metrics: Iterable[str], at: datetime) -> None:
    """Usage charged during the cycle: metrics billed on use (`billed = "in_advance"`) as their
    usage is recorded, and every overage metric of a plan with progressive billing when the
    cycle's usage charges reach its next threshold. What a metric's usage so far costs under its
    charge model, less what the cycle was charged for it already, is charged now (never
    credited back: a pack bought or an upgrade later in the cycle lowers what later usage
    costs). Each step is a difference of amounts rounded to the cent, so the steps add up to
    the cycle's amount exactly; the close settles the rest. Usage in a trial is free."""
    if self.status == "trialing":
        return
    allowances = self.terms["allowances"]
    billed = dict(getattr(self, "advance_billed", {}))
    due = {m: self._usage_charges_so_far(m) for m in sorted(metrics)
           if allowances.get(m, {}).get("billed") == "in_advance"}
    reason = {m: "billed on use" for m in due}
    progressive = self.terms.get("progressive_billing")
    if progressive:
        arrears = {m: self._usage_charges_so_far(m) for m, a in sorted(allowances.items())
                   if a["limit"] == "overage" and a.get("billed") != "in_advance"
                   and a.get("aggregation") not in ("latest", "recurring")}
        total_due = sum(arrears.values(), ZERO)
        threshold = next_threshold(progressive, sum((dec(billed.get(m, "0")) for m in arrears),
                                                    ZERO))
        if total_due >= threshold:
            due.update(arrears)
            reason.update({m: f"billed progressively (usage charges reached {threshold})"
                           for m in arrears})
    lines: list[Charge] = []
    for metric, amount in due.items():
        so_far = dec(billed.get(metric, "0"))
        if amount > so_far:
            lines.append(charge("overage", f"{measured_name(metric, allowances[metric])} over "
                                f"allowance, {reason[metric]}: {amount} for the cycle so far",
                                1, amount - so_far, amount - so_far, self.cycle_start,
                                self.cycle_end, metric=metric, during_cycle=True))
            billed[metric] = str(amount)
    if lines:
        self._usage_charged(charges=lines, billed=billed, timestamp=at)


def _usage_charges_so_far(self: Subscription, metric: str) -> Decimal:
    """What the open cycle's usage of `metric` costs so far, under its charge model."""
    fees = getattr(self, "cycle_fees", {})
    return total(usage_lines(metric, self.terms["allowances"][metric],
                             self.used.get(metric, ZERO), self.extra.get(metric, ZERO),
                             self.meters_now().get(metric), self.cycle_start, self.cycle_end,
                             dec(fees[metric]) if metric in fees else None))


def next_threshold(progressive: dict[str, Any], billed: Decimal) -> Decimal:
    """The first progressive-billing amount above what the cycle's usage was billed so far."""
    amounts = [Decimal(t) for t in progressive["thresholds"]]
    for amount in amounts:
        if amount > billed:
            return amount
    if "every" not in progressive:
        return Decimal("Infinity")
    every = Decimal(progressive["every"])
    steps = ((billed - amounts[-1]) // every) + 1
    return amounts[-1] + steps * every


def _usage_charged(self: Subscription, charges: list[Charge], billed: dict[str, str],
                   timestamp: datetime) -> None:
    self._bill(charges)
    self.advance_billed = billed


def _closed_amounts(closing: dict[str, Any]) -> dict[str, Decimal]:
    return {metric: Decimal(amount) for metric, amount in closing["usage"].items()}


def _closed_usage(self: Subscription, at: datetime) -> dict[str, str]:
    """What the open cycle, closing at `at`, bills for each metric. A recurring level is
    weighted by a whole period's length (a calendar first period is a part of one)."""
    length = length_of(self.terms)
    whole = length.after(self.cycle_start) == self.cycle_end
    start = self.cycle_start if whole or self.cycle_start == self.cycle_end \
        else length.after(self.cycle_end, -1)
    return closed_usage(self.terms["allowances"], self.used, self.meters_now(), start,
                        self.cycle_end, at)


def _start_measures(self: Subscription, at: datetime, carry: bool = True) -> None:
    """Open a cycle's measures (after `closing` and the new terms are set): recurring levels
    carry on from `at`, every other amount starts from nothing; the closed cycle keeps its
    meters for late usage, and what was billed on use for its close."""
    assert self.closing is not None
    meters = self.meters_now()
    if meters:
        self.closing["meters"] = meters
    if getattr(self, "advance_billed", None):
        self.closing["advance"], self.advance_billed = self.advance_billed, {}
    self.used, carried = carried_levels(self.terms["allowances"], self.used, at) if carry \
        else ({}, {})
    if meters or carried:
        self.meters = carried


def meters_now(self: Subscription) -> dict[str, Meter]:
    """The open cycle's meters (absent from subscriptions and snapshots that never had one)."""
    return getattr(self, "meters", {})


def with_fees(fees: dict[str, str], allowances: dict[str, Any],
              items: list[dict[str, str]]) -> dict[str, str]:
    """`fees` plus each item's fee under its metric's percentage terms (exact sums)."""
    summed = {metric: Decimal(fee) for metric, fee in fees.items()}
    for item in items:
        rule = allowances.get(item["metric"], {}).get("percentage")
        if rule is not None:
            summed[item["metric"]] = summed.get(item["metric"], ZERO) + percentage_fee(
                rule, Decimal(item["quantity"]))
    return {metric: str(fee) for metric, fee in sorted(summed.items())}


def _has_daily_caps(self: Subscription) -> bool:
    return caps_daily(self.terms["allowances"])


@kept_per_shared_value
def caps_daily(allowances: Mapping[str, Any]) -> bool:
    return any("daily_cap" in a for a in allowances.values())


def _report_thresholds(self: Subscription, before: dict[str, Decimal], at: datetime) -> None:
    """`before`: the used units, before the usage just recorded, of the metrics it
    touched (in metric order)."""
    allowances = self.terms["allowances"]  # read only: no copy per metric and event
    for metric, old in before.items():
        used = self.used[metric]
        if used == old or metric not in allowances:
            continue
        limit = self.limit_of(metric)
        hard = allowances[metric]["limit"] == "hard"
        for threshold in self.terms.get("thresholds", [80, 100]):
            mark = limit * threshold / 100
            crossed = old < mark <= used if limit > 0 else (old == 0 and threshold == 100)
            if crossed:
                self._quota_threshold_crossed(metric=metric, threshold=int(threshold),
                                              used=str(used), limit=str(limit), hard=hard,
                                              timestamp=at)


def _report_daily_caps(self: Subscription, before: dict[str, Decimal], day_before: str | None,
                       at: datetime) -> None:
    if self.daily_day is None:
        return
    if self.daily_day != day_before:
        before = {}
    for metric, used in sorted(self.daily_used.items()):
        cap = self.allowances.get(metric, {}).get("daily_cap")
        if cap is None or metric in self.daily_capped:
            continue
        if before.get(metric, ZERO) < dec(cap) <= used:
            self._daily_cap_reached(metric=metric, day=self.daily_day, cap=str(cap),
                                    used=str(used), timestamp=at)


def _quota_threshold_crossed(self: Subscription, metric: str, threshold: int, used: str, limit: str,
                             hard: bool, timestamp: datetime) -> None:
    pass  # a notification for upstream services; the state already holds the usage


def _daily_cap_reached(self: Subscription, metric: str, day: str, cap: str, used: str,
                       timestamp: datetime) -> None:
    self.daily_capped = sorted({*self.daily_capped, metric})
