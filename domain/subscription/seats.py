"""Seats, members and user plans. Commands and appliers of `Subscription`, named in its
class body.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from domain.billing.charges import Charge, prorated
from domain.billing.pricing import (
    dec,
)
from domain.catalog.model import Catalog
from domain.shared.errors import (
    CommandRefused,
)
from domain.shared.periods import length_of, require_aware

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

MAX_SEATS = 1_000_000  # per subscription: beyond it is a typo, not a customer


def check_seat_count(seats: int) -> None:
    if seats > MAX_SEATS:
        raise CommandRefused(f"a subscription has at most {MAX_SEATS:,} seats", "too_many_seats")

def add_seats(self: Subscription, count: int, at: datetime) -> None:
    require_aware(at)
    self.check_not_ended()
    if count < 1:
        raise CommandRefused("add at least one seat", "invalid_quantity")
    price = self.terms.get("extra_seat_price")
    if self.seats is None or price is None:
        raise CommandRefused(f"plan {self.plan_id} sells no extra seats",
                             "seats_not_for_sale")
    check_seat_count(self.seats + count)
    charges = [] if self.status == "trialing" else [
        prorated("seats", "Extra seats", count, dec(price), at, self.cycle_start,
                 self.cycle_end)]
    self._seats_added(count=count, seats=self.seats + count, charges=charges, timestamp=at)


def _seats_added(self: Subscription, count: int, seats: int, charges: list[Charge],
                 timestamp: datetime) -> None:
    self._bill(charges)
    self.seats = seats


def counts_members(self: Subscription) -> bool:
    """Whether this subscription's plan is sold by seats or limits its members, or it has
    members: then usage attributed to someone who is not a member is refused."""
    return (self.terms.get("included_seats") is not None
            or "members" in self.terms.get("limits", {}) or bool(self.members))


def check_member_can_join(self: Subscription, member: str) -> None:
    if member in self.members:
        raise CommandRefused(f"{member} is already a member", "member_exists")
    limit = self.terms.get("limits", {}).get("members")
    if limit is not None and len(self.members) >= limit:
        raise CommandRefused(f"plan {self.plan_id} allows {limit} members",
                             "member_limit_reached")
    if self.seats is not None and len(self.members) >= self.seats:
        raise CommandRefused(f"all {self.seats} seats are taken: add seats first",
                             "no_free_seat")


def add_member(self: Subscription, member: str, at: datetime) -> None:
    require_aware(at)
    self.check_not_ended()
    self.check_member_can_join(member)
    self._member_added(member=member, timestamp=at)


def _member_added(self: Subscription, member: str, timestamp: datetime) -> None:
    self.members[member] = {}


def release_seat(self: Subscription, member: str, at: datetime) -> None:
    require_aware(at)
    if member not in self.members:
        raise CommandRefused(f"{member} is not a member", "unknown_member")
    charges: list[Charge] = []
    seats = None
    if self.terms.get("credit_released_seats") and self.status != "trialing" \
            and self.seats is not None \
            and self.seats > max(int(self.terms["included_seats"]), len(self.members) - 1):
        seats = self.seats - 1
        charges.append(prorated("proration_credit", "Released seat, unused rest of the period",
                                1, dec(self.terms["extra_seat_price"]), at, self.cycle_start,
                                self.cycle_end, credit=True))
    self._seat_released(member=member, charges=charges, seats=seats, timestamp=at)


def _seat_released(self: Subscription, member: str, charges: list[Charge], seats: int | None,
                   timestamp: datetime) -> None:
    self.members.pop(member, None)
    self._bill(charges)
    if seats is not None:
        self.seats = seats


def assign_user_plan(self: Subscription, member: str, solution: str, level: str, at: datetime,
                     catalog: Catalog, switch: bool = False) -> bool:
    """At most one level per solution for each member; a member may hold several
    solutions. A new plan is charged for the rest of the period; a switch of level
    credits the old level's rest and charges the new one's."""
    require_aware(at)
    self.check_not_ended()
    if not self.terms.get("user_plans"):
        raise CommandRefused(f"plan {self.plan_id} has no user plans",
                             "user_plans_not_offered")
    monthly = catalog.user_plan_monthly_price(solution, level)
    held = self.members.get(member, {})
    current = held.get(solution)
    if current == level:
        return False
    if current is not None and not switch:
        raise CommandRefused(f"{member} already holds {solution}-{current}: one level per "
                             "solution (switch to change it)", "one_level_per_solution")
    if member not in self.members:
        self.check_member_can_join(member)
    months = length_of(self.terms).count
    paid = self.user_plans_paid()
    charges: list[Charge] = []
    if self.status != "trialing":
        old_key = f"{member}/{solution}/{current}"
        if current is not None and old_key in paid:  # credit what was paid, at its price
            charges.append(prorated("proration_credit", f"Unused {solution}-{current}", 1,
                                    dec(paid[old_key]) * months, at, self.cycle_start,
                                    self.cycle_end, credit=True, member=member,
                                    solution=solution, level=current))
        if f"{member}/{solution}/{level}" not in paid:  # not already paid this period
            charges.append(prorated("user_plan", f"{solution}-{level} for {member}", 1,
                                    monthly * months, at, self.cycle_start, self.cycle_end,
                                    member=member, solution=solution, level=level))
    self._user_plan_assigned(member=member, solution=solution, level=level,
                             replaced_level=current, charges=charges, timestamp=at)
    return True


def _user_plan_assigned(self: Subscription, member: str, solution: str, level: str,
                        replaced_level: str | None, charges: list[Charge],
                        timestamp: datetime) -> None:
    self._bill(charges)
    self.members.setdefault(member, {})[solution] = level
    self._note_user_plan_lines(charges)


def user_plans_paid(self: Subscription) -> dict[str, str]:
    """"member/solution/level" -> monthly price, for the user plans paid this period."""
    return dict(getattr(self, "user_plan_paid", {}))


def _note_user_plan_lines(self: Subscription, charges: list[Charge], reset: bool = False) -> None:
    paid = {} if reset else self.user_plans_paid()
    months = length_of(self.terms).count
    for line in charges:
        if "solution" not in line:
            continue
        key = f"{line['member']}/{line['solution']}/{line['level']}"
        if line["kind"] == "user_plan":
            paid[key] = str(dec(line["unit_price"]) / months)
        elif line["kind"] == "proration_credit":
            paid.pop(key, None)
    self.user_plan_paid = paid


def unassign_user_plan(self: Subscription, member: str, solution: str, at: datetime) -> None:
    """No credit: the plan stays paid to the end of the period (re-assigning it in the same
    period costs nothing more)."""
    require_aware(at)
    self.check_not_ended()
    level = self.members.get(member, {}).get(solution)
    if level is None:
        raise CommandRefused(f"{member} holds no {solution} plan", "not_assigned")
    self._user_plan_unassigned(member=member, solution=solution, level=level, timestamp=at)


def _user_plan_unassigned(self: Subscription, member: str, solution: str, level: str,
                          timestamp: datetime) -> None:
    self.members.get(member, {}).pop(solution, None)
