"""The plan catalog: plans, their prices and their allowances per metric.

A catalog is read from TOML (standard library `tomllib`); see docs/catalog.md for the format.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from domain.errors import CatalogError, UnknownPlan
from domain.money import Money

LIMIT_KINDS = ("hard", "overage")


@dataclass(frozen=True)
class Allowance:
    metric: str
    included: Decimal
    limit: str = "hard"  # "hard": usage past it marks the metric exhausted; "overage": billed
    overage_unit_price: Decimal | None = None

    def as_dict(self) -> dict[str, str]:
        d = {"included": str(self.included), "limit": self.limit}
        if self.overage_unit_price is not None:
            d["overage_unit_price"] = str(self.overage_unit_price)
        return d


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    rank: int
    price: Money
    period_months: int
    allowances: dict[str, Allowance] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    id: str
    version: str
    currency: str
    plans: dict[str, Plan]

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            raise UnknownPlan(f"no plan {plan_id!r} in catalog {self.id}") from None

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise CatalogError(f"catalog is not valid TOML: {e}") from e
        return cls.from_dict(raw)

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        return cls.from_toml(path.read_text(encoding="utf-8"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Catalog:
        head = raw.get("catalog", {})
        currency = _text(head, "currency", "catalog")
        plans = {pid: _plan(pid, body, currency) for pid, body in raw.get("plans", {}).items()}
        if not plans:
            raise CatalogError("catalog has no plans")
        return cls(
            id=_text(head, "id", "catalog"),
            version=str(head.get("version", "1")),
            currency=currency,
            plans=plans,
        )


PERIODS = {"month": 1, "quarter": 3, "half-year": 6, "year": 12}


def _text(d: dict[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{where}: '{key}' must be a non-empty string")
    return value


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise CatalogError(f"{where}: write amounts as strings or integers, never floats")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise CatalogError(f"{where}: not a number: {value!r}") from None
    if not result.is_finite() or result < 0:
        raise CatalogError(f"{where}: must be a finite amount >= 0")
    return result


def _plan(pid: str, body: dict[str, Any], currency: str) -> Plan:
    where = f"plan {pid}"
    period = body.get("period", "month")
    if period not in PERIODS:
        raise CatalogError(f"{where}: period must be one of {sorted(PERIODS)}")
    allowances = {}
    for metric, a in body.get("allowances", {}).items():
        limit = a.get("limit", "hard")
        if limit not in LIMIT_KINDS:
            raise CatalogError(f"{where}.{metric}: limit must be one of {LIMIT_KINDS}")
        price = a.get("overage_unit_price")
        allowances[metric] = Allowance(
            metric=metric,
            included=_decimal(a.get("included", 0), f"{where}.{metric}.included"),
            limit=limit,
            overage_unit_price=None if price is None else _decimal(price, f"{where}.{metric}"),
        )
    return Plan(
        id=pid,
        name=_text(body, "name", where),
        rank=int(body.get("rank", 0)),
        price=Money(_decimal(body.get("price", 0), f"{where}.price"), currency),
        period_months=PERIODS[period],
        allowances=allowances,
    )
