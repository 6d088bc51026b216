"""The plan catalog: plans, prices per billing period, seats, allowances, limits, features, packs,
add-ons and user plans. Read from TOML (standard library `tomllib`); docs/catalog.md documents the
format. A subscription copies the terms it is billed under (`Plan.terms`) into its events, so a
later catalog version never changes the past.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from domain.catalog import fields
from domain.catalog.coupons import Coupon, parse_coupon
from domain.catalog.fields import CENT
from domain.contracts.usage import PROPERTY_NAME
from domain.shared.errors import CatalogError, CommandRefused, UnknownPlan
from domain.shared.money import Money
from domain.shared.periods import Length
from domain.shared.text import InvalidText, check_all_text

LIMIT_KINDS = ("hard", "overage")
# How usage past the usable amount is priced (docs/catalog.md, "Charge models").
CHARGE_MODELS = ("per_unit", "graduated", "volume", "package", "percentage")
PERCENTAGE_KEYS = {"rate", "fixed_fee", "per_event_min", "per_event_max"}
# What usage past a daily cap does: recorded and reported, or refused (`daily_cap_reached`).
DAILY_CAP_ACTIONS = ("record", "refuse")
CHANGE_INVOICING = ("now", "next_invoice")
# How a metric's usage events make the amount billed and checked (docs/catalog.md,
# "Aggregations"). The last four measure a level, not a flow: their `included` and tier bounds
# are not multiplied for longer billing periods.
AGGREGATIONS = ("sum", "count", "max", "unique", "latest", "recurring")
# When usage past the usable amount is charged: when the cycle closes, or as it is recorded.
BILLED = ("in_arrears", "in_advance")
LEVEL_AGGREGATIONS = ("max", "unique", "latest", "recurring")
PERIODS = {"month": 1, "quarter": 3, "half-year": 6, "year": 12}  # periods counted in months
# Every period a plan may be sold per, shortest first: a weekly plan (`interval = "week"`) is
# sold per week only, and states its amounts per week.
PERIOD_NAMES = ("week", "month", "quarter", "half-year", "year")
INTERVALS = ("month", "week")


def period_rank(period: str) -> int:
    """Periods ordered by length (a week is shorter than any month-counted period)."""
    return PERIOD_NAMES.index(period)


def period_length(period: str) -> Length:
    return Length(weeks=1) if period == "week" else Length(months=PERIODS[period])


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # units past the allowance covered by this tier; None = no bound
    unit_price: Decimal
    flat_fee: Decimal | None = None  # charged once when usage reaches this tier

    def as_dict(self) -> dict[str, Any]:
        d = {"up_to": None if self.up_to is None else str(self.up_to),
             "unit_price": str(self.unit_price)}
        if self.flat_fee is not None:
            d["flat_fee"] = str(self.flat_fee)
        return d


@dataclass(frozen=True)
class Allowance:
    metric: str
    included: Decimal
    limit: str = "hard"  # "hard": usage past it is recorded but the metric is exhausted
    overage_unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()  # graduated overage; overrides overage_unit_price
    daily_cap: Decimal | None = None
    charge_model: str = ""  # "" = per_unit, or graduated when there are tiers
    package_size: Decimal | None = None  # package: units per started package
    package_price: Decimal | None = None
    on_daily_cap: str = "record"
    # percentage: {"rate", and optional "fixed_fee", "per_event_min", "per_event_max"}, as text
    percentage: tuple[tuple[str, str], ...] = ()
    minimum_spend: Decimal | None = None  # per month: a true-up up to it at the cycle's close
    aggregation: str = "sum"
    unique_of: str = ""  # unique: the dimension whose distinct values are counted
    of: str = ""  # a filtered charge: the reported metric whose events it counts...
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ...when every dimension matches
    billed: str = "in_arrears"
    group_by: str = ""  # a dimension: each of its values priced apart, with its own allowance

    @property
    def measure(self) -> str:
        """How the metric is measured: `sum`, `unique of user`, `sum by workspace`, …"""
        return " ".join(part for part in (
            self.aggregation, self.unique_of and f"of {self.unique_of}",
            self.group_by and f"by {self.group_by}") if part)

    def for_months(self, months: int) -> Allowance:
        """The allowance of a billing period of `months` months: `included` is per month."""
        if months == 1:
            return self
        if self.aggregation in LEVEL_AGGREGATIONS:
            return replace(self, minimum_spend=None if self.minimum_spend is None
                           else self.minimum_spend * months)
        tiers = tuple(replace(t, up_to=None if t.up_to is None else t.up_to * months)
                      for t in self.tiers)
        return replace(self, included=self.included * months, tiers=tiers,
                       minimum_spend=None if self.minimum_spend is None
                       else self.minimum_spend * months)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"included": str(self.included), "limit": self.limit}
        if self.overage_unit_price is not None:
            d["overage_unit_price"] = str(self.overage_unit_price)
        if self.tiers:
            d["tiers"] = [t.as_dict() for t in self.tiers]
        if self.daily_cap is not None:
            d["daily_cap"] = str(self.daily_cap)
        if self.on_daily_cap != "record":  # absent from terms written before: recorded
            d["on_daily_cap"] = self.on_daily_cap
        if self.charge_model:  # absent from terms written before charge models: unchanged
            d["charge_model"] = self.charge_model
        if self.package_size is not None and self.package_price is not None:
            d["package"] = {"size": str(self.package_size), "price": str(self.package_price)}
        if self.percentage:
            d["percentage"] = dict(self.percentage)
        if self.minimum_spend is not None:
            d["minimum_spend"] = str(self.minimum_spend)
        if self.aggregation != "sum":  # absent from terms written before aggregations: sum
            d["aggregation"] = self.aggregation
        if self.unique_of:
            d["unique_of"] = self.unique_of
        if self.billed != "in_arrears":
            d["billed"] = self.billed
        if self.group_by:
            d["group_by"] = self.group_by
        if self.of:
            d["of"] = self.of
            d["where"] = {name: list(values) for name, values in self.where}
        return d


@dataclass(frozen=True)
class Pack:
    id: str
    name: str
    metric: str
    quantity: Decimal
    price: Decimal
    # A pack that lasts this many days from its purchase, across cycles (unit credits drawn as
    # usage needs them); None: its units are the current cycle's, gone at its end.
    lasts_days: int | None = None


@dataclass(frozen=True)
class AddOn:
    id: str
    name: str
    monthly_price: Decimal
    features: tuple[str, ...] = ()
    # Priced per user: `per_user` counts the members; `solution` the members holding a user
    # plan of that solution (counted at each period's start, and when the add-on is added).
    per_user: bool = False
    solution: str | None = None


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    rank: int
    currency: str
    prices: dict[str, Decimal]  # billing period -> price for one period
    allowances: dict[str, Allowance] = field(default_factory=dict)
    included_seats: int | None = None  # None: members are not counted in seats
    extra_seat_monthly_price: Decimal | None = None  # None: extra seats are not sold
    limits: dict[str, int] = field(default_factory=dict)  # absent: unlimited
    features: tuple[str, ...] = ()
    trial_days: int = 0
    commitment_months: int = 0
    auto_renew: bool = True
    available: bool = True
    upgrade_proration: str = "prorate"  # or "full": full price, new cycle from the upgrade
    change_invoicing: str = "now"  # or "next_invoice": mid-period charges wait for the cycle
    user_plans: bool = False  # members hold user plans (solution x level), billed per user
    downgrade_usage_check: bool = True  # refuse a downgrade while this cycle's usage is above
    recommended_for: tuple[str, ...] = ()  # agent templates / integrations this plan suits
    credit_released_seats: bool = False  # a released extra seat is credited for the rest
    countries: tuple[str, ...] = ()  # sold only to customers in these (ISO 3166); () = all
    available_from: datetime | None = None  # a campaign window: sold from (inclusive) ...
    available_until: datetime | None = None  # ... until (exclusive)
    # Progressive billing: the cycle's usage charges are invoiced when they reach each amount
    # ("thresholds", increasing), then every "every" past the last; empty: at the close only.
    progressive_billing: dict[str, Any] = field(default_factory=dict)
    minimum_commitment: Decimal | None = None  # per month: a true-up at each cycle's close
    # "week": a weekly plan; its price, allowances, seat price and minimums are per week
    interval: str = "month"

    def check_offered(self, at: datetime, country: str | None, deal: bool = False) -> None:
        """Whether a subscription may start on, or change to, this plan at `at` for a
        customer in `country` (subscriptions already on it keep renewing either way). A plan
        not `available` is sold only on a `deal` (custom prices agreed with the customer)."""
        if not self.available and not deal:
            raise CommandRefused(f"plan {self.id} is not available", "plan_unavailable")
        if self.countries and country not in self.countries:
            raise CommandRefused(
                f"plan {self.id} is sold in {', '.join(self.countries)} only; the customer's "
                f"country is {country or 'not given'}", "plan_not_offered_in_country")
        if (self.available_from is not None and at < self.available_from) or (
                self.available_until is not None and at >= self.available_until):
            window = " ".join(part for part in (
                self.available_from and f"from {self.available_from.isoformat()}",
                self.available_until and f"until {self.available_until.isoformat()}") if part)
            raise CommandRefused(f"plan {self.id} is sold {window}; not at {at.isoformat()}",
                                 "plan_not_offered_now")

    def offered(self, at: datetime, country: str | None) -> bool:
        """Whether `check_offered` lets a customer in `country` move to this plan at `at`."""
        try:
            self.check_offered(at, country)
        except CommandRefused:
            return False
        return True

    @property
    def price(self) -> Money:
        """The monthly price (or the shortest period's), for display."""
        period = min(self.prices, key=period_rank)
        return Money(self.prices[period], self.currency)

    def price_for(self, period: str) -> Decimal:
        try:
            return self.prices[period]
        except KeyError:
            raise CatalogError(f"plan {self.id} is not sold per {period}",
                               "period_not_offered") from None

    def terms(self, period: str) -> dict[str, Any]:
        """Everything a subscription needs to bill this plan for this period, as plain data.
        Amounts per month (per week on a weekly plan) are multiplied for the period's length."""
        length = period_length(period)
        months = length.count  # a weekly plan's amounts are per week: x 1
        seat_price = self.extra_seat_monthly_price
        return {
            "plan_id": self.id,
            "plan_name": self.name,
            "rank": self.rank,
            "currency": self.currency,
            "period": period,
            **length.as_terms(),
            "price": str(self.price_for(period)),
            "included_seats": self.included_seats,
            "extra_seat_price": None if seat_price is None else str(seat_price * months),
            "limits": dict(self.limits),
            "features": list(self.features),
            "upgrade_proration": self.upgrade_proration,
            "change_invoicing": self.change_invoicing,
            "user_plans": self.user_plans,
            "allowances": {m: a.for_months(months).as_dict()
                           for m, a in sorted(self.allowances.items())},
            "downgrade_usage_check": self.downgrade_usage_check,
            "auto_renew": self.auto_renew,
            # absent from terms written before, and when false: a released seat stays paid
            **({"credit_released_seats": True} if self.credit_released_seats else {}),
            **({"progressive_billing": self.progressive_billing}
               if self.progressive_billing else {}),
            **({"minimum_commitment": str(self.minimum_commitment * months)}
               if self.minimum_commitment is not None else {}),
        }


@dataclass(frozen=True)
class Catalog:
    id: str
    version: str
    currency: str
    plans: dict[str, Plan]
    packs: dict[str, Pack] = field(default_factory=dict)
    addons: dict[str, AddOn] = field(default_factory=dict)
    user_plans: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # solution->level->€
    # The features each user-plan level brings its holder (solution -> level -> features).
    user_plan_features: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    free_plan: str | None = None
    thresholds: tuple[int, ...] = (80, 100)
    late_usage_grace_minutes: int = 60
    source_sha256: str = ""
    source: str = ""  # the TOML text, recorded with the version in the event store
    issuer: dict[str, Any] = field(default_factory=dict)  # the seller on invoices
    coupons: dict[str, Coupon] = field(default_factory=dict)

    def aggregations(self) -> dict[str, str]:
        """How each metric is measured (one way per catalog: checked when it is read): its
        aggregation, with what it counts distinct values of or groups by."""
        return {m: a.measure for p in self.plans.values() for m, a in p.allowances.items()}

    def coupon(self, coupon_id: str) -> Coupon:
        try:
            return self.coupons[coupon_id]
        except KeyError:
            raise CommandRefused(f"no coupon {coupon_id!r} in catalog {self.id}",
                                 "unknown_coupon") from None

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            raise UnknownPlan(f"no plan {plan_id!r} in catalog {self.id}") from None

    def pack(self, pack_id: str) -> Pack:
        try:
            return self.packs[pack_id]
        except KeyError:
            raise CatalogError(f"no pack {pack_id!r}", "unknown_pack") from None

    def addon(self, addon_id: str) -> AddOn:
        try:
            return self.addons[addon_id]
        except KeyError:
            raise CatalogError(f"no add-on {addon_id!r}", "unknown_addon") from None

    def user_plan_monthly_price(self, solution: str, level: str) -> Decimal:
        try:
            return self.user_plans[solution][level]
        except KeyError:
            raise CatalogError(f"no user plan {solution}-{level}", "unknown_user_plan") from None

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise CatalogError(f"catalog is not valid TOML: {e}") from e
        catalog = cls.from_dict(raw)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return _replace_sha(catalog, sha, text)

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        return cls.from_toml(path.read_text(encoding="utf-8"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Catalog:
        try:
            check_all_text(raw, "catalog")
        except InvalidText as e:
            raise CatalogError(str(e), e.code) from None
        head = fields.table(raw, "catalog", "catalog file")
        fields.known_keys(raw, TOP_KEYS, "catalog file")
        fields.known_keys(head, HEAD_KEYS, "[catalog]")
        currency = fields.text(head, "currency", "catalog")
        plans = {pid: _plan(pid, body, currency)
                 for pid, body in fields.table(raw, "plans", "catalog file").items()}
        if not plans:
            raise CatalogError("catalog has no plans")
        packs = {pid: _pack(pid, body)
                 for pid, body in fields.table(raw, "packs", "catalog file").items()}
        addons = {aid: _addon(aid, body)
                  for aid, body in fields.table(raw, "addons", "catalog file").items()}
        coupons = {cid: parse_coupon(cid, body, set(plans))
                   for cid, body in fields.table(raw, "coupons", "catalog file").items()}
        solutions = fields.table(raw, "user_plans", "catalog file")
        levels = {solution: {level: _user_plan_level(value, f"user_plans.{solution}.{level}")
                             for level, value in fields.table(solutions, solution,
                                                              "user_plans").items()}
                  for solution in solutions}
        user_plans = {s: {lv: price for lv, (price, _) in by.items()} for s, by in levels.items()}
        user_plan_features = {s: {lv: feats for lv, (_, feats) in by.items() if feats}
                              for s, by in levels.items()}
        user_plan_features = {s: by for s, by in user_plan_features.items() if by}
        for addon in addons.values():
            if addon.solution is not None and addon.solution not in user_plans:
                raise CatalogError(f"add-on {addon.id}: no user plans of solution "
                                   f"{addon.solution!r}")
        free_plan = head.get("free_plan")
        if free_plan is not None and (not isinstance(free_plan, str) or free_plan not in plans):
            raise CatalogError(f"free_plan {free_plan!r} is not a plan")
        thresholds = head.get("thresholds", [80, 100])
        if not isinstance(thresholds, list) or any(
                isinstance(t, bool) or not isinstance(t, int) or not 0 < t <= 100
                for t in thresholds):
            raise CatalogError("thresholds are whole percentages in (0, 100], e.g. [80, 100]")
        for pack in packs.values():
            if not any(pack.metric in p.allowances for p in plans.values()):
                raise CatalogError(f"pack {pack.id}: no plan has metric {pack.metric!r}")
            if any(p.allowances[pack.metric].percentage for p in plans.values()
                   if pack.metric in p.allowances):
                raise CatalogError(f"pack {pack.id}: {pack.metric!r} is priced by percentage "
                                   f"on some plan: a pack of it would add nothing")
            if any(p.allowances[pack.metric].group_by for p in plans.values()
                   if pack.metric in p.allowances):
                raise CatalogError(f"pack {pack.id}: {pack.metric!r} is priced per group on "
                                   f"some plan: a pack would belong to no group")
            if pack.lasts_days is not None and any(
                    p.allowances[pack.metric].aggregation not in ("sum", "count")
                    for p in plans.values() if pack.metric in p.allowances):
                raise CatalogError(f"pack {pack.id}: a pack that lasts holds units drawn by "
                                   f"usage: {pack.metric!r} must be summed or counted")
        _check_ranks(plans)
        _check_one_measure_per_metric(plans)
        issuer = dict(fields.table(raw, "issuer", "catalog file"))
        fields.known_keys(issuer, ISSUER_KEYS, "[issuer]")
        for key in issuer:
            if key == "payment_terms_days":
                fields.whole(issuer, key, "[issuer]", None)
            else:
                fields.text(issuer, key, "[issuer]")
        return cls(
            issuer=issuer,
            id=fields.text(head, "id", "catalog"),
            version=_version(head),
            currency=currency,
            plans=plans,
            packs=packs,
            addons=addons,
            coupons=coupons,
            user_plans=user_plans,
            user_plan_features=user_plan_features,
            free_plan=free_plan,
            thresholds=tuple(sorted(thresholds)),
            late_usage_grace_minutes=fields.whole(head, "late_usage_grace_minutes", "[catalog]", 60)
            or 0,
        )


def _replace_sha(catalog: Catalog, sha: str, text: str) -> Catalog:
    return replace(catalog, source_sha256=sha, source=text)


def _check_one_measure_per_metric(plans: dict[str, Plan]) -> None:
    """A metric is measured the same way on every plan (its producers report one kind of
    event; a plan change keeps what was measured)."""
    seen: dict[str, tuple[str, str]] = {}
    for pid, plan in plans.items():
        for metric, allowance in plan.allowances.items():
            first = seen.setdefault(metric, (pid, allowance.measure))
            if first[1] != allowance.measure:
                raise CatalogError(f"{metric}: aggregation {first[1]} on plan {first[0]}, "
                                   f"{allowance.measure} on plan {pid}: one per metric")


def _check_ranks(plans: dict[str, Plan]) -> None:
    """A higher rank never costs less per month: an upgrade then never lowers a period's total."""
    ranked = sorted(plans.values(), key=lambda p: p.rank)
    for lower, higher in itertools.pairwise(ranked):
        common = set(lower.prices) & set(higher.prices)
        for period in common:
            if higher.prices[period] < lower.prices[period]:
                raise CatalogError(
                    f"plan {higher.id} (rank {higher.rank}) costs less per {period} than "
                    f"{lower.id} (rank {lower.rank})"
                )


def _version(head: dict[str, Any]) -> str:
    value = head.get("version", "1")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "" or (
            isinstance(value, int) and value < 0):
        raise CatalogError("[catalog]: 'version' is a string (or a whole number)")
    return str(value)


def _prices(body: dict[str, Any], where: str) -> dict[str, Decimal]:
    """`prices = {month = "190.00", year = "1900.00"}`, or `price` (monthly) with an optional
    `annual_discount_percent` that derives the yearly price; quarter and half-year follow the
    monthly price unless given."""
    prices: dict[str, Decimal] = {}
    for period, value in fields.table(body, "prices", where).items():
        if period not in PERIODS:
            raise CatalogError(f"{where}: unknown period {period!r}; use {sorted(PERIODS)}")
        prices[period] = fields.money(value, f"{where}.prices.{period}")
    if "price" in body:
        monthly = fields.money(body["price"], f"{where}.price")
        prices.setdefault("month", monthly)
        discount = body.get("annual_discount_percent")
        if discount is not None:
            pct = fields.amount(discount, f"{where}.annual_discount_percent")
            if pct >= 100:
                raise CatalogError(f"{where}: annual_discount_percent must be below 100")
            yearly = (monthly * 12 * (100 - pct) / 100).quantize(CENT, ROUND_HALF_UP)
            prices.setdefault("year", yearly)
        periods = body.get("periods", ["month"])
        if not isinstance(periods, list):
            raise CatalogError(f"{where}: periods is a list, e.g. [\"month\", \"year\"]")
        for period in periods:
            if not isinstance(period, str) or period not in PERIODS:
                raise CatalogError(f"{where}: unknown period {period!r}")
            prices.setdefault(period, monthly * PERIODS[period])
    if not prices:
        raise CatalogError(f"{where}: needs `price` or `prices`")
    return prices


def _tiers(raw: list[dict[str, Any]], where: str) -> tuple[Tier, ...]:
    tiers = []
    for i, t in enumerate(raw):
        fields.known_keys(t, {"up_to", "unit_price", "flat_fee"}, f"{where}.tiers[{i}]")
        up_to, fee = t.get("up_to"), t.get("flat_fee")
        here = f"{where}.tiers[{i}]"
        tiers.append(Tier(None if up_to is None else fields.amount(up_to, here),
                          fields.amount(t.get("unit_price"), f"{here}.unit_price"),
                          None if fee is None else fields.money(fee, f"{here}.flat_fee")))
    if tiers and tiers[-1].up_to is not None:
        raise CatalogError(f"{where}: the last overage tier has no `up_to`")
    bounds = [t.up_to for t in tiers[:-1]]
    if any(b is None for b in bounds) or bounds != sorted(bounds):  # type: ignore[type-var]
        raise CatalogError(f"{where}: tier bounds must increase")
    return tuple(tiers)


def _allowance(metric: str, a: dict[str, Any], where: str) -> Allowance:
    fields.known_keys(a, ALLOWANCE_KEYS, where)
    limit = a.get("limit", "hard")
    if not isinstance(limit, str) or limit not in LIMIT_KINDS:
        raise CatalogError(f"{where}: limit must be one of {LIMIT_KINDS}")
    price = a.get("overage_unit_price")
    raw_tiers = a.get("tiers", [])
    if not isinstance(raw_tiers, list):
        raise CatalogError(f"{where}: 'tiers' is a list of tables")
    tiers = _tiers(raw_tiers, where)
    if limit == "hard" and (price is not None or tiers or "charge_model" in a
                            or "package" in a or "percentage" in a or "minimum_spend" in a):
        raise CatalogError(f"{where}: a hard limit is never billed past: drop its overage price")
    model = _charge_model(a, price is not None, bool(tiers), where)
    if limit == "overage" and "charge_model" not in a and price is None and not tiers:
        raise CatalogError(f"{where}: an overage limit needs overage_unit_price or tiers")
    package = a.get("package")
    cap = a.get("daily_cap")
    on_cap = a.get("on_daily_cap", "record")
    if not isinstance(on_cap, str) or on_cap not in DAILY_CAP_ACTIONS:
        raise CatalogError(f"{where}: on_daily_cap must be one of {DAILY_CAP_ACTIONS}")
    if on_cap != "record" and cap is None:
        raise CatalogError(f"{where}: on_daily_cap needs a daily_cap")
    aggregation, unique_of = _aggregation(a, where)
    if aggregation != "sum" and (cap is not None or model == "percentage"):
        raise CatalogError(f"{where}: a daily cap and the percentage model need "
                           f"aggregation = \"sum\"")
    of, matches = _filter(metric, a, where)
    billed = _billed(a, limit, aggregation, where)
    group_by = a.get("group_by")
    if group_by is not None:
        dimension = _dimension(group_by, f"{where}.group_by")
        if aggregation != "sum" or limit != "overage" or model == "percentage":
            raise CatalogError(f"{where}: group_by prices each {dimension} apart: it needs "
                               f"limit = \"overage\", a sum, and a charge model on units")
    return Allowance(
        metric=metric,
        included=fields.amount(a.get("included", 0), f"{where}.included"),
        limit=limit,
        overage_unit_price=None if price is None else fields.amount(price, where),
        tiers=tiers,
        daily_cap=None if cap is None else fields.amount(cap, f"{where}.daily_cap"),
        charge_model="" if model in ("per_unit", "graduated") and "charge_model" not in a
        else model,
        package_size=None if package is None else fields.amount(package["size"],
                                                           f"{where}.package.size"),
        package_price=None if package is None else fields.money(package["price"],
                                                           f"{where}.package.price"),
        on_daily_cap=on_cap,
        percentage=_percentage(a, where) if model == "percentage" else (),
        minimum_spend=None if a.get("minimum_spend") is None
        else fields.money(a["minimum_spend"], f"{where}.minimum_spend"),
        aggregation=aggregation,
        unique_of=unique_of,
        of=of,
        where=matches,
        billed=billed,
        group_by=group_by or "",
    )


def _billed(a: dict[str, Any], limit: str, aggregation: str, where: str) -> str:
    billed = a.get("billed", "in_arrears")
    if not isinstance(billed, str) or billed not in BILLED:
        raise CatalogError(f"{where}: billed must be one of {BILLED}")
    if billed == "in_advance" and (limit != "overage" or aggregation in ("latest",
                                                                         "recurring")):
        raise CatalogError(f"{where}: billed = \"in_advance\" needs limit = \"overage\" and an "
                           f"amount that only grows in a cycle (not latest or recurring)")
    return billed


def _aggregation(a: dict[str, Any], where: str) -> tuple[str, str]:
    aggregation = a.get("aggregation", "sum")
    if not isinstance(aggregation, str) or aggregation not in AGGREGATIONS:
        raise CatalogError(f"{where}: aggregation must be one of {AGGREGATIONS}")
    unique_of = a.get("unique_of")
    if (aggregation == "unique") != (unique_of is not None):
        raise CatalogError(f"{where}: aggregation = \"unique\" goes with unique_of (the "
                           f"property, member or workspace whose distinct values count)")
    if unique_of is not None:
        _dimension(unique_of, f"{where}.unique_of")
    return aggregation, unique_of or ""


def _dimension(name: object, where: str) -> str:
    if not isinstance(name, str) or not PROPERTY_NAME.fullmatch(name):
        raise CatalogError(f"{where}: a property name (1-64 of A-Z a-z 0-9 _ . : -), member "
                           f"or workspace")
    return name


def _filter(metric: str, a: dict[str, Any], where: str) -> tuple[
        str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """A filtered charge: `of` names the reported metric, `where` the values of one or more
    dimensions its events must have (each a string or a list of strings)."""
    if ("of" in a) != ("where" in a):
        raise CatalogError(f"{where}: a filtered charge needs both `of` (the reported metric) "
                           f"and `where` (the property values it counts)")
    if "of" not in a:
        return "", ()
    of = a["of"]
    if not isinstance(of, str) or not of or of == metric:
        raise CatalogError(f"{where}.of: the name of another metric")
    raw = a["where"]
    if not isinstance(raw, dict) or not raw:
        raise CatalogError(f"{where}.where: a table of at least one property")
    matches = []
    for name, values in sorted(raw.items()):
        listed = [values] if isinstance(values, str) else values
        if not isinstance(listed, list) or not listed or not all(
                isinstance(v, str) and v for v in listed):
            raise CatalogError(f"{where}.where.{name}: a string or a list of strings")
        matches.append((_dimension(name, f"{where}.where.{name}"),
                        tuple(sorted(set(listed)))))
    return of, tuple(matches)


def _check_filters(allowances: dict[str, Allowance], where: str) -> None:
    """An event must reach one charge: filtered charges of the same metric must differ on a
    dimension they both filter by (the metric's own allowance takes what none matches)."""
    filtered = [a for a in allowances.values() if a.of]
    for charge in filtered:
        if allowances.get(charge.of, Allowance(charge.of, Decimal(0))).of:
            raise CatalogError(f"{where}.{charge.metric}: {charge.of!r} is itself a filtered "
                               f"charge")
    for one, other in itertools.combinations(filtered, 2):
        if one.of != other.of:
            continue
        mine, theirs = dict(one.where), dict(other.where)
        if not any(set(mine[n]).isdisjoint(theirs[n]) for n in mine.keys() & theirs.keys()):
            raise CatalogError(f"{where}: {one.metric} and {other.metric} can both match an "
                               f"event of {one.of!r}: give them different values of a "
                               f"property they both filter by")


def _percentage(a: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """A fee per usage event: rate % of the event's quantity (an amount in the plan's
    currency) plus `fixed_fee`, then raised to `per_event_min` or lowered to `per_event_max`."""
    rule = a["percentage"]
    here = f"{where}.percentage"
    fields.known_keys(rule, PERCENTAGE_KEYS, here)
    if "rate" not in rule:
        raise CatalogError(f"{here}: needs `rate` (a percentage, like \"2.9\")")
    rate = fields.amount(rule["rate"], f"{here}.rate")
    if not 0 < rate <= 100:
        raise CatalogError(f"{here}.rate: a percentage above 0 and at most 100")
    if fields.amount(a.get("included", 0), f"{where}.included") != 0:
        raise CatalogError(f"{where}: a percentage allowance includes nothing (its fee is per "
                           f"event): drop `included`")
    fees = {key: fields.money(rule[key], f"{here}.{key}")
            for key in ("fixed_fee", "per_event_min", "per_event_max") if key in rule}
    if fees.get("per_event_min", Decimal(0)) > fees.get("per_event_max", fees.get(
            "per_event_min", Decimal(0))):
        raise CatalogError(f"{here}: per_event_min is above per_event_max")
    return (("rate", str(rate)), *((key, str(value)) for key, value in fees.items()))


def _charge_model(a: dict[str, Any], priced: bool, tiered: bool, where: str) -> str:
    """The allowance's charge model, and the keys it needs and excludes. Without
    `charge_model` an allowance is per unit, or graduated when it has tiers (as before charge
    models existed; tiers then override overage_unit_price)."""
    model = a.get("charge_model")
    if model is None:
        for key in ("package", "percentage"):
            if key in a:
                raise CatalogError(f"{where}: a {key} needs charge_model = \"{key}\"")
        if any(t.get("flat_fee") is not None for t in a.get("tiers") or []):
            raise CatalogError(f"{where}: flat fees per tier need charge_model = "
                               f"\"graduated\" or \"volume\"")
        return "graduated" if tiered else "per_unit"
    if not isinstance(model, str) or model not in CHARGE_MODELS:
        raise CatalogError(f"{where}: charge_model must be one of {CHARGE_MODELS}")
    needs = {"per_unit": "overage_unit_price", "graduated": "tiers", "volume": "tiers",
             "package": "package", "percentage": "percentage"}[model]
    given = {"overage_unit_price": priced, "tiers": tiered, "package": "package" in a,
             "percentage": "percentage" in a}
    if not given[needs]:
        raise CatalogError(f"{where}: charge_model = \"{model}\" needs `{needs}`")
    extra = sorted(key for key, present in given.items() if present and key != needs)
    if extra:
        raise CatalogError(f"{where}: charge_model = \"{model}\" takes no {', '.join(extra)}")
    if model == "package":
        package = a["package"]
        fields.known_keys(package, {"size", "price"}, f"{where}.package")
        if "size" not in package or "price" not in package:
            raise CatalogError(f"{where}.package: needs `size` and `price`")
        if fields.amount(package["size"], f"{where}.package.size") <= 0:
            raise CatalogError(f"{where}.package.size: must be above 0")
    return model


PLAN_KEYS = {"name", "rank", "price", "prices", "periods", "annual_discount_percent",
             "allowances", "included_seats", "extra_seat_price", "limits", "features",
             "trial_days", "commitment_months", "auto_renew", "available", "upgrade_proration",
             "change_invoicing", "user_plans", "downgrade_usage_check", "recommended_for",
             "credit_released_seats", "countries", "available_from", "available_until",
             "progressive_billing", "minimum_commitment", "interval"}
ALLOWANCE_KEYS = {"included", "limit", "overage_unit_price", "tiers", "daily_cap",
                  "charge_model", "package", "on_daily_cap", "percentage", "minimum_spend",
                  "aggregation", "unique_of", "of", "where", "billed", "group_by"}
HEAD_KEYS = {"id", "version", "currency", "free_plan", "thresholds", "late_usage_grace_minutes"}
TOP_KEYS = {"catalog", "plans", "packs", "addons", "user_plans", "issuer", "coupons"}
PACK_KEYS = {"name", "metric", "quantity", "price", "lasts_days"}
MAX_LASTS_DAYS = 3660  # ten years
ISSUER_KEYS = {"name", "address", "country", "vat_id", "invoice_prefix", "credit_note_prefix",
               "payment_terms_days"}


def _plan(pid: str, body: dict[str, Any], currency: str) -> Plan:
    where = f"plan {pid}"
    fields.known_keys(body, PLAN_KEYS, where)
    allowances = {
        metric: _allowance(metric, a, f"{where}.{metric}")
        for metric, a in fields.table(body, "allowances", where).items()
    }
    _check_filters(allowances, where)
    seats = fields.whole(body, "included_seats", where, None)
    seat_price = body.get("extra_seat_price")
    proration = body.get("upgrade_proration", "prorate")
    if not isinstance(proration, str) or proration not in ("prorate", "full"):
        raise CatalogError(f"{where}: upgrade_proration is 'prorate' or 'full'")
    invoicing = body.get("change_invoicing", "now")
    if not isinstance(invoicing, str) or invoicing not in CHANGE_INVOICING:
        raise CatalogError(f"{where}: change_invoicing is 'now' or 'next_invoice'")
    interval = _interval(body, where)
    return Plan(
        interval=interval,
        id=pid,
        name=fields.text(body, "name", where),
        rank=fields.whole(body, "rank", where, 0) or 0,
        currency=currency,
        prices=_prices(body, where) if interval == "month"
        else {"week": fields.money(body.get("price"), f"{where}.price")},
        allowances=allowances,
        included_seats=seats,
        extra_seat_monthly_price=None if seat_price is None else fields.money(seat_price, where),
        limits={k: fields.whole(body["limits"], k, f"{where}.limits", 0) or 0
                for k in fields.table(body, "limits", where)},
        features=fields.names(body, "features", where),
        trial_days=fields.whole(body, "trial_days", where, 0) or 0,
        commitment_months=fields.whole(body, "commitment_months", where, 0) or 0,
        auto_renew=fields.flag(body, "auto_renew", where, True),
        available=fields.flag(body, "available", where, True),
        upgrade_proration=proration,
        change_invoicing=invoicing,
        user_plans=fields.flag(body, "user_plans", where, False),
        downgrade_usage_check=fields.flag(body, "downgrade_usage_check", where, True),
        credit_released_seats=_released_seats(body, where),
        progressive_billing=_progressive_billing(body, where),
        minimum_commitment=None if body.get("minimum_commitment") is None
        else fields.money(body["minimum_commitment"], f"{where}.minimum_commitment"),
        countries=_countries(body, where),
        available_from=_moment(body, "available_from", where),
        available_until=_moment(body, "available_until", where),
        recommended_for=fields.names(body, "recommended_for", where),
    )


def _interval(body: dict[str, Any], where: str) -> str:
    """A weekly plan states every amount per week and is sold per week only. What is priced
    per month elsewhere in the catalog (add-ons, user plans) and agreements counted in months
    do not go with it."""
    interval = body.get("interval", "month")
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise CatalogError(f"{where}: interval is \"month\" (the default) or \"week\"")
    if interval == "week":
        wrong = sorted(k for k in ("prices", "periods", "annual_discount_percent",
                                   "commitment_months", "user_plans") if k in body)
        if wrong:
            raise CatalogError(f"{where}: a weekly plan has one `price`, per week, and no "
                               f"{', '.join(wrong)} (periods, agreements and user plans "
                               f"are counted in months)")
        if "price" not in body:
            raise CatalogError(f"{where}: needs `price` (per week)")
    return interval


def _progressive_billing(body: dict[str, Any], where: str) -> dict[str, Any]:
    raw = body.get("progressive_billing")
    if raw is None:
        return {}
    here = f"{where}.progressive_billing"
    fields.known_keys(raw, {"thresholds", "every"}, here)
    thresholds = raw.get("thresholds")
    if not isinstance(thresholds, list) or not thresholds:
        raise CatalogError(f"{here}: thresholds is a list of amounts, like [\"100.00\"]")
    amounts = [fields.money(t, f"{here}.thresholds") for t in thresholds]
    if amounts[0] <= 0 or any(b <= a for a, b in itertools.pairwise(amounts)):
        raise CatalogError(f"{here}: thresholds above 0, each above the one before")
    every = None if raw.get("every") is None else fields.money(raw["every"], f"{here}.every")
    if every is not None and every <= 0:
        raise CatalogError(f"{here}.every: above 0")
    return {"thresholds": [str(a) for a in amounts],
            **({"every": str(every)} if every is not None else {})}


def _countries(body: dict[str, Any], where: str) -> tuple[str, ...]:
    countries = fields.names(body, "countries", where)
    wrong = [c for c in countries if not re.fullmatch(r"[A-Z]{2}", c)]
    if wrong:
        raise CatalogError(f"{where}.countries: ISO 3166 two-letter codes in capitals, not "
                           f"{', '.join(map(repr, wrong))}")
    return countries


def _moment(body: dict[str, Any], key: str, where: str) -> datetime | None:
    """A quoted RFC 3339 time with its offset ("2026-11-27T00:00:00Z")."""
    value = body.get(key)
    if value is None:
        return None
    moment = fields.moment(value, f"{where}.{key}")
    if key == "available_until" and body.get("available_from") is not None \
            and moment <= (_moment(body, "available_from", where) or moment):
        raise CatalogError(f"{where}: available_until is not after available_from")
    return moment


def _released_seats(body: dict[str, Any], where: str) -> bool:
    credit = fields.flag(body, "credit_released_seats", where, False)
    if credit and (body.get("included_seats") is None or body.get("extra_seat_price") is None):
        raise CatalogError(f"{where}: credit_released_seats needs included_seats and "
                           f"extra_seat_price (only extra seats are paid for, and credited)")
    return credit


def _pack(pid: str, body: dict[str, Any]) -> Pack:
    where = f"pack {pid}"
    fields.known_keys(body, PACK_KEYS, where)
    lasts = fields.whole(body, "lasts_days", where, None)
    if lasts is not None and not 1 <= lasts <= MAX_LASTS_DAYS:
        raise CatalogError(f"{where}.lasts_days: from 1 to {MAX_LASTS_DAYS} days")
    return Pack(pid, fields.text(body, "name", where), fields.text(body, "metric", where),
                fields.amount(body.get("quantity"), f"{where}.quantity"),
                fields.money(body.get("price"), f"{where}.price"), lasts_days=lasts)


def _addon(aid: str, body: dict[str, Any]) -> AddOn:
    where = f"add-on {aid}"
    fields.known_keys(body, {"name", "price", "features", "per_user", "solution"}, where)
    solution = body.get("solution")
    if solution is not None and (not isinstance(solution, str) or not solution):
        raise CatalogError(f"{where}: solution names a user-plan solution")
    per_user = fields.flag(body, "per_user", where, False)
    if per_user and solution is not None:
        raise CatalogError(f"{where}: per_user counts every member, solution the members of "
                           f"one solution: give one of them")
    return AddOn(aid, fields.text(body, "name", where),
                 fields.money(body.get("price"), f"{where}.price"),
                 fields.names(body, "features", where), per_user=per_user, solution=solution)


def _user_plan_level(value: object, where: str) -> tuple[Decimal, tuple[str, ...]]:
    """A level's price per user per month, as an amount or `{ price, features }`."""
    if isinstance(value, dict):
        fields.known_keys(value, {"price", "features"}, where)
        return (fields.money(value.get("price"), f"{where}.price"),
                fields.names(value, "features", where))
    return fields.money(value, where), ()
