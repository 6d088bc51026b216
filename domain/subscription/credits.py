"""Prepaid credits on a subscription (docs/domain.md, "Prepaid credits"): money granted (free,
or bought as a top-up) with a priority and an expiry, applied to invoices as they are issued,
each application naming the grant it came from; an automatic top-up when the balance falls
under a threshold. Commands and appliers of `Subscription`, named in its class body.

Credits pay an invoice's total (tax included), like a prepayment: the invoice's tax is that of
its lines, and `amount_due` is what is left to pay."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge, charge
from domain.shared.errors import CommandRefused
from domain.shared.periods import require_aware

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

CENT = Decimal("0.01")
MAX_CREDIT = Decimal(10) ** 9  # per grant or top-up
MAX_TOP_UP_THRESHOLD = Decimal(10) ** 9
NEVER = "9999-12-31T23:59:59+00:00"  # sorts after every expiry


def grant_credits(self: Subscription, amount: Decimal, at: datetime, *, priority: int = 0,
                  expires_at: datetime | None = None, purchased: bool = False,
                  reason: str | None = None) -> None:
    """`purchased`: a top-up the customer pays for, charged (and invoiced) at once; otherwise
    a grant (a goodwill credit, a promotion)."""
    require_aware(at)
    self.check_not_ended()
    check_credit_amount(amount, "amount")
    expires_at = utc_expiry(expires_at)
    if expires_at is not None and expires_at <= at:
        raise CommandRefused(f"credits expiring {expires_at.isoformat()} would never be usable",
                             "invalid_expiry")
    grants = self.credit_grants_now()
    charges: list[Charge] = []
    if purchased:
        label = f"Prepaid credits ({reason})" if reason else "Prepaid credits"
        charges = [charge("credit_purchase", label, 1, amount.quantize(CENT), amount)]
    self._credits_granted(grant=f"g{len(grants) + 1}", amount=str(amount.quantize(CENT)),
                          priority=priority,  # expiries in UTC: they sort as times
                          expires_at=None if expires_at is None else expires_at.isoformat(),
                          purchased=purchased, reason=reason, charges=charges, timestamp=at)


def utc_expiry(expires_at: datetime | None) -> datetime | None:
    """In UTC (grants are spent in the order of their expiries, compared as text); one that
    UTC cannot hold (year 9999 at -23:59) is refused."""
    if expires_at is None:
        return None
    try:
        return expires_at.astimezone(UTC)
    except OverflowError:
        raise CommandRefused(f"expiry {expires_at.isoformat()} is out of range",
                             "invalid_expiry") from None


def check_credit_amount(amount: Decimal, name: str) -> None:
    if amount <= 0 or amount >= MAX_CREDIT or amount != amount.quantize(CENT):
        raise CommandRefused(f"{name} is an amount above 0 and below {MAX_CREDIT}, with at "
                             f"most two decimals", "invalid_amount")


def _credits_granted(self: Subscription, grant: str, amount: str, priority: int,
                     expires_at: str | None, purchased: bool, reason: str | None,
                     charges: list[Charge], timestamp: datetime) -> None:
    self._bill(charges)
    self.credit_grants = [*self.credit_grants_now(), {
        "id": grant, "amount": amount, "remaining": amount, "priority": priority,
        "expires_at": expires_at, "purchased": purchased}]


def configure_auto_top_up(self: Subscription, threshold: Decimal, amount: Decimal,
                          at: datetime) -> bool:
    """When an issued invoice leaves less than `threshold` of credits, buy `amount` more. An
    amount of 0 turns it off."""
    require_aware(at)
    self.check_not_ended()
    if amount:
        check_credit_amount(amount, "amount")
        check_credit_amount(threshold, "threshold")
        if amount < threshold or threshold > MAX_TOP_UP_THRESHOLD:
            raise CommandRefused(f"a top-up buys at least its threshold (one reaches it), and "
                                 f"the threshold is at most {MAX_TOP_UP_THRESHOLD}",
                                 "invalid_amount")
    setting = {"threshold": str(threshold.quantize(CENT)),
               "amount": str(amount.quantize(CENT))} if amount else None
    if setting == getattr(self, "auto_top_up", None):
        return False
    self._auto_top_up_configured(setting=setting, timestamp=at)
    return True


def _auto_top_up_configured(self: Subscription, setting: dict[str, str] | None,
                            timestamp: datetime) -> None:
    self.auto_top_up = setting


def credit_grants_now(self: Subscription) -> list[dict[str, Any]]:
    """Every grant with what remains of it (absent from subscriptions that never had one)."""
    return getattr(self, "credit_grants", [])


def credit_balance(self: Subscription, at: datetime) -> Decimal:
    return sum((Decimal(g["remaining"]) for g in usable_grants(self.credit_grants_now(), at)),
               Decimal(0))


def usable_grants(grants: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """Grants with credit left and not expired at `at`, in the order they are spent: priority
    (lowest first), then the soonest expiry, then the oldest."""
    usable = [g for g in grants if Decimal(g["remaining"]) > 0
              and (g["expires_at"] is None or datetime.fromisoformat(g["expires_at"]) > at)]
    return sorted(usable, key=lambda g: (g["priority"], g["expires_at"] or NEVER,
                                         int(g["id"][1:])))


def credits_applied(grants: list[dict[str, Any]], total: Decimal,
                    at: datetime) -> list[dict[str, str]]:
    """Which grants pay how much of an invoice's `total` issued at `at`."""
    return allocated([(g["id"], Decimal(g["remaining"])) for g in usable_grants(grants, at)],
                     total)


def allocated(sources: list[tuple[str, Decimal]], amount: Decimal) -> list[dict[str, str]]:
    """`amount` taken from each (grant, available) in turn, as far as it goes."""
    taken = []
    for grant, available in sources:
        if amount <= 0:
            break
        take = min(available, amount)
        taken.append({"grant": grant, "amount": str(take)})
        amount -= take
    return taken


def with_credits(self: Subscription, document: dict[str, Any], at: datetime) -> dict[str, Any]:
    """An invoice document with the credits it would use (none: unchanged)."""
    # Credits never pay for credits: a top-up's own lines (with their tax) stay due.
    total = Decimal(document["total"]) - sum(
        (Decimal(line["amount"]) + Decimal(line["tax"]) for line in document["lines"]
         if line["kind"] == "credit_purchase"), Decimal(0))
    if total <= 0 or not self.credit_grants_now():
        return document
    applied = credits_applied(self.credit_grants_now(), total, at)
    if not applied:
        return document
    paid = sum((Decimal(a["amount"]) for a in applied), Decimal(0))
    return {**document, "credits_applied": applied,
            "amount_due": str(Decimal(document["total"]) - paid)}


def _spend_credits(self: Subscription, applied: list[dict[str, str]], sign: int) -> None:
    """Move grants' remaining credit by an invoice's applications (sign -1) or a credit
    note's return of them (+1)."""
    spent = {a["grant"]: Decimal(a["amount"]) for a in applied}
    self.credit_grants = [
        {**g, "remaining": str(Decimal(g["remaining"]) + sign * spent[g["id"]])}
        if g["id"] in spent else g for g in self.credit_grants_now()]


def top_up_if_low(self: Subscription, document: dict[str, Any], at: datetime) -> None:
    """After an invoice that credits paid: an automatic top-up when the usable balance fell
    under the threshold (not after a top-up's own invoice, nor once the subscription ended)."""
    setting = getattr(self, "auto_top_up", None)
    if setting is None or self.ended or "credits_applied" not in document \
            or self.credit_balance(at) >= Decimal(setting["threshold"]):
        return
    self.grant_credits(Decimal(setting["amount"]), at, purchased=True, reason="automatic top-up")
