"""Billing cycles: boundaries from the anchor, the agreement's end, and what time alone
changes (the clock): cycle rolls with their scheduled changes, the close of a period's usage,
daily resets. Commands and appliers of `Subscription`, named in its class body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import (
    Charge,
    minimum_spend_line,
    remaining_fraction,
    settled_at_close,
    total,
    true_up_line,
    usage_lines,
)
from domain.billing.overrides import with_overrides
from domain.billing.pricing import (
    dec,
    period_charges,
    plan_terms,
)
from domain.catalog.model import Catalog, Plan, period_rank
from domain.shared.errors import (
    BillingError,
    CycleNotOver,
    TimeTooFarAhead,
)
from domain.shared.periods import (
    Length,
    add_months,
    length_of,
    period_length_keys,
    require_aware,
)
from domain.shared.shared_values import shared
from domain.subscription.metering import next_utc_midnight, utc_day

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

def commitment_end(plan: Plan, start: datetime) -> datetime | None:
    return add_months(start, plan.commitment_months) if plan.commitment_months else None


def next_boundary(anchor: datetime, length: Length, after: datetime,
                  day: int | None = None) -> datetime:
    """The first anchor-based boundary after `after` (a 31st anchor returns to the 31st)."""
    n = 1
    while (boundary := length.after(anchor, n, day)) <= after:
        n += 1
    return boundary


def next_due(self: Subscription) -> datetime | None:
    """The next moment at which time alone changes this subscription."""
    if self.ended:  # only the last cycle's closing is to come
        if self.closing is None:
            return None
        return datetime.fromisoformat(self.closing["end"]) + self.grace
    due = _closing_and_expiry(self)
    if self.status == "paused":  # no cycle to roll: its last close, unit credits' expiries
        return min(due, default=None)
    due.append(self.cycle_end)
    if self.daily_capped and self.daily_day is not None:
        due.append(next_utc_midnight(self.daily_day))
    return min(due)


def _closing_and_expiry(self: Subscription) -> list[datetime]:
    """The last cycle's close after its grace window, and the next expiry of unit credits."""
    due = []
    if self.closing is not None:
        due.append(datetime.fromisoformat(self.closing["end"]) + self.grace)
    expiry = self.next_unit_expiry()
    if expiry is not None:
        due.append(expiry)
    return due


def advance_to(self: Subscription, at: datetime, catalog: Catalog) -> int:
    """Apply everything due by `at`, in time order: daily resets, closing of the last
    cycle after its grace window, cycle rolls (with scheduled changes). Returns the number
    of events emitted."""
    require_aware(at)
    before = len(self.pending_events)
    while (due := self.next_due()) is not None and due <= at:
        if self.daily_capped and self.daily_day is not None \
                and due == next_utc_midnight(self.daily_day):
            self._daily_allowance_reset(day=utc_day(due), metrics=list(self.daily_capped),
                                        timestamp=due)
        elif self.closing is not None and \
                due == datetime.fromisoformat(self.closing["end"]) + self.grace:
            self._close_period(due)
        elif due == self.next_unit_expiry():
            self.expire_units(due)
        else:
            self.roll_cycle(due, catalog)
    return len(self.pending_events) - before


def time_limit(self: Subscription, periods: int = 1) -> datetime:
    """The first time `check_not_too_far_ahead` refuses. Paused, the subscription has no open
    cycle: the limit counts periods of its plan from the pause."""
    if self.status == "paused":
        return length_of(self.terms).after(self.cycle_end, periods)
    return self.cycle_end + periods * (self.cycle_end - self.cycle_start)


def check_not_too_far_ahead(self: Subscription, at: datetime, periods: int = 1) -> None:
    """Input may move a subscription only so far past its open cycle (usage: one period;
    commands: 24, as an operator may act on a subscription the clock has not moved for a
    while): a time years ahead would otherwise roll thousands of cycles. Longer moves are
    the billing clock's."""
    limit = self.time_limit(periods)
    if at >= limit:
        raise TimeTooFarAhead(f"time {at.isoformat()} is more than {periods} period(s) "
                              f"past the open cycle, which ends "
                              f"{self.cycle_end.isoformat()}")


def check_cycle_over(self: Subscription, at: datetime) -> None:
    if at < self.cycle_end:
        raise CycleNotOver(f"cycle ends {self.cycle_end.isoformat()}, it is {at.isoformat()}")


def roll_cycle(self: Subscription, at: datetime, catalog: Catalog) -> None:
    """Close the open cycle at its end and open the next, applying scheduled changes."""
    require_aware(at)
    self.check_cycle_over(at)
    if self.closing is not None:
        self._close_period(self.cycle_end)  # a late-usage window never spans two cycles
    boundary = self.cycle_end
    pause_at = self.pause_scheduled_at()
    if pause_at is not None and boundary >= pause_at:
        self._pause(boundary)
        return
    changes: dict[str, Any] = {}
    status = self.status
    plan_id, period = self.plan_id, str(self.terms["period"])
    keep: str | None = None
    if status == "trialing":
        changes["trial_ended"] = True
        status = "active"
    if self.cancel_at is not None and boundary >= self.cancel_at:
        if catalog.free_plan is not None:
            changes["cancelled_to_free"] = catalog.free_plan
            plan_id = catalog.free_plan  # per month, or per week for a weekly free plan
            period = min(catalog.plan(plan_id).prices, key=period_rank)
            keep = None
        else:
            changes["cancelled"] = True
            status = "cancelled"
    elif self.scheduled_plan is not None:
        target = self.scheduled_plan["plan_id"]
        keep = self.scheduled_plan.get("keep_workspace")
        try:  # things may have changed since it was scheduled
            self.check_can_move_to(self._renewed_terms(target, self.scheduled_period or period,
                                                       catalog), keep, usage=False)
        except BillingError as refused:  # incl. a plan no longer sold for that period
            changes["downgrade_refused"] = {"to": target, "code": refused.code}
            keep = None
        else:
            changes["plan"] = {"from": plan_id, "to": target}
            plan_id = target
    if self.scheduled_period is not None and "cancelled_to_free" not in changes:
        try:  # the plan it renews on may not sell that period (a downgrade refused above)
            self._renewed_terms(plan_id, self.scheduled_period, catalog)
        except BillingError as refused:
            changes["period_refused"] = {"to": self.scheduled_period, "code": refused.code}
        else:
            changes["period"] = {"from": period, "to": self.scheduled_period}
            period = self.scheduled_period
    terms = self._renewed_terms(plan_id, period, catalog)
    if terms["plan_id"] != self.plan_id:
        changes.setdefault("plan", {"from": self.plan_id, "to": terms["plan_id"]})
    removed = sorted(a for a, v in self.addons.items() if v.get("remove_at") is not None
                     and datetime.fromisoformat(v["remove_at"]) <= boundary)
    if removed:
        changes["addons_removed"] = removed
    archived = self._workspaces_over_limit(terms, keep)
    seats = self._seats_for_next_period(terms)
    if seats != self.seats:
        changes["seats"] = {"from": self.seats, "to": seats}
    anchor, day = self.anchor, self.billing_day
    if anchor_restarts(changes, self.terms, terms):
        anchor, day = boundary, boundary.day
    elif "period" in changes:
        anchor = boundary
    end = next_boundary(anchor, length_of(terms), boundary, day)
    addons = {a: v for a, v in self.addons.items() if a not in removed}
    charges: list[Charge] = []
    if status != "cancelled":
        charges = period_charges(terms, seats, addons, self.members, boundary, end, catalog)
    self._cycle_rolled(
        closed_start=self.cycle_start, closed_end=boundary,
        closed_usage=self._closed_usage(boundary), cycle_start=boundary, cycle_end=end,
        status=status, terms=terms, changes=changes,
        seats=seats, archived_workspaces=archived, charges=charges, timestamp=boundary,
    )
    # Each archive is its own event too, as at any other time: a reader of
    # billing.events need not look inside CycleRolled for it.
    for workspace in archived:
        self._workspace_archived(workspace=workspace, timestamp=boundary)
    if self.commitment_end is not None and boundary >= self.commitment_end:
        self._agreement_renewed(agreement_end=self.commitment_end, renews=period,
                                timestamp=boundary)


def anchor_restarts(changes: dict[str, Any], before: dict[str, Any],
                    after: dict[str, Any]) -> bool:
    """Whether periods count anew from a roll's boundary (its day becoming the billing day):
    after a trial, on the free plan after a cancellation, and between weeks and months (only
    weekly plans change the unit: no history from before them replays differently)."""
    return bool(changes.get("trial_ended")) or "cancelled_to_free" in changes \
        or length_of(after).unit != length_of(before).unit


def billing_day(self: Subscription) -> int:
    """The day of the month periods end on; of the week (1 = Monday) for weekly periods."""
    if length_of(self.terms).weeks:
        return self.anchor.astimezone(UTC).isoweekday()
    return int(getattr(self, "anchor_day", self.anchor.day))


def _renewed_terms(self: Subscription, plan_id: str, period: str, catalog: Catalog) -> dict[str,
                   Any]:
    """The current catalog's terms for the plan (a new price version applies from here), with
    the subscription's custom prices while it stays on that plan and period; the old terms if
    the catalog no longer sells the plan for that period."""
    same = plan_id == self.plan_id and period == self.terms["period"]
    try:
        terms = plan_terms(catalog.plan(plan_id), period, catalog)
    except BillingError:
        if same:
            return dict(self.terms)
        raise
    if not same:
        return terms  # a deal is for the plan and period it was agreed on
    pending = getattr(self, "pending_overrides", None)
    return with_overrides(terms, self.terms.get("overrides", {}) if pending is None
                          else pending)


def _workspaces_over_limit(self: Subscription, terms: dict[str, Any],
                           keep: str | None) -> list[str]:
    limit = terms.get("limits", {}).get("workspaces")
    active = self.active_workspaces()
    if limit is None or len(active) <= limit:
        return []
    kept = [keep] if keep in active else []
    kept += [w for w in active if w not in kept][: max(limit - len(kept), 0)]
    return [w for w in active if w not in kept]


def _seats_for_next_period(self: Subscription, terms: dict[str, Any]) -> int | None:
    included = terms.get("included_seats")
    if included is None:
        return None
    return max(int(included), len(self.members))


def _cycle_rolled(self: Subscription, closed_start: datetime, closed_end: datetime,
                  closed_usage: dict[str, str], cycle_start: datetime, cycle_end: datetime,
                  status: str, terms: dict[str, Any], changes: dict[str, Any],
                  seats: int | None, archived_workspaces: list[str], charges: list[Charge],
                  timestamp: datetime) -> None:
    self._bill(charges)
    self._open_closing(closed_start, closed_end, closed_usage,
                       trial=bool(changes.get("trial_ended")))
    if anchor_restarts(changes, self.terms, terms):
        self.anchor, self.anchor_day = cycle_start, cycle_start.day
    elif "period" in changes:
        self.anchor = cycle_start
    if changes.get("trial_ended"):
        self.trial_end = None
    if "cancelled_to_free" in changes or changes.get("cancelled"):
        self.cancel_at = None
        self.commitment_end = None
    self.status = status
    self.cycle_start, self.cycle_end = cycle_start, cycle_end
    self.terms = shared(terms)
    self._keep_only_capped_metrics()
    self._note_user_plan_lines(charges, reset=True)
    self.seats = seats
    self.extra = {}
    self._start_measures(cycle_start)  # no rollover; daily caps follow UTC days, not cycles
    self.scheduled_plan = None
    self.scheduled_period = None
    self.pending_overrides = None
    for addon in changes.get("addons_removed", []):
        self.addons.pop(addon, None)
    for workspace in archived_workspaces:
        self.workspaces[workspace] = "archived"
    allowed = set(self.features())
    self.features_active = [f for f in self.features_active if f in allowed]


def _keep_only_capped_metrics(self: Subscription) -> None:
    """A plan without a daily cap on a metric lifts that cap at once."""
    capped = {m for m, a in self.allowances.items() if "daily_cap" in a}
    self.daily_capped = [m for m in self.daily_capped if m in capped]


def _agreement_renewed(self: Subscription, agreement_end: datetime, renews: str,
                       timestamp: datetime) -> None:
    self.commitment_end = None


def _open_closing(self: Subscription, start: datetime, end: datetime, usage: dict[str, str],
                  trial: bool | None = None) -> None:
    """The cycle [start, end) stops taking usage: what it measured, its packs, the terms it
    bills under and its percentage fees wait in `closing` for late usage and the close."""
    self.closing = {"start": start.isoformat(), "end": end.isoformat(), "usage": dict(usage),
                    "extra": {m: str(q) for m, q in self.extra.items()},
                    "allowances": self.terms["allowances"],
                    **period_length_keys(self.terms),
                    **({} if trial is None else {"trial": trial}), **commitment_of(self.terms)}
    if getattr(self, "cycle_fees", None):
        self.closing["fees"], self.cycle_fees = self.cycle_fees, {}


def commitment_of(terms: dict[str, Any]) -> dict[str, Any]:
    """What a closing cycle keeps of a plan's minimum commitment: the minimum and the period's
    fee, which counts towards it."""
    if "minimum_commitment" not in terms:
        return {}
    return {"commitment": {"minimum": terms["minimum_commitment"], "price": terms["price"]}}


def _close_period(self: Subscription, at: datetime) -> None:
    closing = self.closing
    assert closing is not None
    start = datetime.fromisoformat(closing["start"])
    end = datetime.fromisoformat(closing["end"])
    charges: list[Charge] = []
    full_end = length_of(closing).after(start)
    usage_spent = Decimal(0)
    for metric, allowance in sorted(closing["allowances"].items()):
        if closing.get("trial"):
            break  # usage during a trial is free
        used = dec(closing["usage"].get(metric, "0"))
        extra = dec(closing["extra"].get(metric, "0"))
        fees = dec(closing.get("fees", {}).get(metric, "0")) if "percentage" in allowance \
            else None
        lines = usage_lines(metric, allowance, used, extra,
                            closing.get("meters", {}).get(metric), start, end, fees)
        spent = total(lines)
        if metric in closing.get("advance", {}):
            lines, spent = settled_at_close(metric, allowance, lines,
                                            dec(closing["advance"][metric]), start, end)
        true_up = minimum_spend_line(metric, allowance, spent, start, end, full_end)
        charges += lines + true_up
        usage_spent += spent + total(true_up)
    commitment = closing.get("commitment")
    if commitment is not None and not closing.get("trial"):
        # The fee counts for the share of a period the cycle ran (what a calendar first period
        # was charged, what a termination did not refund), as the minimum does.
        share = Decimal(1) - remaining_fraction(end, start, full_end)
        charges += true_up_line("Minimum commitment", dec(commitment["minimum"]),
                                dec(commitment["price"]) * share + usage_spent, start, end,
                                full_end)
    self._usage_period_closed(period_start=start, period_end=end,
                              usage=dict(closing["usage"]), charges=charges, timestamp=at)


def _usage_period_closed(self: Subscription, period_start: datetime, period_end: datetime,
                         usage: dict[str, str], charges: list[Charge],
                         timestamp: datetime) -> None:
    self._bill(charges)
    self.closing = None


def _daily_allowance_reset(self: Subscription, day: str, metrics: list[str],
                           timestamp: datetime) -> None:
    self.daily_day = day
    self.daily_used = {}
    self.daily_capped = []
