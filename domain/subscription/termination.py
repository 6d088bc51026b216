"""Termination now (docs/domain.md, "Termination now"): the subscription ends at once, its usage
so far is billed at once, and the unused rest of the period it paid in advance is refunded by a
credit note. Commands and appliers of `Subscription`, named in its class body."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge, charge, remaining_fraction, round_money
from domain.billing.invoice_document import build_invoice
from domain.billing.pricing import dec
from domain.shared.errors import CommandRefused
from domain.shared.periods import require_aware
from domain.subscription.credits import allocated

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def terminate(self: Subscription, at: datetime, refund: bool = True) -> None:
    """`refund`: credit the unused rest of the period's fees (plan, extra seats, add-ons,
    user plans) prorated to the microsecond; without it they stay paid."""
    require_aware(at)
    self.check_not_ended()
    if self.commitment_end is not None and at < self.commitment_end:
        raise CommandRefused(f"{self.id} is in an agreement until "
                             f"{self.commitment_end.isoformat()}: cancel it instead (it ends "
                             f"with the agreement)", "in_commitment")
    if self.closing is not None:
        self._close_period(at)  # the last cycle's late window ends with the subscription
    lines: list[Charge] = []
    if refund and self.status not in ("trialing", "paused"):
        lines = self.unused_credits(at)
    paused = self.status == "paused"
    self._terminated(closed_usage={} if paused else self._closed_usage(at), refund=lines,
                     plan_id=self.plan_id, currency=str(self.terms["currency"]), timestamp=at)
    if not paused:  # a paused subscription has no open cycle to close
        self._close_period(at)  # the usage so far, billed (and invoiced) at once


def _terminated(self: Subscription, closed_usage: dict[str, str], refund: list[Charge],
                plan_id: str, currency: str, timestamp: datetime) -> None:
    if self.status != "paused":
        self._open_closing(self.cycle_start, timestamp, closed_usage,
                           trial=self.status == "trialing")
        self._start_measures(timestamp)
    self.status = "cancelled"
    self.terminated_at = timestamp
    self.cycle_end = timestamp
    self.cancel_at = None
    self.scheduled_plan = None
    self.scheduled_period = None
    self.refund_due = refund or None


# What a period is charged in advance, and may be credited for its unused rest.
PERIOD_KINDS = ("plan", "seats", "addon", "user_plan", "proration_charge", "proration_credit",
                "discount")


def unused_credits(self: Subscription, at: datetime) -> list[Charge]:
    """Credits for the open cycle's rest from `at`, from what was charged for it (not the list
    price): each line covering the cycle up to its end, on an invoice still owed (not void or
    credited) or still on the draft, credited by the share of its own span left, with a
    coupon's discount on it taken back the same way. A calendar first period, a custom price,
    an upgrade's proration and a coupon are all refunded as they were charged."""
    end = self.cycle_end.isoformat()
    # (line, the start of what it charged for, the invoice it is on)
    covering: list[tuple[Charge, str, str | None]] = []
    for number, invoice in self.invoices.items():
        if invoice["kind"] != "invoice" or invoice["status"] in ("void", "credited") \
                or "document" not in invoice:
            continue
        lines = invoice["document"]["lines"]
        fee_start = next((line["period_start"] for line in lines
                          if line["kind"] == "plan" and line.get("period_end") == end), None)
        for line in lines:
            if line["kind"] == "discount" and fee_start is not None:
                covering.append((line, fee_start, number))
            elif line["kind"] in PERIOD_KINDS and line.get("period_end") == end:
                covering.append((line, line["period_start"], number))
    covering += [(line, line["period_start"], None) for line in self.uninvoiced
                 if line["kind"] in PERIOD_KINDS and line.get("period_end") == end]
    credits = []
    for line, start, source in covering:
        share = remaining_fraction(at, datetime.fromisoformat(start), self.cycle_end)
        amount = round_money(-dec(line["amount"]) * share)
        if amount:
            credits.append(charge("proration_credit", f"Unused time on {line['description']}",
                                  1, amount, amount, at, self.cycle_end,
                                  fraction=str(share.quantize(Decimal("0.000001"))),
                                  **({"credits_invoice": source} if source else {})))
    return credits


def refund_due_now(self: Subscription) -> list[Charge] | None:
    return getattr(self, "refund_due", None)


def issue_refund_note(self: Subscription, number: str, issuer: dict[str, Any],
                      at: datetime) -> dict[str, Any]:
    """The credit note of a termination's refund, referencing the invoice that charged the
    period (when there is one)."""
    require_aware(at)
    lines = self.refund_due_now()
    if not lines:
        raise CommandRefused(f"no refund due on {self.id}", "nothing_to_refund")
    start = self.cycle_start.isoformat()
    charged = [n for n, i in self.invoices.items() if i["kind"] == "invoice" and any(
        line.get("period_start") == start and line["kind"] == "plan"
        for line in i["document"]["lines"])]
    document = build_invoice(
        number=number, subscription=self.id, account=self.account, customer=self.customer,
        issuer=issuer, currency=str(self.terms["currency"]), lines=lines, issued_at=at,
        kind="credit_note", references=charged[-1] if charged else None)
    document["refund"] = True
    paid_by_credits = self.invoices[charged[-1]]["document"].get("credits_applied", []) \
        if charged else []
    if paid_by_credits:  # what credits paid goes back to them first, the rest in cash
        returned = credits_back(paid_by_credits, -dec(document["total"]))
        document["credits_returned"] = returned
        document["amount_due"] = str(dec(document["total"]) + sum(
            (dec(r["amount"]) for r in returned), Decimal(0)))
    self._credit_note_issued(document=document, timestamp=at)
    return document


def credits_back(applied: list[dict[str, str]], refund: Decimal) -> list[dict[str, str]]:
    """Up to `refund` given back to the grants that paid an invoice, the last one spent
    first (so a grant spent first, often the one expiring soonest, is the last refilled)."""
    return allocated([(a["grant"], dec(a["amount"])) for a in reversed(applied)], refund)
