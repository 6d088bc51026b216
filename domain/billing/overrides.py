"""Per-subscription price overrides (docs/domain.md, "Custom prices"): a deal agreed with one
customer ("contact us for custom pricing") on a plan's fee, extra seat price and per-unit
allowances, copied into the subscription's terms (as `overrides`, beside the prices they
replace) so replay needs no catalog and a renewal on a later catalog keeps the deal.

Overrides are per billing period, as written: a yearly deal's price is the year's."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from domain.contracts.usage import DECIMAL_STRING
from domain.shared.errors import CommandRefused

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal(10) ** 15
KEYS = {"price", "extra_seat_price", "allowances"}
ALLOWANCE_KEYS = {"included", "overage_unit_price"}


def checked_overrides(raw: object, terms: dict[str, Any]) -> dict[str, Any]:
    """The overrides as kept in terms (amounts as text), or CommandRefused(`invalid_override`)
    saying what cannot be overridden."""
    if not isinstance(raw, dict) or not raw or set(raw) - KEYS:
        raise _refused(f"overrides is an object of {', '.join(sorted(KEYS))}")
    kept: dict[str, Any] = {}
    for key in ("price", "extra_seat_price"):
        if key in raw:
            kept[key] = str(_amount(raw[key], key, money=True))
    if "extra_seat_price" in kept and terms.get("included_seats") is None:
        raise _refused(f"plan {terms['plan_id']} has no seats to price")
    allowances = raw.get("allowances", {})
    if not isinstance(allowances, dict):
        raise _refused("allowances is an object of metric -> {included, overage_unit_price}")
    kept_allowances = {}
    for metric, fields in sorted(allowances.items()):
        allowance = terms["allowances"].get(metric)
        if allowance is None:
            raise _refused(f"plan {terms['plan_id']} has no metric {metric!r}")
        if not isinstance(fields, dict) or not fields or set(fields) - ALLOWANCE_KEYS:
            raise _refused(f"{metric}: an object of {', '.join(sorted(ALLOWANCE_KEYS))}")
        if "included" in fields and "percentage" in allowance:
            raise _refused(f"{metric}: a percentage includes nothing")
        if "overage_unit_price" in fields and (
                allowance["limit"] != "overage" or "tiers" in allowance
                or allowance.get("charge_model", "per_unit") != "per_unit"):
            raise _refused(f"{metric}: only a per-unit overage price can be overridden")
        kept_allowances[metric] = {k: str(_amount(v, f"{metric}.{k}", money=False))
                                   for k, v in sorted(fields.items())}
    if kept_allowances:
        kept["allowances"] = kept_allowances
    return kept


def with_overrides(terms: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`terms` with the deal's prices in place of the catalog's, and the deal kept."""
    if not overrides:
        return terms
    out = copy.deepcopy(terms)
    for key in ("price", "extra_seat_price"):
        if key in overrides:
            out[key] = overrides[key]
    for metric, fields in overrides.get("allowances", {}).items():
        if metric in out["allowances"]:
            out["allowances"][metric].update(fields)
    out["overrides"] = overrides
    return out


def _amount(value: object, name: str, money: bool) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str) or (
            isinstance(value, str) and (len(value) > 40 or not DECIMAL_STRING.fullmatch(value))):
        raise _refused(f"{name}: an amount (an integer or a plain decimal string)")
    amount = Decimal(value)
    if amount >= MAX_AMOUNT:
        raise _refused(f"{name}: below 10^15")
    if amount < 0 or (money and amount != amount.quantize(CENT)):
        raise _refused(f"{name}: an amount >= 0" + (" with two decimals" if money else ""))
    return amount.quantize(CENT) if money else amount


def _refused(message: str) -> CommandRefused:
    return CommandRefused(f"price overrides: {message}", "invalid_override")
