"""The quota read model: per subscription and metric, what is included, used and remaining in the
open cycle. `apply` is a pure function of the current rows and one `billing.events` message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.subscription.measures import group_of

# A row's `limit_kind` when its subscription takes no usage at all: paused, or ended (cancelled
# at a period's end, or terminated). Entitlements then refuse with `subscription_<kind>`.
STOPPED = ("paused", "ended")


@dataclass
class QuotaRow:
    subscription_id: str
    metric: str
    account: str
    plan_id: str
    included: Decimal
    used: Decimal
    limit_kind: str
    cycle_start: datetime
    cycle_end: datetime
    packs: Decimal = Decimal(0)
    daily_cap: Decimal | None = None
    # A grouped charge's dimension: `included` is then each group's, `used` the groups' total.
    group_by: str | None = None
    # Unit credits of the metric not drawn yet and usable (they outlive the cycle): usage past
    # `included` plus `packs` draws them, into `packs`.
    credits: Decimal = Decimal(0)

    @property
    def usable(self) -> Decimal:
        return self.included + self.packs + self.credits

    @property
    def remaining(self) -> Decimal:
        return max(self.usable - self.used, Decimal(0))

    @property
    def exhausted(self) -> bool:
        if self.limit_kind in STOPPED:
            return True
        return self.limit_kind == "hard" and self.used >= self.usable

    def values(self) -> tuple[Any, ...]:
        return (self.account, self.plan_id, self.included, self.packs, self.used,
                self.limit_kind, self.cycle_start, self.cycle_end, self.daily_cap, self.group_by,
                self.credits)


@dataclass
class SubscriptionQuota:
    """Everything the quota model holds for one subscription, plus the last applied version."""

    subscription_id: str
    version: int = 0
    rows: dict[str, QuotaRow] | None = None
    # Increments from this batch, added to the per-day and per-member tables on write.
    daily: dict[tuple[str, datetime, str], Decimal] = field(default_factory=dict)
    # ^ (metric, cycle start, UTC day)
    by_member: dict[tuple[str, datetime, str], Decimal] = field(default_factory=dict)
    # ^ (metric, cycle start, member); and for grouped charges, per value of the dimension:
    by_group: dict[tuple[str, datetime, str], Decimal] = field(default_factory=dict)
    replaced: bool = False  # the set of metric rows was replaced in this batch
    # What the table holds for each metric row (as `QuotaRow.values`), so a write can skip the
    # rows a batch did not change; empty for a state not read from or written to the table.
    stored: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # The version the table's `projection_versions` row holds (0: no row), as read or last
    # written: a write moves it from this version, and is refused if another writer has.
    stored_version: int = 0
    # Unit credits not drawn yet, per metric: they outlive cycles and plans (a plan without
    # the metric keeps them for the next that has it), so they are kept beside the rows.
    credits: dict[str, Decimal] = field(default_factory=dict)
    stored_credits: dict[str, Decimal] = field(default_factory=dict)  # as the table holds
    # The account and open cycle, which the rows also carry: kept apart (`quota_unmetered`)
    # while the plan meters nothing, so that a later plan with metrics gets its rows.
    unmetered: tuple[str, datetime, datetime] | None = None
    unmetered_stored: tuple[str, datetime, datetime] | None = None  # as the table holds

    def metrics(self) -> dict[str, QuotaRow]:
        if self.rows is None:
            self.rows = {}
        return self.rows


def _rows_for(sub: str, account: str, plan_id: str, allowances: dict[str, Any],
              start: datetime, end: datetime) -> dict[str, QuotaRow]:
    return {
        metric: QuotaRow(sub, metric, account, plan_id, Decimal(a["included"]), Decimal(0),
                         a.get("limit", "hard"), start, end,
                         daily_cap=Decimal(a["daily_cap"]) if "daily_cap" in a else None,
                         group_by=a.get("group_by"))
        for metric, a in allowances.items()
    }


def apply(state: SubscriptionQuota, message: dict[str, Any]) -> bool:
    """Apply one event message; returns False (and changes nothing) for an already-applied
    version, so redelivered messages are harmless."""
    version = int(message["version"])
    if version <= state.version:
        return False
    data = message["data"]
    kind = message["type"]
    rows = state.metrics()
    if kind == "Subscribed":
        terms = data["terms"]
        account, start, end = data["account"], _time(data["cycle_start"]), _time(
            data["cycle_end"])
        state.rows = _rows_for(state.subscription_id, account, terms["plan_id"],
                               terms["allowances"], start, end)
        state.replaced = True
        state.unmetered = None if state.rows else (account, start, end)
    elif kind == "UsageRecorded":
        for metric, total in data["totals"].items():
            row = rows.get(metric)
            if row is not None:  # the state's own rows: updated in place
                row.used += Decimal(total)
        _count_items(state, data["items"])
    elif kind == "LateUsageRecorded":  # billed in its closed cycle: counted there too
        _count_items(state, data["items"], _time(data["period_start"]))
    elif kind == "PackPurchased":
        row = rows.get(data["metric"])
        if row is not None:
            rows[data["metric"]] = replace(row, packs=row.packs + Decimal(data["quantity"]))
    elif kind == "UnitsGranted":
        state.credits[data["grant"]["metric"]] = Decimal(data["balance"])
    elif kind == "UnitsDrawn":
        row = rows.get(data["metric"])
        if row is not None and not data["closing"]:
            row.packs += sum((Decimal(d["quantity"]) for d in data["drawn"]), Decimal(0))
        state.credits[data["metric"]] = Decimal(data["balance"])
    elif kind == "UnitsExpired":
        for metric, balance in data["balances"].items():
            state.credits[metric] = Decimal(balance)
    elif kind in ("Paused", "Terminated") and rows:
        stopped = "paused" if kind == "Paused" else "ended"
        state.rows = {m: replace(r, limit_kind=stopped) for m, r in rows.items()}
        state.replaced = True  # (replace keeps each row's credits)
    elif kind == "Resumed" and (base := _base(state)) is not None:
        account, start, end = base[0], _time(data["cycle_start"]), _time(data["cycle_end"])
        state.rows = _rows_for(state.subscription_id, account, data["terms"]["plan_id"],
                               data["terms"]["allowances"], start, end)
        state.replaced = True
        state.unmetered = None if state.rows else (account, start, end)
    elif kind in ("CycleRolled", "PlanUpgraded", "PlanChangedInTrial") \
            and (base := _base(state)) is not None:
        account, current_start, current_end = base
        terms = data["terms"]
        restart = kind == "CycleRolled" or data.get("restarted_cycle", False)
        start = _time(data["cycle_start"]) if "cycle_start" in data else current_start
        end = _time(data["cycle_end"]) if "cycle_end" in data else current_end
        fresh = _rows_for(state.subscription_id, account, terms["plan_id"],
                          terms["allowances"], start, end)
        if not restart:  # same cycle, new allowance: usage and packs so far still count
            fresh = {m: replace(r, used=rows[m].used, packs=rows[m].packs) if m in rows else r
                     for m, r in fresh.items()}
        else:  # a recurring level persists into the new cycle (as the aggregate's does; a
            # metric keeps its aggregation across plans and catalog versions)
            for metric, allowance in terms["allowances"].items():
                if metric in rows and allowance.get("aggregation") == "recurring":
                    fresh[metric] = replace(fresh[metric], used=rows[metric].used)
        if data.get("status") == "cancelled":  # ended with the period: no usage from here
            fresh = {m: replace(r, limit_kind="ended") for m, r in fresh.items()}
        state.rows = fresh
        state.replaced = True
        state.unmetered = None if fresh else (account, start, end)
    if state.credits:  # each row shows its metric's balance
        for metric, row in (state.rows or {}).items():
            row.credits = state.credits.get(metric, Decimal(0))
    state.version = version
    return True


def _base(state: SubscriptionQuota) -> tuple[str, datetime, datetime] | None:
    """The account and open cycle: from any row, else as kept for a plan without metrics
    (None for a subscription this model has never seen subscribe)."""
    if state.rows:
        row = next(iter(state.rows.values()))
        return row.account, row.cycle_start, row.cycle_end
    return state.unmetered



def _count_items(state: SubscriptionQuota, items: list[dict[str, Any]],
                 cycle_start: datetime | None = None) -> None:
    """Usage per UTC day, per member and per group of a cycle (the credit monitor's history,
    and a grouped charge's entitlements): the open cycle, or the closed one that late usage
    belongs to."""
    rows = state.metrics()
    for item in items:
        metric, quantity = item["metric"], Decimal(item["quantity"])
        row = rows.get(metric)
        cycle = cycle_start or (row.cycle_start if row is not None else None)
        if cycle is None:
            continue
        day = item["at"][:10] if item["at"].endswith("+00:00") else \
            _time(item["at"]).astimezone(UTC).date().isoformat()
        state.daily[(metric, cycle, day)] = state.daily.get((metric, cycle, day),
                                                            Decimal(0)) + quantity
        member = item.get("member")
        if member:
            key = (metric, cycle, member)
            state.by_member[key] = state.by_member.get(key, Decimal(0)) + quantity
        if row is not None and row.group_by is not None:  # kept across plans and versions
            key = (metric, cycle, group_of(item, row.group_by))
            state.by_group[key] = state.by_group.get(key, Decimal(0)) + quantity


def _time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def apply_all(states: dict[str, SubscriptionQuota], messages: Iterable[dict[str, Any]]) -> int:
    applied = 0
    for message in messages:
        sub = message["subscription"]
        state = states.get(sub)
        if state is None:
            state = states[sub] = SubscriptionQuota(sub)
        applied += apply(state, message)
    return applied
