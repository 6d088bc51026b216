"""Plan and period changes: upgrades at once (prorated or a full new cycle), downgrades and
period changes at the cycle end, the checks a move to another plan must pass, cancellation
and reactivation. Commands and appliers of `Subscription`, named in its class body.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge, prorated
from domain.billing.overrides import checked_overrides
from domain.billing.pricing import (
    ZERO,
    blended_allowances,
    dec,
    is_upgrade,
    period_charges,
    plan_terms,
)
from domain.catalog.model import PERIOD_NAMES, Catalog, period_rank
from domain.shared.errors import (
    CommandRefused,
)
from domain.shared.periods import length_of, require_aware
from domain.shared.shared_values import shared

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

def change_plan(self: Subscription, plan_id: str, at: datetime, catalog: Catalog,
                keep_workspace: str | None = None, period: str | None = None) -> str:
    """Upgrade at once (prorated, or full price with a new cycle if the plan says so),
    downgrade at the next cycle. With another billing `period`: see `change_plan_and_period`.
    Returns "unchanged", "upgraded", "changed_in_trial" or "downgrade_scheduled"."""
    result = self._change_plan(plan_id, at, catalog, keep_workspace, period)
    self._drop_unsold_period(catalog, at)
    return result


def _drop_unsold_period(self: Subscription, catalog: Catalog, at: datetime) -> None:
    """A period change scheduled with a plan change that was then undone, replaced or
    overtaken by an upgrade: kept only if the plan it would now apply to sells that period."""
    if self.scheduled_period is None:
        return
    target = self.scheduled_plan["plan_id"] if self.scheduled_plan else self.plan_id
    if self.scheduled_period not in catalog.plan(target).prices:
        self._billing_period_change_scheduled(period=str(self.terms["period"]),
                                              effective_at=self.cycle_end, timestamp=at)


def _change_plan(self: Subscription, plan_id: str, at: datetime, catalog: Catalog,
                 keep_workspace: str | None, period: str | None) -> str:
    require_aware(at)
    self.check_not_ended()
    if period is not None and period != self.terms["period"]:
        return self.change_plan_and_period(plan_id, period, at, catalog, keep_workspace)
    if plan_id == self.plan_id and self.scheduled_plan is None:
        return "unchanged"
    plan = catalog.plan(plan_id)
    plan.check_offered(at, self.customer.get("country"))
    period = str(self.terms["period"])
    if period not in plan.prices:
        raise CommandRefused(f"plan {plan_id} is not sold per {period}: give the `period` to "
                             f"move to ({', '.join(sorted(plan.prices))})",
                             "period_not_offered")
    if plan_id == self.plan_id:  # back to the current plan: drop the scheduled change
        self._scheduled_change_cancelled(timestamp=at)
        return "scheduled_change_cancelled"
    terms = plan_terms(plan, period, catalog)
    if self.status == "trialing":
        self.check_can_move_to(terms, keep_workspace)
        self._plan_changed_in_trial(from_plan=self.plan_id, terms=terms, timestamp=at)
        return "changed_in_trial"
    if is_upgrade(self.terms, terms):
        self._upgrade(terms, at, catalog)
        return "upgraded"
    self.check_can_move_to(terms, keep_workspace)
    self._downgrade_scheduled(to_plan=plan_id, effective_at=self.cycle_end,
                              keep_workspace=keep_workspace, timestamp=at)
    return "downgrade_scheduled"


def change_plan_and_period(self: Subscription, plan_id: str, period: str, at: datetime,
                           catalog: Catalog, keep_workspace: str | None) -> str:
    """A plan (or the same plan) on another billing period. To a longer period on a plan of
    the same rank or higher: at once, a new period starting now (the unused rest of the
    current one credited, prorated); otherwise when the current period ends, as a downgrade
    (with its checks) and a period change together."""
    if period not in PERIOD_NAMES:
        raise CommandRefused(f"unknown billing period {period!r}", "unknown_period")
    if self.cancel_at is not None:
        raise CommandRefused("a cancellation is scheduled: reactivate first",
                             "cancellation_scheduled")
    plan = catalog.plan(plan_id)
    plan.check_offered(at, self.customer.get("country"))
    if period not in plan.prices:
        raise CommandRefused(f"plan {plan_id} is not sold per {period}", "period_not_offered")
    terms = plan_terms(plan, period, catalog)
    longer = period_rank(period) > period_rank(str(self.terms["period"]))
    if self.status != "trialing" and longer and int(terms["rank"]) >= int(self.terms["rank"]):
        self._switch_period_now(terms, at, catalog)
        return "upgraded"
    self.check_can_move_to(terms, keep_workspace)
    if plan_id != self.plan_id:
        self._downgrade_scheduled(to_plan=plan_id, effective_at=self.cycle_end,
                                  keep_workspace=keep_workspace, timestamp=at)
    self._billing_period_change_scheduled(period=period, effective_at=self.cycle_end,
                                          timestamp=at)
    return "downgrade_scheduled"


def _switch_period_now(self: Subscription, terms: dict[str, Any], at: datetime,
                       catalog: Catalog) -> None:
    """A new cycle from `at` on `terms`: the current period's fees credited for their unused
    rest, the new period charged in full, the usage so far closed as at a roll."""
    credits = self.unused_credits(at)
    if self.closing is not None:  # the new cycle ends the last one's late window
        self._close_period(at)
    end = length_of(terms).after(at)
    seats = self.seats if terms.get("included_seats") is None or self.seats is None \
        else max(self.seats, int(terms["included_seats"]))
    charges = credits + period_charges(
        terms, seats, self.addons, self.members, at, end, catalog)
    self._plan_upgraded(from_plan=str(self.terms["plan_id"]), terms=terms, charges=charges,
                        restarted_cycle=True, cycle_start=at, cycle_end=end,
                        closed_usage=self._closed_usage(at),
                        cancelled=["downgrade"] if self.scheduled_plan else [], timestamp=at)


def override_prices(self: Subscription, overrides: dict[str, Any], at: datetime) -> None:
    """Custom prices on the current plan and period from the next period (`{}`: back to the
    catalog's). A plan or period change drops them: a deal is for what it was agreed on."""
    require_aware(at)
    self.check_not_ended()
    checked = checked_overrides(overrides, self.terms) if overrides else {}
    self._price_overrides_scheduled(overrides=checked, timestamp=at)


def _price_overrides_scheduled(self: Subscription, overrides: dict[str, Any],
                               timestamp: datetime) -> None:
    self.pending_overrides = overrides


def check_not_ended(self: Subscription) -> None:
    if self.ended:
        raise CommandRefused(f"subscription {self.id} has ended", "subscription_ended")


def check_can_move_to(self: Subscription, terms: dict[str, Any], keep_workspace: str | None,
                      usage: bool = True) -> None:
    """A move to a smaller plan is refused while the subscription uses more than it allows:
    this cycle's usage (unless the current plan waives that check: its usage resets when
    the downgrade applies anyway), active features, counted resources, workspaces."""
    if usage and self.terms.get("downgrade_usage_check", True):
        for metric, used in sorted(self.used.items()):
            allowance = terms["allowances"].get(metric)
            if allowance is None:
                continue
            usable = dec(allowance["included"]) + self.extra.get(metric, ZERO)
            if used > usable:
                raise CommandRefused(
                    f"{metric}: {used} used this cycle, plan {terms['plan_id']} allows "
                    f"{usable}", "usage_above_limit")
    kept = sorted(a for a, v in self.addons.items() if v.get("remove_at") is None)
    if kept and length_of(terms).weeks:
        raise CommandRefused(f"add-ons are priced per month and a weekly plan takes none: "
                             f"remove {', '.join(kept)} first", "period_not_offered")
    available = set(terms.get("features", [])) | {
        f for a in self.addons.values() for f in a.get("features", [])}
    missing = sorted(set(self.features_active) - available)
    if missing:
        raise CommandRefused(f"active features not in plan {terms['plan_id']}: "
                             f"{', '.join(missing)}", "feature_in_use")
    limits = terms.get("limits", {})
    in_use = {**self.counts, "members": len(self.members)}
    for name, value in sorted(in_use.items()):
        if name in limits and value > limits[name]:
            raise CommandRefused(f"{name}: {value} in use, plan {terms['plan_id']} allows "
                                 f"{limits[name]}", "limit_exceeded")
    active = self.active_workspaces()
    if keep_workspace is not None and keep_workspace not in active:
        raise CommandRefused(f"no active workspace {keep_workspace!r}", "unknown_workspace")
    workspace_limit = limits.get("workspaces")
    if workspace_limit is not None and len(active) > workspace_limit \
            and keep_workspace is None:
        raise CommandRefused(
            f"{len(active)} workspaces, plan {terms['plan_id']} allows {workspace_limit}: "
            "name the workspace to keep (the others are archived)",
            "workspace_choice_required")


def _upgrade(self: Subscription, terms: dict[str, Any], at: datetime, catalog: Catalog) -> None:
    old = self.terms
    cancelled = [name for name, pending in (("downgrade", self.scheduled_plan),
                                            ("cancellation", self.cancel_at)) if pending]
    if terms.get("upgrade_proration") == "full":
        if self.closing is not None:  # the new cycle ends the last one's late window
            self._close_period(at)
        end = length_of(terms).after(at)
        charges = period_charges(terms, self.seats, self.addons, self.members, at, end,
                                  catalog)
        self._plan_upgraded(from_plan=str(old["plan_id"]), terms=terms, charges=charges,
                            restarted_cycle=True, cycle_start=at, cycle_end=end,
                            closed_usage=self._closed_usage(at), cancelled=cancelled,
                            timestamp=at)
        return
    start, end = self.cycle_start, self.cycle_end
    terms = {**terms, "allowances": blended_allowances(old, terms, at, start, end)}
    charges = [
        prorated("proration_credit", f"Unused time on {old['plan_name']}", 1,
                 dec(old["price"]), at, start, end, credit=True),
        prorated("proration_charge", f"Remaining time on {terms['plan_name']}", 1,
                 dec(terms["price"]), at, start, end),
    ]
    extra_seats = self._extra_seats(old)
    if extra_seats and old.get("extra_seat_price") != terms.get("extra_seat_price"):
        if old.get("extra_seat_price") is not None:
            charges.append(prorated("proration_credit", "Unused time on extra seats",
                                    extra_seats, dec(old["extra_seat_price"]), at, start,
                                    end, credit=True))
        if terms.get("extra_seat_price") is not None:
            charges.append(prorated("proration_charge", "Remaining time on extra seats",
                                    extra_seats, dec(terms["extra_seat_price"]), at, start,
                                    end))
    self._plan_upgraded(from_plan=str(old["plan_id"]), terms=terms, charges=charges,
                        restarted_cycle=False, cycle_start=start, cycle_end=end,
                        closed_usage={}, cancelled=cancelled, timestamp=at)


def _extra_seats(self: Subscription, terms: dict[str, Any]) -> int:
    if self.seats is None or terms.get("included_seats") is None:
        return 0
    return max(self.seats - int(terms["included_seats"]), 0)


def _plan_upgraded(self: Subscription, from_plan: str, terms: dict[str, Any], charges: list[Charge],
                   restarted_cycle: bool, cycle_start: datetime, cycle_end: datetime,
                   closed_usage: dict[str, str], cancelled: list[str],
                   timestamp: datetime) -> None:
    self._bill(charges)
    if restarted_cycle and terms["period"] != self.terms["period"]:
        self.scheduled_period = None  # the period changed now
    if restarted_cycle:
        self._open_closing(self.cycle_start, cycle_start, closed_usage)
        self.anchor, self.anchor_day = cycle_start, cycle_start.day
        self.extra = {}
    self.cycle_start, self.cycle_end = cycle_start, cycle_end
    self.terms = shared(terms)
    self.pending_overrides = None  # a deal is for the plan it was agreed on
    if restarted_cycle:
        self._start_measures(cycle_start)
        self._note_user_plan_lines(charges, reset=True)  # the new period's user plans
    self._keep_only_capped_metrics()
    self.scheduled_plan = None
    self.cancel_at = None


def _plan_changed_in_trial(self: Subscription, from_plan: str, terms: dict[str, Any],
                           timestamp: datetime) -> None:
    self.terms = shared(terms)
    self.pending_overrides = None
    if self.seats is not None and terms.get("included_seats") is not None:
        self.seats = max(self.seats, int(terms["included_seats"]))


def _downgrade_scheduled(self: Subscription, to_plan: str, effective_at: datetime,
                         keep_workspace: str | None, timestamp: datetime) -> None:
    self.scheduled_plan = {"plan_id": to_plan, "keep_workspace": keep_workspace}


def _scheduled_change_cancelled(self: Subscription, timestamp: datetime) -> None:
    self.scheduled_plan = None


def change_billing_period(self: Subscription, period: str, at: datetime, catalog: Catalog) -> bool:
    require_aware(at)
    self.check_not_ended()
    if period not in PERIOD_NAMES:
        raise CommandRefused(f"unknown billing period {period!r}", "unknown_period")
    if period == self.terms["period"] and self.scheduled_period is None:
        return False
    if self.cancel_at is not None:
        raise CommandRefused("a cancellation is scheduled: reactivate first",
                             "cancellation_scheduled")
    plan = catalog.plan(self.scheduled_plan["plan_id"] if self.scheduled_plan
                        else self.plan_id)
    if period not in plan.prices:
        raise CommandRefused(f"plan {plan.id} is not sold per {period}", "period_not_offered")
    self._billing_period_change_scheduled(period=period, effective_at=self.cycle_end,
                                          timestamp=at)
    return True


def _billing_period_change_scheduled(self: Subscription, period: str, effective_at: datetime,
                                     timestamp: datetime) -> None:
    self.scheduled_period = None if period == self.terms["period"] else period


def cancel(self: Subscription, at: datetime, catalog: Catalog) -> bool:
    """Service continues to the end of the paid period (or of the agreement, if later);
    then the Free plan, keeping projects and workspaces."""
    require_aware(at)
    self.check_not_ended()
    if self.cancel_at is not None:
        return False
    if catalog.free_plan is not None and self.plan_id == catalog.free_plan:
        raise CommandRefused("the Free plan has nothing to cancel", "already_free")
    effective = self.cycle_end
    if self.commitment_end is not None and self.commitment_end > effective:
        effective = self.commitment_end
    self._cancellation_scheduled(effective_at=effective, timestamp=at)
    return True


def _cancellation_scheduled(self: Subscription, effective_at: datetime,
                            timestamp: datetime) -> None:
    self.cancel_at = effective_at


def reactivate(self: Subscription, at: datetime) -> None:
    require_aware(at)
    if self.cancel_at is None or at >= self.cancel_at:
        raise CommandRefused("no cancellation to withdraw", "not_cancelling")
    self._cancellation_withdrawn(timestamp=at)


def _cancellation_withdrawn(self: Subscription, timestamp: datetime) -> None:
    self.cancel_at = None
