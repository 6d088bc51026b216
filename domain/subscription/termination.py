"""Termination now (docs/domain.md, "Termination now"): the subscription ends at once, its usage
so far is billed at once, and the unused rest of the period it paid in advance is refunded by a
credit note. Commands and appliers of `Subscription`, named in its class body."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge, prorated
from domain.billing.invoice_document import build_invoice
from domain.billing.pricing import dec, period_charges
from domain.catalog.model import Catalog
from domain.shared.errors import CommandRefused
from domain.shared.periods import require_aware

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def terminate(self: Subscription, at: datetime, catalog: Catalog, refund: bool = True) -> None:
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
    if refund and self.status != "trialing":
        paid = period_charges(self.terms, self.seats, self.addons, self.members,
                              self.cycle_start, self.cycle_end, catalog)
        lines = [prorated("proration_credit", f"Unused time on {line['description']}",
                          dec(line["quantity"]), dec(line["unit_price"]), at, self.cycle_start,
                          self.cycle_end, credit=True) for line in paid]
        lines = [line for line in lines if dec(line["amount"]) != 0]
    self._terminated(closed_usage=self._closed_usage(at), refund=lines, plan_id=self.plan_id,
                     currency=str(self.terms["currency"]), timestamp=at)
    self._close_period(at)  # the usage so far, billed (and invoiced) at once


def _terminated(self: Subscription, closed_usage: dict[str, str], refund: list[Charge],
                plan_id: str, currency: str, timestamp: datetime) -> None:
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
    self._credit_note_issued(document=document, timestamp=at)
    return document
