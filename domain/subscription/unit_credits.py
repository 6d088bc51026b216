"""Unit credits (docs/domain.md, "Unit credits"): units of one metric held across cycles, with a
priority and an expiry: given (`grant_units`) or bought as a catalog pack that lasts
(`lasts_days`). Usage past the cycle's usable amount (included plus packs) draws them as it
is recorded, in order (lowest priority first, then the soonest expiry, then the oldest grant),
each draw naming its grant; what is drawn joins the cycle's pack units (`extra`), so the
charges, thresholds, entitlements and the close count it as they count a pack. A grant pays
only for usage timed while it holds (from its grant to its expiry) and recorded after it: what
was past the allowance before stays overage (it may have been billed already). An expiry is an
event of its own, due at its time as a cycle's end is; usage timed before it that arrives later
still draws the grant. Commands and appliers of `Subscription`, named in its class body."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge
from domain.billing.pricing import dec
from domain.shared.errors import CommandRefused
from domain.shared.periods import require_aware
from domain.subscription.credits import utc_expiry

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

MAX_UNITS = Decimal(10) ** 12  # per grant
MAX_GRANTS = 200  # unit grants a subscription holds, not spent (each is part of its state)
MAX_UNIT_DECIMALS = 9  # as a usage quantity
NEVER = "9999-12-31T23:59:59+00:00"  # sorts after every expiry
ZERO = Decimal(0)


def drawable(allowance: Mapping[str, Any]) -> bool:
    """Whether units of this charge can be held and drawn: a flow (summed or counted) priced
    on units; not a level, a percentage, or a charge priced per group (a unit of no group)."""
    return (allowance.get("aggregation", "sum") in ("sum", "count")
            and "percentage" not in allowance and "group_by" not in allowance)


def check_units(self: Subscription, metric: str, quantity: Decimal, at: datetime,
                expires_at: datetime | None) -> None:
    allowance = self.terms["allowances"].get(metric)
    if allowance is None or not drawable(allowance):
        raise CommandRefused(f"plan {self.plan_id} has no charge {metric!r} that unit credits "
                             f"can pay for (a summed or counted metric, not priced by "
                             f"percentage or per group)", "units_not_applicable")
    exponent = quantity.as_tuple().exponent
    if not quantity.is_finite() or quantity <= 0 or quantity >= MAX_UNITS or (
            isinstance(exponent, int) and -exponent > MAX_UNIT_DECIMALS):
        raise CommandRefused(f"a unit grant is above 0 and below {MAX_UNITS}, with at most "
                             f"{MAX_UNIT_DECIMALS} decimals", "invalid_quantity")
    if expires_at is not None and expires_at <= at:
        raise CommandRefused(f"units expiring {expires_at.isoformat()} would never be usable",
                             "invalid_expiry")
    if len(self.unit_grants_now()) >= MAX_GRANTS:
        raise CommandRefused(f"{self.id} holds {MAX_GRANTS} unit grants not spent: no more",
                             "too_many_grants")


def grant_units(self: Subscription, metric: str, quantity: Decimal, at: datetime, *,
                priority: int = 0, expires_at: datetime | None = None,
                reason: str | None = None) -> None:
    """Units given (goodwill, a promotion, a contract's allotment): nothing is charged."""
    require_aware(at)
    self.check_not_ended()
    expires_at = utc_expiry(expires_at)
    self.check_units(metric, quantity, at, expires_at)
    self._add_unit_grant(metric, quantity, at, priority, expires_at, reason, None, [])


def _add_unit_grant(self: Subscription, metric: str, quantity: Decimal, at: datetime,
                    priority: int, expires_at: datetime | None, reason: str | None,
                    pack_id: str | None, charges: list[Charge]) -> None:
    grants = self.unit_grants_now()
    grant = {"id": f"u{getattr(self, 'unit_grants_made', 0) + 1}", "metric": metric,
             "quantity": str(quantity), "remaining": str(quantity), "priority": priority,
             "granted_at": at.astimezone(UTC).isoformat(),
             "expires_at": None if expires_at is None else expires_at.isoformat(),
             "pack_id": pack_id}
    self._units_granted(grant=grant, reason=reason, charges=charges,
                        balance=str(live_balance([*grants, grant], metric)), timestamp=at)


def buy_lasting_pack(self: Subscription, pack_id: str, metric: str, quantity: Decimal,
                     lasts_days: int, charges: list[Charge], at: datetime) -> None:
    """A pack that lasts `lasts_days` from its purchase, across cycles: its units are a grant
    drawn as usage needs them, not this cycle's allowance."""
    expires_at = at.astimezone(UTC) + timedelta(days=lasts_days)
    self.check_units(metric, quantity, at, expires_at)
    self._add_unit_grant(metric, quantity, at, 0, expires_at, None, pack_id, charges)


def _units_granted(self: Subscription, grant: dict[str, Any], reason: str | None,
                   charges: list[Charge], balance: str, timestamp: datetime) -> None:
    self._bill(charges)
    self.unit_grants = [*self.unit_grants_now(), dict(grant)]
    self.unit_grants_made = getattr(self, "unit_grants_made", 0) + 1


def unit_grants_now(self: Subscription) -> list[dict[str, Any]]:
    """Every unit grant with what remains of it (absent from subscriptions that never had one)."""
    return getattr(self, "unit_grants", [])


def usable_units(grants: list[dict[str, Any]], metric: str,
                 at: datetime) -> list[dict[str, Any]]:
    """The metric's grants with units left that hold at `at` (granted by then, not expired),
    in the order they are drawn."""
    usable = [g for g in grants if g["metric"] == metric and Decimal(g["remaining"]) > 0
              and datetime.fromisoformat(g["granted_at"]) <= at
              and (g["expires_at"] is None or datetime.fromisoformat(g["expires_at"]) > at)]
    return sorted(usable, key=lambda g: (g["priority"], g["expires_at"] or NEVER,
                                         int(g["id"][1:])))


def live_balance(grants: list[dict[str, Any]], metric: str) -> Decimal:
    """What is left of the metric's grants the clock has not expired yet: usable from now."""
    return sum((Decimal(g["remaining"]) for g in grants if g["metric"] == metric
                and not g.get("expired")), ZERO)


def unit_balance_now(self: Subscription, metric: str) -> Decimal:
    grants = getattr(self, "unit_grants", None)
    return live_balance(grants, metric) if grants else ZERO


def draw_units(self: Subscription, totals: Mapping[str, str], at: datetime,
               closing: bool = False) -> None:
    """Draw what the usage just recorded (`totals` per metric) takes past the usable amount
    of the open cycle (or, for late usage, of the closing one), at `at`. Usage in a trial is
    free: nothing is drawn."""
    grants = self.unit_grants_now()
    if not grants or self.status == "trialing":
        return
    if closing:
        assert self.closing is not None
        if self.closing.get("trial"):
            return
        allowances = self.closing["allowances"]
        used = {m: dec(q) for m, q in self.closing["usage"].items()}
        extra = {m: dec(q) for m, q in self.closing["extra"].items()}
    else:
        allowances, used, extra = self.terms["allowances"], self.used, self.extra
    for metric, recorded in sorted(totals.items()):
        allowance = allowances.get(metric)
        if allowance is None or not drawable(allowance):
            continue
        need = min(Decimal(recorded), used.get(metric, ZERO) - dec(allowance["included"])
                   - extra.get(metric, ZERO))
        drawn = []
        for grant in usable_units(grants, metric, at):
            if need <= 0:
                break
            take = min(Decimal(grant["remaining"]), need)
            drawn.append({"grant": grant["id"], "quantity": str(take)})
            need -= take
        if drawn:
            expired = {g["id"] for g in grants if g.get("expired")}
            left = live_balance(grants, metric) - sum(
                (Decimal(d["quantity"]) for d in drawn if d["grant"] not in expired), ZERO)
            self._units_drawn(metric=metric, drawn=drawn, closing=closing, balance=str(left),
                              timestamp=at)


def _units_drawn(self: Subscription, metric: str, drawn: list[dict[str, str]], closing: bool,
                 balance: str, timestamp: datetime) -> None:
    taken = {d["grant"]: Decimal(d["quantity"]) for d in drawn}
    grants = [{**g, "remaining": str(Decimal(g["remaining"]) - taken[g["id"]])}
              if g["id"] in taken else g for g in self.unit_grants_now()]
    self.unit_grants = [g for g in grants if Decimal(g["remaining"]) > 0]  # spent: gone
    total = sum(taken.values(), ZERO)
    if closing:
        assert self.closing is not None
        extra = self.closing["extra"]
        extra[metric] = str(dec(extra.get(metric, "0")) + total)
    else:
        self.extra[metric] = self.extra.get(metric, ZERO) + total


def next_unit_expiry(self: Subscription) -> datetime | None:
    """When the next grant with units left expires (absent grants: None, at no cost)."""
    grants = getattr(self, "unit_grants", None)
    if not grants:
        return None
    return min((datetime.fromisoformat(g["expires_at"]) for g in grants
                if g["expires_at"] is not None and not g.get("expired")), default=None)


def expire_units(self: Subscription, at: datetime) -> None:
    """The grants expiring at `at` are no longer usable from now: what is left of them is
    reported. They stay in the state while usage timed before their expiry may still come
    (late, or out of order in the open cycle) and draw them."""
    grants = self.unit_grants_now()
    ending = [g for g in grants if g["expires_at"] is not None and not g.get("expired")
              and datetime.fromisoformat(g["expires_at"]) <= at]
    expired = [{"grant": g["id"], "metric": g["metric"], "quantity": g["remaining"]}
               for g in ending]
    after = [{**g, "expired": True} if g in ending else g for g in grants]
    balances = {m: str(live_balance(after, m)) for m in sorted({g["metric"] for g in ending})}
    self._units_expired(expired=expired, balances=balances, timestamp=at)


def _units_expired(self: Subscription, expired: list[dict[str, str]], balances: dict[str, str],
                   timestamp: datetime) -> None:
    gone = {e["grant"] for e in expired}
    # The ones expired before the cycle usage may still come for began are of no more use.
    oldest = self.closing["start"] if self.closing is not None else \
        self.cycle_start.isoformat()
    horizon = datetime.fromisoformat(oldest)
    self.unit_grants = [
        {**g, "expired": True} if g["id"] in gone else g for g in self.unit_grants_now()
        if not (g.get("expired") and datetime.fromisoformat(g["expires_at"]) <= horizon)]
