"""The read models over a year, one pricing model each, as pure domain scenarios (no database,
no Kafka, no wall clock): the credit and quota monitor (projections/quota.py) and the plan
recommendations (projections/recommendations.py).

Each subscription is driven by commands (the JSON command contract), usage and the clock. After
every step its new events are turned into `billing.events` messages exactly as the relay writes
them (`to_message`: JSON, Decimals as strings, times as ISO strings) and folded, in one batch,
through `projections.quota.apply_all` and `projections.recommendations.update_inputs`
(`ReadModels`). The per-day and per-member increments of each batch are added up as the `project`
worker adds them to `usage_daily` and `usage_by_member`, and the monitor reads them as
`billing quota` does: the days from the cycle start's date on, the members of the open cycle,
and "today" = the latest day with usage.

Every time below is UTC. Expected figures are written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from domain.catalog import Catalog
from domain.commands import execute, parse_command
from domain.subscription import Subscription
from domain.usage import UsageItem
from projections.quota import QuotaRow, SubscriptionQuota, apply_all
from projections.recommendations import recommend, update_inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKSPACE_TOKENS = Catalog.from_file(EXAMPLES / "workspace_tokens.toml")
ASSISTANT_PLANS = Catalog.from_file(EXAMPLES / "assistant_plans.toml")
CRM_USER_PLANS = Catalog.from_file(EXAMPLES / "crm_user_plans.toml")
CREDIT_PLANS = Catalog.from_file(EXAMPLES / "credit_plans.toml")
GRACE = timedelta(hours=1)  # late_usage_grace_minutes = 60 in every example catalog
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------- the wire format --

def decimal_as_string(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def to_message(event: Any, position: int = 0) -> dict[str, Any]:
    """A domain event as the relay publishes it on `billing.events` (infra/codec.py), decoded
    again, so every type is what a projection sees from Kafka."""
    message = {
        "subscription": event.originator_id,
        "version": event.originator_version,
        "type": type(event).__name__,
        "type_version": getattr(type(event), "class_version", 1),
        "time": event.timestamp.isoformat(),
        "position": position,
        "data": {k: v for k, v in vars(event).items() if k not in ENVELOPE},
    }
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(message, default=decimal_as_string))
    return decoded


# -------------------------------------------------------------------- the read models --

@dataclass(frozen=True)
class Monitor:
    """One metric of the credit monitor, as `billing quota SUB` shows it."""

    plan: str
    included: Decimal
    packs: Decimal
    used: Decimal
    remaining: Decimal
    exhausted: bool
    daily_cap: Decimal | None
    cycle_start: datetime
    cycle_end: datetime
    per_day: dict[str, Decimal]
    per_member: dict[str, Decimal]


@dataclass
class ReadModels:
    """The quota model (with its per-day and per-member tables) and the recommendation inputs,
    fed with every event message in order."""

    catalog: Catalog
    quota: dict[str, SubscriptionQuota] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    daily: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    by_member: dict[tuple[str, str, datetime, str], Decimal] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, events: list[Any]) -> None:
        batch = [to_message(e, len(self.messages) + n) for n, e in enumerate(events, 1)]
        self.messages.extend(batch)
        apply_all(self.quota, batch)
        for message in batch:
            update_inputs(self.inputs.setdefault(message["subscription"], {}), message)
        for sub, state in self.quota.items():  # what quota_store.write adds to the tables
            for (metric, day), quantity in state.daily.items():
                key = (sub, metric, day)
                self.daily[key] = self.daily.get(key, Decimal(0)) + quantity
            for (metric, cycle_start, member), quantity in state.by_member.items():
                who = (sub, metric, cycle_start, member)
                self.by_member[who] = self.by_member.get(who, Decimal(0)) + quantity
            state.daily.clear()
            state.by_member.clear()

    def rows(self, sub: str) -> dict[str, QuotaRow]:
        return dict(self.quota[sub].rows or {})

    def per_day(self, sub: str, metric: str, since: datetime) -> dict[str, Decimal]:
        """usage_daily from the date of `since` on (quota_store.usage_history)."""
        first = since.date().isoformat()
        return {d: q for (s, m, d), q in sorted(self.daily.items())
                if s == sub and m == metric and d >= first}

    def monitor(self, sub: str, metric: str) -> Monitor:
        row = self.rows(sub)[metric]
        members = {who: q for (s, m, c, who), q in sorted(self.by_member.items())
                   if s == sub and m == metric and c == row.cycle_start}
        return Monitor(row.plan_id, row.included, row.packs, row.used, row.remaining,
                       row.exhausted, row.daily_cap, row.cycle_start, row.cycle_end,
                       self.per_day(sub, metric, row.cycle_start), members)

    def today(self, sub: str, metric: str) -> tuple[str | None, Decimal]:
        """The monitor's "today": the latest day with usage in the open cycle's history."""
        days = self.per_day(sub, metric, self.rows(sub)[metric].cycle_start)
        latest = max(days, default=None)
        return latest, days.get(latest, Decimal(0)) if latest else Decimal(0)

    def recommendation(self, sub: str) -> dict[str, Any]:
        return recommend(self.inputs[sub], self.catalog)


# ---------------------------------------------------------------------------- journey --

class Journey:
    """One subscription driven by commands, usage and the clock; the read models take the new
    events after every step."""

    def __init__(self, catalog: Catalog, sub_id: str, plan: str, at: datetime,
                 **fields: Any) -> None:
        self.catalog = catalog
        self.id = sub_id
        self.count = 0
        self.models = ReadModels(catalog)
        created, _ = execute(None, self._parse("subscribe", at, plan=plan, **fields), catalog)
        self.sub: Subscription = created
        self._feed()

    def _parse(self, kind: str, at: datetime, **fields: Any) -> Any:
        self.count += 1
        return parse_command({"id": f"cmd-{self.count}", "type": kind, "subscription": self.id,
                              "at": at.isoformat(), **fields})

    def _feed(self) -> list[Any]:
        events = self.sub.collect_events()
        self.models.feed(events)
        return events

    def command(self, at: datetime, kind: str, **fields: Any) -> str:
        _, outcome = execute(self.sub, self._parse(kind, at, **fields), self.catalog)
        self._feed()
        return outcome.result

    def use(self, at: datetime, metric: str, quantity: int | str, member: str | None = None,
            received: datetime | None = None) -> list[str]:
        """What the ingestion does: the clock first (to when the usage arrives), then the
        usage; returns the types of the events it caused."""
        self.count += 1
        self.sub.advance_to(received or at, self.catalog)
        self.sub.record_usage([UsageItem(f"u-{self.count}", self.id, metric, Decimal(quantity),
                                         at, member=member)])
        return [type(e).__name__ for e in self._feed()]

    def advance(self, to: datetime) -> list[str]:
        self.sub.advance_to(to, self.catalog)
        return [type(e).__name__ for e in self._feed()]

    def monitor(self, metric: str) -> Monitor:
        return self.models.monitor(self.id, metric)

    def today(self, metric: str) -> tuple[str | None, Decimal]:
        return self.models.today(self.id, metric)

    def recommendation(self) -> dict[str, Any]:
        return self.models.recommendation(self.id)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.models.inputs[self.id]


def what_if(*costs: tuple[str, str, bool]) -> list[dict[str, Any]]:
    return [{"plan": plan, "cost": cost, "fits": fits} for plan, cost, fits in costs]


def d(value: int | str) -> Decimal:
    return Decimal(value)
