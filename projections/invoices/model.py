"""The invoice read model, pure: the row operations one event message asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass
class Changes:
    """Row operations for one message, in order."""

    issue: list[dict[str, Any]] = field(default_factory=list)  # documents
    status: list[tuple[str, str, str | None]] = field(default_factory=list)  # number, status
    draft_lines: list[dict[str, Any]] = field(default_factory=list)
    clear_draft_through: int | None = None  # event version


def changes(message: dict[str, Any]) -> Changes:
    kind = message["type"]
    data = message.get("data", {})
    out = Changes()
    if kind == "InvoiceIssued":
        document = data["document"]
        out.issue.append(document)
        out.clear_draft_through = int(data["invoiced_through"])
        if "amount_due" in document and Decimal(document["amount_due"]) == 0:
            out.status.append((document["number"], "paid", None))  # prepaid credits paid it
    elif kind == "CreditNoteIssued":
        out.issue.append(data["document"])
        if not data["document"].get("refund"):  # a termination's refund leaves it standing
            out.status.append((data["document"]["references"], "credited", None))
    elif kind == "InvoiceVoided":
        out.status.append((data["number"], "void", None))
    elif kind == "PaymentFailed":
        out.status.append((data["reference"], "payment_failed", data["reason"]))
    elif kind == "PaymentSucceeded":
        out.status.append((data["reference"], "paid", None))
    elif data.get("charges"):
        out.draft_lines.extend(data["charges"])
    return out
