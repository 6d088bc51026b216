"""Invoices, credit notes and payments on a subscription, and when its charges are invoiced.
Commands and appliers of `Subscription`, named in its class body.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.billing.charges import Charge
from domain.billing.discounts import discount_lines, uses_a_period
from domain.billing.invoice_document import build_invoice, credit_lines
from domain.shared.errors import (
    CommandRefused,
)
from domain.shared.periods import require_aware
from domain.subscription.customer import customer_details

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

# An invoice no payment outcome reopens (a credit note or a void is final).
CLOSED = ("void", "credited")
PAYMENT_FAILURE_REASONS = ("declined", "insufficient_funds", "expired_card")
PAYMENT_RETRY_DAYS = (1, 3, 7)  # after the 1st, 2nd and 3rd failure; none after the 4th


def _bill(self: Subscription, charges: list[Charge]) -> None:
    for line in charges:  # unused time credited: no full credit note on that invoice after
        if line.get("credits_invoice") in getattr(self, "invoices", {}):
            self.invoices[line["credits_invoice"]]["refunded"] = True
    if charges:
        version = self.version + 1  # applied before the library advances the version
        self.uninvoiced = [*getattr(self, "uninvoiced", []),
                           *({**c, "event_version": version} for c in charges)]


def invoices_on(self: Subscription, kind: str, version: int) -> bool:
    """Whether the event of this kind at this version issues an invoice of the lines due
    (if any)."""
    if kind in self.INVOICED_WHEN_MADE:
        return True
    if kind not in self.INVOICED_PER_PLAN:
        return False
    if self.terms.get("change_invoicing", "now") == "now":
        return True
    made = [c for c in self.uninvoiced if c["event_version"] == version]
    return bool(made) and all(Decimal(c.get("fraction", 1)) == 1 for c in made)


def lines_due(self: Subscription, trigger_version: int) -> list[Charge]:
    return [c for c in self.uninvoiced if c["event_version"] <= trigger_version]


def update_customer(self: Subscription, fields: dict[str, Any], at: datetime) -> bool:
    """Billing details for the next invoices (issued ones never change)."""
    require_aware(at)
    customer = {**self.customer, **customer_details(fields)}
    if customer == self.customer:
        return False
    self._customer_updated(customer=customer, timestamp=at)
    return True


def _customer_updated(self: Subscription, customer: dict[str, Any], timestamp: datetime) -> None:
    self.customer = customer


def check_invoice_due(self: Subscription, trigger_version: int) -> None:
    if trigger_version <= self.invoiced_through:
        raise CommandRefused("already invoiced through this event", "already_invoiced")
    if not self.lines_due(trigger_version):
        raise CommandRefused("no charges to invoice", "nothing_to_invoice")


def preview_invoice(self: Subscription, issuer: dict[str, Any], at: datetime,
                    through_version: int | None = None) -> dict[str, Any]:
    """The draft as it would be issued at `at` (no number): a dry run. An invoice holds
    the lines of the events up to its trigger, however late the invoicer runs."""
    lines = self.lines_due(self.version if through_version is None else through_version)
    lines = lines + discount_lines(self.coupon_now(), lines)
    return self.with_credits(build_invoice(
        number=None, subscription=self.id, account=self.account, customer=self.customer,
        issuer=issuer, currency=str(self.terms["currency"]), lines=lines, issued_at=at), at)


def issue_invoice(self: Subscription, number: str, issuer: dict[str, Any], trigger_version: int,
                  at: datetime, draft: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finalize the draft: every uninvoiced line, with tax, under a number drawn from the
    issuer's gapless series. `draft` is `preview_invoice(issuer, at, trigger_version)`
    made earlier on this same state (so it can be drafted before a number is drawn)."""
    require_aware(at)
    self.check_invoice_due(trigger_version)
    if draft is None:
        draft = self.preview_invoice(issuer, at, trigger_version)
    document = {**draft, "number": number}
    self._invoice_issued(document=document, invoiced_through=trigger_version, timestamp=at)
    self.top_up_if_low(document, at)
    return document


def _invoice_issued(self: Subscription, document: dict[str, Any], invoiced_through: int,
                    timestamp: datetime) -> None:
    self.uninvoiced = [c for c in self.uninvoiced if c["event_version"] > invoiced_through]
    self.invoiced_through = invoiced_through
    self.invoices[document["number"]] = {"total": document["total"], "status": "issued",
                                         "kind": "invoice", "document": document}
    if uses_a_period(document):
        self._spend_coupon_period()
    if "credits_applied" in document:
        self._spend_credits(document["credits_applied"], -1)
        if Decimal(document["amount_due"]) == 0:
            self.invoices[document["number"]]["status"] = "paid"


def void_invoice(self: Subscription, number: str, at: datetime) -> None:
    """A void invoice keeps its number; it is simply no longer owed."""
    require_aware(at)
    invoice = self.invoices.get(number)
    if invoice is None or invoice["kind"] != "invoice":
        raise CommandRefused(f"no invoice {number} on {self.id}", "unknown_invoice")
    if invoice["status"] in ("void", "paid", "credited"):
        raise CommandRefused(f"invoice {number} is {invoice['status']}: issue a credit note"
                             if invoice["status"] == "paid" else
                             f"invoice {number} is {invoice['status']}", "invoice_closed")
    self._invoice_voided(number=number, timestamp=at)


def _invoice_voided(self: Subscription, number: str, timestamp: datetime) -> None:
    self.invoices[number]["status"] = "void"


def issue_credit_note(self: Subscription, invoice_number: str, number: str, issuer: dict[str, Any],
                      at: datetime) -> dict[str, Any]:
    """A correction of an issued invoice: a document of its own, with its own number,
    referencing the invoice and crediting it in full."""
    require_aware(at)
    invoice = self.invoices.get(invoice_number)
    if invoice is None or invoice["kind"] != "invoice":
        raise CommandRefused(f"no invoice {invoice_number} on {self.id}", "unknown_invoice")
    if invoice["status"] in ("void", "credited"):
        raise CommandRefused(f"invoice {invoice_number} is {invoice['status']}",
                             "invoice_closed")
    if invoice.get("refunded"):
        raise CommandRefused(f"invoice {invoice_number} has a termination's refund already: "
                             f"a full credit would credit that part twice", "invoice_closed")
    original = invoice["document"]
    document = build_invoice(
        number=number, subscription=self.id, account=self.account,
        customer={**self.customer, **{k: original["buyer"][k] for k in
                                      ("country", "vat_id", "business")}},
        issuer=issuer, currency=original["currency"], lines=credit_lines(original),
        issued_at=at, kind="credit_note", references=invoice_number)
    if "credits_applied" in original:  # what credits paid goes back to their grants
        document["credits_returned"] = original["credits_applied"]
        returned = sum((Decimal(a["amount"]) for a in original["credits_applied"]), Decimal(0))
        document["amount_due"] = str(Decimal(document["total"]) + returned)  # the cash part
    self._credit_note_issued(document=document, timestamp=at)
    return document


def _credit_note_issued(self: Subscription, document: dict[str, Any], timestamp: datetime) -> None:
    if document.get("refund"):  # a termination's refund: the period's invoice stands
        self.refund_due = None
        if document.get("references") in self.invoices:
            self.invoices[document["references"]]["refunded"] = True
    else:
        self.invoices[document["references"]]["status"] = "credited"
    if "credits_returned" in document:
        self._spend_credits(document["credits_returned"], +1)
    self.invoices[document["number"]] = {"total": document["total"], "status": "issued",
                                         "kind": "credit_note"}


def record_payment(self: Subscription, reference: str, outcome: str, amount: Decimal, at: datetime,
                   reason: str | None = None) -> None:
    """The processor's outcome for a charge (card data never reaches the engine)."""
    require_aware(at)
    if outcome == "succeeded":
        self._payment_succeeded(reference=reference, amount=str(amount), timestamp=at)
        return
    if outcome != "failed":
        raise CommandRefused(f"outcome is succeeded or failed, not {outcome!r}",
                             "invalid_outcome")
    if reason not in PAYMENT_FAILURE_REASONS:
        raise CommandRefused(f"failure reason must be one of {PAYMENT_FAILURE_REASONS}",
                             "invalid_reason")
    attempt = self.payment_attempts.get(reference, 0) + 1
    retry = (at + timedelta(days=PAYMENT_RETRY_DAYS[attempt - 1])
             if attempt <= len(PAYMENT_RETRY_DAYS) else None)
    self._payment_failed(reference=reference, amount=str(amount), reason=reason,
                         attempt=attempt, next_retry_at=retry, timestamp=at)


def _payment_succeeded(self: Subscription, reference: str, amount: str,
                       timestamp: datetime) -> None:
    self.payment_attempts.pop(reference, None)
    if reference in getattr(self, "invoices", {}) and \
            self.invoices[reference]["status"] not in CLOSED:
        self.invoices[reference]["status"] = "paid"
    if not self.payment_attempts:
        self.payment_state = "ok"


def _payment_failed(self: Subscription, reference: str, amount: str, reason: str, attempt: int,
                    next_retry_at: datetime | None, timestamp: datetime) -> None:
    self.payment_attempts[reference] = attempt
    if reference in getattr(self, "invoices", {}) and \
            self.invoices[reference]["status"] not in CLOSED:
        self.invoices[reference]["status"] = "payment_failed"
    self.payment_state = "retrying" if next_retry_at is not None else "past_due"
