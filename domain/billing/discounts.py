"""A coupon's discount on an invoice, as a pure function of the coupon's terms (as the
subscription copied them) and the invoice's other lines: one negative line, before tax (each
line's tax follows its amount), rounded HALF_UP to the cent.

A coupon discounts the invoices that charge a billing period's plan fee (a line of kind
`plan`): the first invoice of a subscription, and each cycle's invoice after. `applies_to =
"plan"` takes its share of those plan lines; `"invoice"` of the whole invoice. A fixed amount
is capped at what it applies to: a discount never makes an invoice negative."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.billing.charges import Charge, charge, round_money

ZERO = Decimal(0)


def discount_lines(coupon: dict[str, Any] | None, lines: list[Charge]) -> list[Charge]:
    if coupon is None or not any(line["kind"] == "plan" for line in lines):
        return []
    scope = coupon["applies_to"]
    base = sum((Decimal(line["amount"]) for line in lines
                if line["kind"] == "plan" or (scope == "invoice" and discountable(line))),
               ZERO)
    if base <= 0:
        return []
    what = "the plan fee" if scope == "plan" else "the invoice"
    if "percent_off" in coupon:
        off = round_money(base * Decimal(coupon["percent_off"]) / 100)
        description = f"Coupon {coupon['name']}: {coupon['percent_off']} % off {what}"
    else:
        off = min(Decimal(coupon["amount_off"]), base)
        description = f"Coupon {coupon['name']}: {coupon['amount_off']} off {what}"
    if not off:
        return []
    return [charge("discount", description, 1, -off, -off, coupon=coupon["id"])]


# Lines a coupon on the whole invoice leaves alone: money bought in advance (prepaid credits,
# packs) and usage charged during the cycle (each invoiced on its own, when it happened), which
# may share the cycle's invoice only by arriving in its grace window.
NOT_DISCOUNTED = ("credit_purchase", "pack")


def discountable(line: Charge) -> bool:
    return line["kind"] not in NOT_DISCOUNTED and not line.get("during_cycle")


def uses_a_period(document: dict[str, Any]) -> bool:
    """Whether an issued invoice spent one of its coupon's periods (it holds a discount)."""
    return any(line["kind"] == "discount" for line in document["lines"])
