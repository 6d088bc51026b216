"""Pause and resume (docs/domain.md, "Pause and resume"): a pause takes effect when the paid
period ends (nothing to refund), the subscription then bills nothing and takes no usage until it
resumes, which starts a new period at once. Commands and appliers of `Subscription`, named in
its class body."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge
from domain.billing.pricing import period_charges
from domain.catalog.model import Catalog
from domain.shared.errors import CommandRefused
from domain.shared.periods import length_of, require_aware
from domain.shared.shared_values import shared

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

# What a paused subscription still accepts; anything else is refused (`subscription_paused`).
WHILE_PAUSED = frozenset({"resume", "terminate", "record_payment", "update_customer",
                          "update_profile", "void_invoice", "advance", "grant_credits",
                          "configure_auto_top_up", "apply_coupon"})


def pause(self: Subscription, at: datetime) -> bool:
    require_aware(at)
    self.check_not_ended()
    if self.status == "paused" or self.pause_scheduled_at() is not None:
        return False
    if self.status == "trialing":
        raise CommandRefused("a trial is not paused: cancel it, or let it end",
                             "in_trial")
    if self.cancel_at is not None:
        raise CommandRefused("a cancellation is scheduled: reactivate first",
                             "cancellation_scheduled")
    if self.scheduled_plan is not None or self.scheduled_period is not None:
        raise CommandRefused("a plan or period change is scheduled for the period's end",
                             "change_scheduled")
    if self.commitment_end is not None and self.cycle_end < self.commitment_end:
        raise CommandRefused(f"{self.id} is in an agreement until "
                             f"{self.commitment_end.isoformat()}", "in_commitment")
    self._pause_scheduled(pause_at=self.cycle_end, timestamp=at)
    return True


def _pause_scheduled(self: Subscription, pause_at: datetime, timestamp: datetime) -> None:
    self.pause_at = pause_at


def pause_scheduled_at(self: Subscription) -> datetime | None:
    return getattr(self, "pause_at", None)


def _pause(self: Subscription, boundary: datetime) -> None:
    """At the period's end, instead of the next period (called by the roll)."""
    self._paused(closed_usage=self._closed_usage(boundary), plan_id=self.plan_id,
                 currency=str(self.terms["currency"]), timestamp=boundary)


def _paused(self: Subscription, closed_usage: dict[str, str], plan_id: str, currency: str,
            timestamp: datetime) -> None:
    self._open_closing(self.cycle_start, timestamp, closed_usage, trial=False)
    self._start_measures(timestamp, carry=False)  # a paused level bills nothing
    self.extra = {}  # packs end with their cycle, as at a roll
    self.status = "paused"
    self.cycle_start = self.cycle_end = timestamp
    self.pause_at = None


def resume(self: Subscription, at: datetime, catalog: Catalog) -> str:
    """Paused: a new period starts now, charged in advance, on the plan's current terms.
    Before the pause takes effect: the pause is withdrawn."""
    require_aware(at)
    self.check_not_ended()
    if self.status != "paused":
        if self.pause_scheduled_at() is None:
            raise CommandRefused(f"{self.id} is not paused", "not_paused")
        self._pause_withdrawn(timestamp=at)
        return "pause_withdrawn"
    terms = self._renewed_terms(self.plan_id, str(self.terms["period"]), catalog)
    end = length_of(terms).after(at)
    seats = self._seats_for_next_period(terms)
    charges = period_charges(terms, seats, self.addons, self.members, at, end, catalog)
    self._resumed(cycle_start=at, cycle_end=end, terms=terms, seats=seats, charges=charges,
                  timestamp=at)
    return "resumed"


def _pause_withdrawn(self: Subscription, timestamp: datetime) -> None:
    self.pause_at = None


def _resumed(self: Subscription, cycle_start: datetime, cycle_end: datetime,
             terms: dict[str, Any], seats: int | None, charges: list[Charge],
             timestamp: datetime) -> None:
    self._bill(charges)
    self.status = "active"
    self.cycle_start, self.cycle_end = cycle_start, cycle_end
    self.anchor, self.anchor_day = cycle_start, cycle_start.day
    self.terms = shared(terms)
    self.seats = seats
    self._keep_only_capped_metrics()
    self._note_user_plan_lines(charges, reset=True)


# Changes that take effect at the period's end, where a scheduled pause takes effect instead.
AT_PERIOD_END = frozenset({"change_plan", "cancel", "change_billing_period", "remove_addon"})


def check_not_paused(self: Subscription, command: str) -> None:
    if self.status == "paused" and command not in WHILE_PAUSED:
        raise CommandRefused(f"{self.id} is paused: resume it first", "subscription_paused")
    if self.pause_scheduled_at() is not None and command in AT_PERIOD_END:
        raise CommandRefused(f"{self.id} pauses at the period's end: `resume` withdraws the "
                             f"pause, then {command}", "pause_scheduled")
