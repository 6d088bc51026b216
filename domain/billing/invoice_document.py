"""Invoice documents as a pure function of charge lines, the customer, the issuer and a date
(like Kill Bill's InvoiceGenerator): `build_invoice` with `number=None` is a preview or dry run.

Each line's tax is rounded HALF_UP to the cent on its own; the breakdown sums lines per rate;
total = subtotal + tax, to the cent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.billing.charges import Charge, round_money
from domain.billing.tax import treatment
from domain.shared.money import plain

DEFAULT_ISSUER: dict[str, Any] = {
    "name": "Billing Engine AS",
    "address": "Storgata 1, 0155 Oslo, Norway",
    "country": "NO",
    "vat_id": "NO999999999MVA",
    "invoice_prefix": "INV",
    "credit_note_prefix": "CN",
    "payment_terms_days": 14,
}


def issuer_with_defaults(issuer: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_ISSUER, **(issuer or {})}


def build_invoice(*, number: str | None, subscription: str, account: str,
                  customer: dict[str, Any], issuer: dict[str, Any], currency: str,
                  lines: list[Charge], issued_at: datetime, kind: str = "invoice",
                  references: str | None = None) -> dict[str, Any]:
    seller = issuer_with_defaults(issuer)
    tax = treatment(seller["country"], customer.get("country"),
                    bool(customer.get("business")), customer.get("vat_id"),
                    issued_at.astimezone(UTC).date())
    out_lines: list[dict[str, Any]] = []
    breakdown: dict[str, dict[str, Decimal]] = {}
    for line in lines:
        amount = Decimal(line["amount"])
        line_tax = round_money(amount * tax.rate / 100)
        out_lines.append({
            "kind": line["kind"], "description": line["description"],
            "quantity": line["quantity"], "unit_price": line["unit_price"],
            **billed_quantity(line, amount),
            "amount": str(amount), "tax_rate": str(tax.rate), "tax": str(line_tax),
            **{k: line[k] for k in ("period_start", "period_end") if k in line},
            # Which event of the subscription produced the line (for `billing invoice explain`).
            **({"source_version": line["event_version"]} if "event_version" in line else {}),
        })
        bucket = breakdown.setdefault(str(tax.rate), {"base": Decimal(0), "tax": Decimal(0)})
        bucket["base"] += amount
        bucket["tax"] += line_tax
    subtotal = sum((Decimal(x["amount"]) for x in out_lines), Decimal(0))
    tax_total = sum((b["tax"] for b in breakdown.values()), Decimal(0))
    terms = int(seller.get("payment_terms_days", 14))
    document: dict[str, Any] = {
        "number": number,
        "kind": kind,
        "subscription": subscription,
        "account": account,
        "issued_at": issued_at.isoformat(),
        "due_at": (issued_at + timedelta(days=terms)).isoformat(),
        "currency": currency,
        "seller": {k: seller[k] for k in ("name", "address", "country", "vat_id")},
        "buyer": {"name": customer.get("name") or account, "address": customer.get("address"),
                  "country": customer.get("country"), "vat_id": customer.get("vat_id"),
                  "business": bool(customer.get("business"))},
        "lines": out_lines,
        "tax_treatment": tax.code,
        "tax_note": tax.note,
        **({"tax_warning": tax.warning} if tax.warning else {}),
        "tax_breakdown": [{"rate": rate, "base": str(b["base"]), "tax": str(b["tax"])}
                          for rate, b in sorted(breakdown.items())],
        "subtotal": str(subtotal),
        "tax": str(tax_total),
        "total": str(subtotal + tax_total),
    }
    if references is not None:
        document["references"] = references
    return document


def credit_lines(invoice: dict[str, Any]) -> list[Charge]:
    """The lines of a full credit note for an invoice (amounts negated)."""
    return [{"kind": "credit", "description": f"Credit: {line['description']}",
             "quantity": line["quantity"], "unit_price": line["unit_price"],
             "amount": str(-Decimal(line["amount"]))} for line in invoice["lines"]]


def invoice_number(prefix: str, year: int, sequence: int) -> str:
    return f"{prefix}-{year}-{sequence:06d}"


def billed_quantity(line: Charge, amount: Decimal) -> dict[str, str]:
    """For a prorated line (`1 x 190.00` for 21 of 31 days, -128.71 as a credit): the
    quantity actually billed, so that it times the unit price gives the amount, and the
    fraction of the period. Other lines bill their quantity as it is."""
    fraction, unit_price = line.get("fraction"), Decimal(line["unit_price"])
    if fraction is None or not unit_price:
        return {}
    billed = (amount / unit_price).quantize(Decimal("0.000000001"))
    return {"billed_quantity": plain(billed.normalize()), "fraction": str(fraction)}
