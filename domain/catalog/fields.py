"""Readers of the catalog's TOML values, each refusing what it cannot read exactly with a
CatalogError that says where: tables, whole numbers, names, text, amounts (never a float),
money (two decimals), flags, and the check that a table holds only known keys."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.shared.errors import CatalogError

CENT = Decimal("0.01")
# A catalog's times (a campaign window, a coupon's last day): RFC 3339 with its offset, to the
# microsecond.
MOMENT = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})"
MAX_AMOUNT = Decimal(10) ** 15
# The largest whole numbers that keep every date the engine computes from them in range.
WHOLE_LIMITS = {"trial_days": 3650, "commitment_months": 1200,
                "late_usage_grace_minutes": 525_600, "payment_terms_days": 3650}
PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)


def table(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """The sub-table `key` of `d` (empty where absent)."""
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: '{key}' must be a table")
    return value


def whole(d: dict[str, Any], key: str, where: str, default: int | None) -> int | None:
    value = d.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CatalogError(f"{where}: '{key}' must be a whole number >= 0")
    limit = WHOLE_LIMITS.get(key, 10**9)
    if value > limit:  # time and counts a calendar can hold
        raise CatalogError(f"{where}: '{key}' is at most {limit}")
    return value


def names(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: '{key}' must be a list of names")
    return tuple(value)


def text(d: dict[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{where}: '{key}' must be a non-empty string")
    return value


def amount(value: object, where: str) -> Decimal:
    """An integer >= 0 or a plain decimal string ("0.004"): no float (not exact), and no
    exponent, sign, space or "_" in a string (what the published schema says too)."""
    if isinstance(value, float | bool):
        raise CatalogError(f"{where}: write amounts as strings or integers, never floats")
    if isinstance(value, int):
        if value < 0:
            raise CatalogError(f"{where}: must be an amount >= 0")
        amount = Decimal(value)
    elif not isinstance(value, str) or len(value) > 40 or not PLAIN_DECIMAL.fullmatch(value):
        raise CatalogError(f"{where}: not a plain decimal amount (like \"0.004\" or 50): "
                           f"{str(value)[:40]!r}")
    else:
        amount = Decimal(value)
    if amount >= MAX_AMOUNT:  # every sum of such amounts stays exact in 60 digits
        raise CatalogError(f"{where}: amounts are below 10^15")
    return amount


def flag(d: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise CatalogError(f"{where}: '{key}' is true or false")
    return value


def money(value: object, where: str) -> Decimal:
    """An amount with the currency's two places, whether the catalog wrote `50`, `"50.0"` or
    `"50.00"`: printed, it never shows an exponent."""
    value = amount(value, where)
    if value != value.quantize(CENT):
        raise CatalogError(f"{where}: prices have at most two decimals")
    return value.quantize(CENT)


def known_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    """A misspelt key would silently drop a price, a cap or a limit: refuse it."""
    if not isinstance(d, dict):
        raise CatalogError(f"{where}: must be a table")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")


def moment(value: object, where: str) -> datetime:
    """A quoted RFC 3339 time with its offset ("2026-11-27T00:00:00Z")."""
    if isinstance(value, str) and re.fullmatch(MOMENT, value, re.ASCII):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise CatalogError(f"{where}: a quoted RFC 3339 time with its offset, like "
                       f"\"2026-11-27T00:00:00Z\"")
