"""The analytics read model, pure: the lifecycle fact an event message records (new, upgrade,
downgrade, churn, period change, pause, resume), with the recurring monthly price after it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.shared.periods import length_of


def change_of(message: dict[str, Any]) -> tuple[str, str | None, Decimal, str | None] | None:
    """(kind, plan, monthly price, currency) for a lifecycle event; None for the others."""
    kind = message["type"]
    data = message.get("data", {})
    if kind == "Subscribed":
        return ("new", *_recurring(data["terms"]))
    if kind == "PlanUpgraded":
        return ("upgrade", *_recurring(data["terms"]))
    if kind == "Terminated":  # ended at once
        return ("churn", data.get("plan_id"), Decimal(0), data.get("currency"))
    if kind == "Paused":  # still a customer, paying nothing until it resumes
        return ("pause", data.get("plan_id"), Decimal(0), data.get("currency"))
    if kind == "Resumed":
        return ("resume", *_recurring(data["terms"]))
    if kind == "CycleRolled":
        changes = data.get("changes", {})
        if changes.get("cancelled"):
            return ("churn", data["terms"]["plan_id"], Decimal(0), data["terms"]["currency"])
        if "cancelled_to_free" in changes:
            return ("churn", *_recurring(data["terms"]))
        if "plan" in changes:
            return ("downgrade", *_recurring(data["terms"]))
        if "period" in changes:
            return ("period_change", *_recurring(data["terms"]))
    return None


def _recurring(terms: dict[str, Any]) -> tuple[str, Decimal, str]:
    length = length_of(terms)  # a month is 52/12 weeks
    monthly = Decimal(terms["price"]) / length.weeks * 52 / 12 if length.weeks \
        else Decimal(terms["price"]) / length.months
    return terms["plan_id"], monthly.quantize(Decimal("0.0001")), terms["currency"]
