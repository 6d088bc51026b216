"""Account invoices: an account's invoices of one issue date and currency, grouped into one
document, as Kill Bill and Lago present an account's invoice. A pure function of the numbered
per-subscription documents (which stay the invoices of record: this view has no number, so
nothing is billed twice); credit notes are grouped apart from invoices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# What is still owed on a document (an invoice unpaid, or paid by nobody yet).
OPEN = ("issued", "payment_failed")


def account_invoices(account: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One document per (issue date in UTC, currency, kind), in date order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for document in sorted(documents, key=lambda d: (d["issued_at"], d["number"])):
        key = (document["issued_at"][:10], document["currency"], document["kind"])
        groups.setdefault(key, []).append(document)
    return [_grouped(account, date, currency, kind, members)
            for (date, currency, kind), members in sorted(groups.items())]


def _grouped(account: str, date: str, currency: str, kind: str,
             members: list[dict[str, Any]]) -> dict[str, Any]:
    def summed(key: str, only_open: bool = False) -> str:
        return str(sum((Decimal(d.get(key, d["total"])) for d in members
                        if not only_open or d.get("status") in OPEN), Decimal(0)))

    return {
        "account": account, "date": date, "currency": currency, "kind": kind,
        "invoices": [{"number": d["number"], "subscription": d["subscription"],
                      "status": d.get("status"), "subtotal": d["subtotal"], "tax": d["tax"],
                      "total": d["total"], "amount_due": d.get("amount_due", d["total"]),
                      "lines": [{k: line[k] for k in ("kind", "description", "quantity",
                                                       "unit_price", "amount", "tax")}
                                for line in d["lines"]]} for d in members],
        "subtotal": summed("subtotal"), "tax": summed("tax"), "total": summed("total"),
        "amount_due": summed("amount_due", only_open=True),
    }
