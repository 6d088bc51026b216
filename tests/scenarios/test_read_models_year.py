"""The read models over a year, one pricing model each, as pure domain scenarios (no database,
no Kafka, no wall clock): the credit and quota monitor (projections/quota/model.py) and the plan
recommendations (projections/recommendations/store.py).

Each subscription is driven by commands (the JSON command contract), usage and the clock. After
every step its new events are turned into `billing.events` messages exactly as the relay writes
them (`to_message`: JSON, Decimals as strings, times as ISO strings) and folded, in one batch,
through `projections.quota.model.apply_all` and `projections.recommendations.store.update_inputs`
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

from domain.catalog.model import Catalog
from domain.contracts.commands import execute, parse_command
from domain.contracts.usage import UsageItem
from domain.subscription.aggregate import Subscription
from projections.quota.model import QuotaRow, SubscriptionQuota, apply_all
from projections.recommendations.model import recommend, update_inputs

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
    """A domain event as the relay publishes it on `billing.events` (consumers/wire.py), decoded
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
    daily: dict[tuple[str, str, datetime, str], Decimal] = field(default_factory=dict)
    by_member: dict[tuple[str, str, datetime, str], Decimal] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, events: list[Any]) -> None:
        self.fold([to_message(e, len(self.messages) + n) for n, e in enumerate(events, 1)])

    def fold(self, batch: list[dict[str, Any]]) -> int:
        """One batch of the `project` worker; returns how many messages the quota applied."""
        self.messages.extend(batch)
        applied = apply_all(self.quota, batch)
        for message in batch:
            update_inputs(self.inputs.setdefault(message["subscription"], {}), message)
        for sub, state in self.quota.items():  # what quota_store.write adds to the tables
            for (metric, cycle_start, day), quantity in state.daily.items():
                key = (sub, metric, cycle_start, day)
                self.daily[key] = self.daily.get(key, Decimal(0)) + quantity
            for (metric, cycle_start, member), quantity in state.by_member.items():
                who = (sub, metric, cycle_start, member)
                self.by_member[who] = self.by_member.get(who, Decimal(0)) + quantity
            state.daily.clear()
            state.by_member.clear()
        return applied

    def rows(self, sub: str) -> dict[str, QuotaRow]:
        return dict(self.quota[sub].rows or {})

    def per_day(self, sub: str, metric: str, since: datetime) -> dict[str, Decimal]:
        """usage_daily of the cycle starting at `since` (quota_store.usage_history)."""
        return {d: q for (s, m, c, d), q in sorted(self.daily.items())
                if s == sub and m == metric and c == since}

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
        self.history: list[Any] = []  # every domain event, in order
        created, _ = execute(None, self._parse("subscribe", at, plan=plan, **fields), catalog)
        self.sub: Subscription = created
        self._feed()

    def _parse(self, kind: str, at: datetime, **fields: Any) -> Any:
        self.count += 1
        return parse_command({"id": f"cmd-{self.count}", "type": kind, "subscription": self.id,
                              "at": at.isoformat(), **fields})

    def _feed(self) -> list[Any]:
        events = list(self.sub.collect_events())
        self.history.extend(events)
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


# ------------------------------------------------------------------- the wire, checked --

def test_to_message_is_what_the_relay_publishes() -> None:
    """The relay's own encoding (consumers/wire.py) of the same events, stored by an in-memory
    application, decodes to exactly what `to_message` gives."""
    from consumers.wire import decode, encode, event_message
    from domain.app.billing_app import BillingApplication

    app = BillingApplication(WORKSPACE_TOKENS, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    j = Journey(WORKSPACE_TOKENS, "ws-wire", "single", WS_CYCLES[0])
    j.command(utc(2026, 1, 15, 10), "add_member", member="alice")
    j.use(utc(2026, 1, 20, 10), "tokens", "2.5", "alice")
    j.command(utc(2026, 1, 21, 10), "buy_pack", pack="tokens_500k")
    j.advance(WS_CYCLES[1] + GRACE)
    ours = j.models.messages
    app.save(*j.history)
    notifications = app.recorder.select_notifications(start=1, limit=100)
    relayed = [decode(encode(event_message(app, n))) for n in notifications]
    assert relayed == ours
    assert [m["type"] for m in ours] == ["Subscribed", "MemberAdded", "UsageRecorded",
                                        "PackPurchased", "CycleRolled", "UsagePeriodClosed"]
    usage = ours[2]
    assert usage["time"] == "2026-01-20T10:00:00+00:00"
    assert usage["data"] == {"items": [{"id": "u-3", "metric": "tokens", "quantity": "2.5",
                                        "at": "2026-01-20T10:00:00+00:00", "member": "alice"}],
                             "totals": {"tokens": "2.5"}}


# ------------------------------------------------- model 1: workspace tokens (NOK) --

WS_CYCLES = [utc(2026, month, 15, 9) for month in range(1, 13)] + \
    [utc(2027, 1, 15, 9), utc(2027, 2, 15, 9)]  # cycle n is [WS_CYCLES[n], WS_CYCLES[n + 1])
MILLION = d(1_000_000)


def test_workspace_tokens_monitor_packs_members_and_recommendation_over_a_year() -> None:
    j = Journey(WORKSPACE_TOKENS, "ws-fjord", "single", WS_CYCLES[0])
    for member in ("alice", "bob", "carol"):
        j.command(utc(2026, 1, 15, 9, 5), "add_member", member=member)
    assert j.monitor("tokens") == Monitor("single", MILLION, d(0), d(0), MILLION, False, None,
                                          WS_CYCLES[0], WS_CYCLES[1], {}, {})

    # Cycle 0: three members use tokens on three days.
    j.use(utc(2026, 1, 16, 10), "tokens", 300_000, "alice")
    j.use(utc(2026, 1, 16, 15), "tokens", 200_000, "bob")
    j.use(utc(2026, 1, 20, 10), "tokens", 100_000, "alice")
    assert j.use(utc(2026, 1, 25, 10), "tokens", 250_000, "carol") == \
        ["UsageRecorded", "QuotaThresholdCrossed"]  # 80 %
    assert j.monitor("tokens") == Monitor(
        "single", MILLION, d(0), d(850_000), d(150_000), False, None, WS_CYCLES[0], WS_CYCLES[1],
        {"2026-01-16": d(500_000), "2026-01-20": d(100_000), "2026-01-25": d(250_000)},
        {"alice": d(400_000), "bob": d(200_000), "carol": d(250_000)})
    # Past the pool (a hard limit): recorded, remaining 0, exhausted.
    j.use(utc(2026, 2, 1, 10), "tokens", 200_000, "bob")
    exhausted = j.monitor("tokens")
    assert (exhausted.used, exhausted.remaining, exhausted.exhausted) == \
        (d(1_050_000), d(0), True)
    assert exhausted.per_member == {"alice": d(400_000), "bob": d(400_000), "carol": d(250_000)}
    # A pack raises the usable amount at once: 1,500,000, of which 450,000 are left.
    j.command(utc(2026, 2, 2, 10), "buy_pack", pack="tokens_500k")
    topped_up = j.monitor("tokens")
    assert (topped_up.included, topped_up.packs, topped_up.used, topped_up.remaining,
            topped_up.exhausted) == (MILLION, d(500_000), d(1_050_000), d(450_000), False)
    assert j.today("tokens") == ("2026-02-01", d(200_000))

    # The roll: no rollover, the pack is gone, the history of the new cycle is empty.
    assert j.advance(WS_CYCLES[1]) == ["CycleRolled"]
    assert j.monitor("tokens") == Monitor("single", MILLION, d(0), d(0), MILLION, False, None,
                                          WS_CYCLES[1], WS_CYCLES[2], {}, {})
    assert j.today("tokens") == (None, d(0))
    assert j.advance(WS_CYCLES[1] + GRACE) == ["UsagePeriodClosed"]
    assert j.inputs["cycles"] == [{"start": "2026-01-15T09:00:00+00:00",
                                   "end": "2026-02-15T09:00:00+00:00",
                                   "usage": {"tokens": "1050000"}, "plan": "single"}]
    assert j.recommendation()["what_if"] == what_if(("single", "490.00", False),
                                                    ("multi", "990.00", False))

    # Cycle 1: an ordinary month.
    j.use(utc(2026, 2, 20, 10), "tokens", 200_000, "alice")
    j.use(utc(2026, 3, 1, 10), "tokens", 150_000, "bob")
    j.advance(WS_CYCLES[2] + GRACE)

    # Cycle 2 [Mar 15, Apr 15): a pack, then the upgrade to Multi (prorated, same cycle):
    # the pack and the usage so far still count; the pool is 1,000,000 on both plans.
    j.command(utc(2026, 3, 20, 10), "buy_pack", pack="tokens_500k")
    j.use(utc(2026, 3, 25, 10), "tokens", 700_000, "alice")
    assert j.command(utc(2026, 4, 1, 9), "change_plan", plan="multi") == "upgraded"
    assert j.monitor("tokens") == Monitor(
        "multi", MILLION, d(500_000), d(700_000), d(800_000), False, None, WS_CYCLES[2],
        WS_CYCLES[3], {"2026-03-25": d(700_000)}, {"alice": d(700_000)})
    j.command(utc(2026, 4, 2, 9), "add_member", member="dave")
    j.use(utc(2026, 4, 3, 10), "tokens", 100_000, "dave")
    assert j.monitor("tokens").per_member == {"alice": d(700_000), "dave": d(100_000)}
    j.advance(WS_CYCLES[3])
    assert j.monitor("tokens") == Monitor("multi", MILLION, d(0), d(0), MILLION, False, None,
                                          WS_CYCLES[3], WS_CYCLES[4], {}, {})

    # Cycles 3-5 on Multi use at most 40 % of the pool: Single would do, 500.00 cheaper.
    for n, (alice, dave) in zip((3, 4, 5), ((200_000, 100_000), (250_000, 100_000),
                                            (300_000, 100_000)), strict=True):
        j.use(WS_CYCLES[n] + timedelta(days=3), "tokens", alice, "alice")
        j.use(WS_CYCLES[n] + timedelta(days=4), "tokens", dave, "dave")
        j.advance(WS_CYCLES[n + 1] + GRACE)
    assert j.recommendation() == {
        "current_plan": "multi", "recommended_plan": "single", "kind": "savings",
        "reason": ("you used at most 40 % of your allowances in the last 3 months; "
                   "Single project would have saved 500.00 NOK last month"),
        "what_if": what_if(("single", "490.00", True), ("multi", "990.00", True))}

    # Cycles 6-11: 900,000 a month. Near the pool, but no bigger plan and no savings.
    for n in range(6, 12):
        j.use(WS_CYCLES[n] + timedelta(days=5), "tokens", 500_000, "alice")
        j.use(WS_CYCLES[n] + timedelta(days=6), "tokens", 400_000, "bob")
        j.advance(WS_CYCLES[n + 1] + GRACE)
        assert j.recommendation()["kind"] == "keep", n
    assert j.recommendation()["reason"] == "your usage fits your current plan"

    # Cycle 12 [2027-01-15, 2027-02-15): the monitor of the open cycle, to the day and member.
    j.use(utc(2027, 1, 16, 8), "tokens", 120_000, "carol")
    j.use(utc(2027, 1, 16, 20), "tokens", "30000.5", "dave")
    j.use(utc(2027, 2, 3, 12), "tokens", 600_000, "carol")
    j.command(utc(2027, 2, 4, 9), "buy_pack", pack="tokens_500k")
    j.use(utc(2027, 2, 14, 23), "tokens", 400_000, "alice")
    assert j.monitor("tokens") == Monitor(
        "multi", MILLION, d(500_000), d("1150000.5"), d("349999.5"), False, None, WS_CYCLES[12],
        WS_CYCLES[13],
        {"2027-01-16": d("150000.5"), "2027-02-03": d(600_000), "2027-02-14": d(400_000)},
        {"alice": d(400_000), "carol": d(720_000), "dave": d("30000.5")})
    assert j.today("tokens") == ("2027-02-14", d(400_000))
    j.advance(WS_CYCLES[13] + GRACE)
    assert j.monitor("tokens") == Monitor("multi", MILLION, d(0), d(0), MILLION, False, None,
                                          WS_CYCLES[13], utc(2027, 3, 15, 9), {}, {})
    # 13 closed cycles, the last 12 kept: cycle 1 to cycle 12.
    assert [c["start"] for c in j.inputs["cycles"]] == [c.isoformat() for c in WS_CYCLES[1:13]]
    assert j.inputs["cycles"][-1]["usage"] == {"tokens": "1150000.5"}
    # Redelivered messages change nothing; a rebuild from the first message gives the same.
    models = j.models
    assert apply_all(models.quota, models.messages) == 0
    assert models.quota["ws-fjord"].daily == {} and models.quota["ws-fjord"].by_member == {}
    rebuilt = ReadModels(WORKSPACE_TOKENS)
    assert rebuilt.fold(list(models.messages)) == len(models.messages)
    assert (rebuilt.quota, rebuilt.daily, rebuilt.by_member, rebuilt.inputs) == \
        (models.quota, models.daily, models.by_member, models.inputs)


# ------------------------------------------------- model 2: assistant plans (EUR) --

AS_CYCLES = [utc(2026, month, 10, 12) for month in range(1, 13)] + \
    [utc(2027, 1, 10, 12), utc(2027, 2, 10, 12)]  # cycle n is [AS_CYCLES[n], AS_CYCLES[n + 1])
CONVERSATIONS = {0: 30_000, 1: 46_000, 2: 47_500, 3: 40_000, 4: 61_250,  # on Basic
                 6: 30_000, 7: 35_000, 8: 41_000, 9: 112_500, 10: 90_000, 11: 95_000}  # Scale
KEEP = "your usage fits your current plan"


def test_assistant_plans_near_the_limit_upgrade_then_savings_over_a_year() -> None:
    j = Journey(ASSISTANT_PLANS, "as-near", "basic", AS_CYCLES[0])
    fifty_k = d(50_000)
    assert j.monitor("conversations") == Monitor("basic", fifty_k, d(0), d(0), fifty_k, False,
                                                 None, AS_CYCLES[0], AS_CYCLES[1], {}, {})
    for n in range(4):
        j.use(AS_CYCLES[n] + timedelta(days=10), "conversations", CONVERSATIONS[n])
        j.advance(AS_CYCLES[n + 1] + GRACE)
    # 92 % and 95 % of the allowance in two of the last four months: not yet.
    assert j.recommendation() == {
        "current_plan": "basic", "recommended_plan": "basic", "kind": "keep", "reason": KEEP,
        "what_if": what_if(("basic", "190.00", True), ("scale", "490.00", True),
                           ("enterprise", "1890.00", False))}

    # Cycle 4: past the allowance, on two days. An overage metric is never exhausted.
    j.use(utc(2026, 5, 15, 9), "conversations", 45_000)
    j.use(utc(2026, 6, 1, 18), "conversations", 16_250)
    assert j.monitor("conversations") == Monitor(
        "basic", fifty_k, d(0), d(61_250), d(0), False, None, AS_CYCLES[4], AS_CYCLES[5],
        {"2026-05-15": d(45_000), "2026-06-01": d(16_250)}, {})
    assert j.today("conversations") == ("2026-06-01", d(16_250))
    j.advance(AS_CYCLES[5] + GRACE)
    # 92 %, 95 % and 122.5 % in 3 of the last 4 months. What-if for 61,250 conversations:
    # Basic 190.00 + 10,000 x 0.004 + 1,250 x 0.003 = 233.75; Scale and Enterprise their price.
    assert j.recommendation() == {
        "current_plan": "basic", "recommended_plan": "scale", "kind": "near_limit",
        "reason": "you used 92 % or more of your conversations in 3 of the last 4 months",
        "what_if": what_if(("basic", "233.75", False), ("scale", "490.00", True),
                           ("enterprise", "1890.00", False))}

    # Cycle 5 [Jun 10 12:00, Jul 10 12:00) = 720 h; upgrade at Jun 25 12:00 with 360 h left:
    # the cycle allows 50,000 x 1/2 + 100,000 x 1/2 = 75,000; the usage so far still counts.
    j.use(utc(2026, 6, 15, 12), "conversations", 40_000)
    assert j.command(utc(2026, 6, 25, 12), "change_plan", plan="scale") == "upgraded"
    assert j.monitor("conversations") == Monitor(
        "scale", d(75_000), d(0), d(40_000), d(35_000), False, None, AS_CYCLES[5], AS_CYCLES[6],
        {"2026-06-15": d(40_000)}, {})
    j.use(utc(2026, 7, 1, 12), "conversations", 30_000)
    j.advance(AS_CYCLES[6])
    assert j.monitor("conversations") == Monitor(
        "scale", d(100_000), d(0), d(0), d(100_000), False, None, AS_CYCLES[6], AS_CYCLES[7], {},
        {})
    j.advance(AS_CYCLES[6] + GRACE)
    assert j.inputs["cycles"][-1] == {"start": "2026-06-10T12:00:00+00:00",
                                      "end": "2026-07-10T12:00:00+00:00",
                                      "usage": {"conversations": "70000"}, "plan": "scale"}
    assert j.recommendation()["kind"] == "keep"  # 61,250 last in the 3 months: Basic no fit

    # Cycles 6-8 on Scale: at most 41 % of 100,000, each within Basic's 50,000.
    for n in (6, 7, 8):
        j.use(AS_CYCLES[n] + timedelta(days=10), "conversations", CONVERSATIONS[n])
        j.advance(AS_CYCLES[n + 1] + GRACE)
    assert j.recommendation() == {
        "current_plan": "scale", "recommended_plan": "basic", "kind": "savings",
        "reason": ("you used at most 41 % of your allowances in the last 3 months; "
                   "Basic would have saved 300.00 EUR last month"),
        "what_if": what_if(("basic", "190.00", True), ("scale", "490.00", True),
                           ("enterprise", "1890.00", False))}

    # Cycle 9: 112,500 conversations. Basic: 190.00 + 10,000 x 0.004 + 52,500 x 0.003 =
    # 387.50; Scale: 490.00 + 10,000 x 0.003 + 2,500 x 0.002 = 525.00.
    j.use(AS_CYCLES[9] + timedelta(days=10), "conversations", CONVERSATIONS[9])
    j.advance(AS_CYCLES[10] + GRACE)
    assert j.recommendation() == {
        "current_plan": "scale", "recommended_plan": "scale", "kind": "keep", "reason": KEEP,
        "what_if": what_if(("basic", "387.50", False), ("scale", "525.00", False),
                           ("enterprise", "1890.00", False))}
    for n in (10, 11):
        j.use(AS_CYCLES[n] + timedelta(days=10), "conversations", CONVERSATIONS[n])
        j.advance(AS_CYCLES[n + 1] + GRACE)
    assert len(j.inputs["cycles"]) == 12
    assert [c["usage"]["conversations"] for c in j.inputs["cycles"][-4:]] == \
        ["41000", "112500", "90000", "95000"]

    # Cycle 12, the open one.
    j.use(utc(2027, 1, 11, 8), "conversations", 25_000)
    j.use(utc(2027, 2, 9, 23), "conversations", 35_000)
    assert j.monitor("conversations") == Monitor(
        "scale", d(100_000), d(0), d(60_000), d(40_000), False, None, AS_CYCLES[12],
        AS_CYCLES[13], {"2027-01-11": d(25_000), "2027-02-09": d(35_000)}, {})


def test_assistant_trial_usage_is_projected_to_30_days() -> None:
    trial_start, trial_end = utc(2026, 1, 5, 10), utc(2026, 1, 19, 10)  # Basic: 14 days
    j = Journey(ASSISTANT_PLANS, "as-trial", "basic", trial_start, trial=True)
    j.use(utc(2026, 1, 8, 10), "conversations", 12_000)
    j.use(utc(2026, 1, 15, 10), "conversations", 16_000)
    assert j.monitor("conversations") == Monitor(
        "basic", d(50_000), d(0), d(28_000), d(22_000), False, None, trial_start, trial_end,
        {"2026-01-08": d(12_000), "2026-01-15": d(16_000)}, {})
    assert j.recommendation()["kind"] == "keep"  # the trial's usage is not final yet
    assert j.advance(trial_end) == ["CycleRolled"]
    assert j.monitor("conversations") == Monitor(
        "basic", d(50_000), d(0), d(0), d(50_000), False, None, trial_end, utc(2026, 2, 19, 10),
        {}, {})
    assert j.recommendation()["kind"] == "keep"  # still open for late usage
    assert j.advance(trial_end + GRACE) == ["UsagePeriodClosed"]
    # 28,000 in 14 days -> 60,000 in 30: more than Basic's 50,000, within Scale's 100,000.
    assert j.recommendation() == {
        "current_plan": "basic", "recommended_plan": "scale", "kind": "trial_usage",
        "reason": "your trial usage projects to 60000 conversations a month, which fits Scale",
        "what_if": []}
    assert "cycles" not in j.inputs  # the trial is no paid cycle
    # Once a paid cycle has closed, its usage decides, not the trial's.
    j.use(utc(2026, 2, 1, 10), "conversations", 20_000)
    j.advance(utc(2026, 2, 19, 11))
    assert j.recommendation() == {
        "current_plan": "basic", "recommended_plan": "basic", "kind": "keep", "reason": KEEP,
        "what_if": what_if(("basic", "190.00", True), ("scale", "490.00", True),
                           ("enterprise", "1890.00", False))}


def test_assistant_ecommerce_template_recommends_the_plan_made_for_it() -> None:
    start = utc(2026, 3, 3, 9)
    j = Journey(ASSISTANT_PLANS, "as-shop", "basic", start)
    assert j.recommendation()["kind"] == "keep"
    assert j.command(utc(2026, 3, 3, 9, 30), "update_profile", template="ecommerce") == "applied"
    assert ASSISTANT_PLANS.plans["scale"].recommended_for == ("ecommerce",)
    assert j.recommendation() == {
        "current_plan": "basic", "recommended_plan": "scale", "kind": "template",
        "reason": "you chose the ecommerce template", "what_if": []}
    # An integration no plan is made for changes nothing.
    j.command(utc(2026, 3, 4, 9), "update_profile", template="support", integrations=["zendesk"])
    assert (j.inputs["template"], j.inputs["integrations"]) == ("support", ["zendesk"])
    assert j.recommendation()["kind"] == "keep"
    j.command(utc(2026, 3, 5, 9), "update_profile", template="ecommerce")
    j.use(utc(2026, 3, 20, 9), "conversations", 10_000)
    # With a closed cycle, the history decides: 20 % of Basic fits.
    j.advance(utc(2026, 4, 3, 10))
    assert j.recommendation()["kind"] == "keep"


# ------------------------------------------------- model 3: CRM user plans (NOK) --

def test_crm_user_plans_have_no_quota_and_keep_their_plan_over_fifteen_months() -> None:
    """The CRM plan meters nothing: the monitor has no rows, every closed cycle has empty
    usage, and the recommendation keeps the plan. The what-if is the plan price plus overage
    (docs/read-models.md): user plans and add-ons are not part of it, so CRM costs 0."""
    months = [utc(2026, month, 5, 8) for month in range(1, 13)] + \
        [utc(2027, month, 5, 8) for month in range(1, 4)]
    j = Journey(CRM_USER_PLANS, "crm-oslo", "crm", months[0])
    j.command(months[0], "assign_user_plan", member="alice", solution="sales", level="premium")
    j.command(utc(2026, 1, 5, 8, 10), "update_profile", integrations=["outlook"])
    assert j.models.rows("crm-oslo") == {}
    assert j.recommendation() == {"current_plan": "crm", "recommended_plan": "crm",
                                  "kind": "keep", "reason": KEEP, "what_if": []}
    for n, start in enumerate(months[1:], 1):
        if n == 4:
            j.command(utc(2026, 4, 20, 8), "assign_user_plan", member="bob",
                      solution="service", level="essential")
        j.advance(start + GRACE)
        assert j.models.rows("crm-oslo") == {}, n
    # 14 closed months, the last 12 kept, none with usage.
    assert [c["start"] for c in j.inputs["cycles"]] == [m.isoformat() for m in months[2:14]]
    assert all(c["usage"] == {} for c in j.inputs["cycles"])
    result = j.recommendation()
    assert (result["recommended_plan"], result["kind"], result["reason"]) == ("crm", "keep", KEEP)
    assert [(w["plan"], Decimal(w["cost"]), w["fits"]) for w in result["what_if"]] == \
        [("crm", d(0), True)]
    # Quarterly from the next cycle: the inputs follow the roll.
    j.command(utc(2027, 3, 10, 8), "change_billing_period", period="quarter")
    assert j.inputs["period"] == "month"
    j.advance(utc(2027, 4, 5, 9))
    assert (j.inputs["plan"], j.inputs["period"]) == ("crm", "quarter")
    assert j.inputs["cycles"][-1]["end"] == "2027-04-05T08:00:00+00:00"
    assert j.models.rows("crm-oslo") == {}


# ----------------------------------------------------- model 4: credit plans (USD) --

def costs(result: dict[str, Any]) -> list[tuple[str, Decimal, bool]]:
    """The what-if as numbers (the Free plan's cost reads "0": see the xfail below)."""
    return [(w["plan"], Decimal(w["cost"]), w["fits"]) for w in result["what_if"]]


def credit_costs(free_fits: bool) -> list[tuple[str, Decimal, bool]]:
    """Hard limits only: every plan costs its price, whatever the usage."""
    return [("free", d(0), free_fits), ("pro_100", d("25.00"), True),
            ("pro_200", d("50.00"), True), ("pro_400", d("100.00"), True)]


def test_credit_plans_daily_cap_upgrades_and_recommendations_over_a_year() -> None:
    j = Journey(CREDIT_PLANS, "cr-austin", "free", utc(2026, 1, 1))
    for member in ("ann", "ben"):
        j.command(utc(2026, 1, 1, 0, 5), "add_member", member=member)
    thirty, five = d(30), d(5)
    assert j.monitor("credits") == Monitor("free", thirty, d(0), d(0), thirty, False, five,
                                           utc(2026, 1, 1), utc(2026, 2, 1), {}, {})
    # January on Free: 5 credits a day at most, 30 a month.
    j.use(utc(2026, 1, 3, 10), "credits", 3, "ann")
    assert j.use(utc(2026, 1, 3, 15), "credits", 2, "ben") == ["UsageRecorded",
                                                               "DailyCapReached"]
    assert j.monitor("credits") == Monitor(
        "free", thirty, d(0), five, d(25), False, five, utc(2026, 1, 1), utc(2026, 2, 1),
        {"2026-01-03": five}, {"ann": d(3), "ben": d(2)})
    assert j.today("credits") == ("2026-01-03", five)  # today: 5 of the daily cap of 5
    j.use(utc(2026, 1, 3, 16), "credits", 1, "ann")  # past the cap: recorded all the same
    assert j.today("credits") == ("2026-01-03", d(6))
    for day in (4, 5, 6, 7):
        j.use(utc(2026, 1, day, 9), "credits", 5, "ann")
    j.use(utc(2026, 1, 8, 9), "credits", 4, "ben")
    assert j.monitor("credits") == Monitor(
        "free", thirty, d(0), thirty, d(0), True, five, utc(2026, 1, 1), utc(2026, 2, 1),
        {"2026-01-03": d(6), "2026-01-04": five, "2026-01-05": five, "2026-01-06": five,
         "2026-01-07": five, "2026-01-08": d(4)},
        {"ann": d(24), "ben": d(6)})
    assert j.today("credits") == ("2026-01-08", d(4))
    j.advance(utc(2026, 2, 1))
    assert j.monitor("credits") == Monitor("free", thirty, d(0), d(0), thirty, False, five,
                                           utc(2026, 2, 1), utc(2026, 3, 1), {}, {})
    j.use(utc(2026, 2, 5, 9), "credits", 4, "ann")

    # Professional 100 from Feb 10 15:00: full price, a new cycle at once, no daily cap.
    assert j.command(utc(2026, 2, 10, 15), "change_plan", plan="pro_100") == "upgraded"
    hundred = d(100)
    assert j.monitor("credits") == Monitor("pro_100", hundred, d(0), d(0), hundred, False, None,
                                           utc(2026, 2, 10, 15), utc(2026, 3, 10, 15), {}, {})
    pro_100 = [utc(2026, month, 10, 15) for month in range(2, 8)]
    for n, (ann, ben) in enumerate(((60, 32), (90, 5), (30, 30), (50, 43))):
        j.use(pro_100[n] + timedelta(days=2), "credits", ann, "ann")
        j.use(pro_100[n] + timedelta(days=3), "credits", ben, "ben")
        if n == 3:
            assert j.monitor("credits") == Monitor(
                "pro_100", hundred, d(0), d(93), d(7), False, None, pro_100[3], pro_100[4],
                {"2026-05-12": d(50), "2026-05-13": d(43)}, {"ann": d(50), "ben": d(43)})
        j.advance(pro_100[n + 1] + GRACE)
    # 92, 95, 60, 93 credits of 100 in the last 4 cycles.
    result = j.recommendation()
    assert (result["current_plan"], result["recommended_plan"], result["kind"]) == \
        ("pro_100", "pro_200", "near_limit")
    assert result["reason"] == "you used 92 % or more of your credits in 3 of the last 4 months"
    assert costs(result) == credit_costs(free_fits=False)  # enterprise: not for sale

    # Professional 200 from Jun 20 10:00: again a new cycle with fresh credits.
    j.use(utc(2026, 6, 12, 9), "credits", 20, "ann")
    assert j.command(utc(2026, 6, 20, 10), "change_plan", plan="pro_200") == "upgraded"
    two_hundred = d(200)
    pro_200 = [utc(2026, month, 20, 10) for month in range(6, 13)]
    assert j.monitor("credits") == Monitor("pro_200", two_hundred, d(0), d(0), two_hundred,
                                           False, None, pro_200[0], pro_200[1], {}, {})
    for n, used in enumerate((60, 70, 80)):
        j.use(pro_200[n] + timedelta(days=5), "credits", used, "ben")
        j.advance(pro_200[n + 1] + GRACE)
    result = j.recommendation()
    assert {k: result[k] for k in ("recommended_plan", "kind", "reason")} == {
        "recommended_plan": "pro_100", "kind": "savings",
        "reason": ("you used at most 40 % of your allowances in the last 3 months; "
                   "Professional 100 would have saved 25.00 USD last month")}
    assert costs(result) == credit_costs(free_fits=False)
    for n, used in ((3, 150), (4, 190)):
        j.use(pro_200[n] + timedelta(days=5), "credits", used, "ann")
        j.advance(pro_200[n + 1] + GRACE)
    assert j.recommendation()["kind"] == "keep"

    # Cancelled: Professional 200 to the end of the paid period, then Free, daily cap again.
    assert j.command(utc(2026, 12, 1, 9), "cancel") == "applied"
    j.use(utc(2026, 12, 2, 9), "credits", 100, "ann")
    j.advance(pro_200[6])
    free_again = utc(2027, 1, 20, 10)
    assert j.monitor("credits") == Monitor("free", thirty, d(0), d(0), thirty, False, five,
                                           pro_200[6], free_again, {}, {})
    assert j.use(utc(2026, 12, 21, 9), "credits", 5, "ben") == ["UsagePeriodClosed",
                                                                "UsageRecorded",
                                                                "DailyCapReached"]
    assert j.monitor("credits") == Monitor("free", thirty, d(0), five, d(25), False, five,
                                           pro_200[6], free_again, {"2026-12-21": five},
                                           {"ben": five})
    assert j.today("credits") == ("2026-12-21", five)
    j.advance(free_again + GRACE)
    assert j.monitor("credits") == Monitor("free", thirty, d(0), d(0), thirty, False, five,
                                           free_again, utc(2027, 2, 20, 10), {}, {})
    # Judged against Free's 30 credits: 150, 190 and 100 credits are 333 % or more.
    result = j.recommendation()
    assert (result["recommended_plan"], result["kind"], result["reason"]) == (
        "pro_100", "near_limit", "you used 333 % or more of your credits in 3 of the last 4 months")
    assert costs(result) == credit_costs(free_fits=True)
    assert [c["usage"]["credits"] for c in j.inputs["cycles"][-4:]] == ["150", "190", "100", "5"]


# ----------------------------------------------------------------------- known defects --

def test_the_roll_day_shows_only_the_new_cycles_usage_against_the_daily_cap() -> None:
    roll = utc(2026, 12, 20, 10)
    j = Journey(CREDIT_PLANS, "cr-roll-day", "pro_200", utc(2026, 11, 20, 10))
    j.command(utc(2026, 11, 20, 11), "add_member", member="ann")
    j.command(utc(2026, 12, 1, 9), "cancel")
    j.use(utc(2026, 12, 20, 8), "credits", 40, "ann")  # Professional 200, before the roll
    assert j.advance(roll) == ["CycleRolled"]  # to Free
    j.use(utc(2026, 12, 20, 11), "credits", 3, "ann")
    assert j.use(utc(2026, 12, 20, 12), "credits", 2, "ann") == ["UsageRecorded",
                                                                 "DailyCapReached"]
    assert j.sub.daily_used == {"credits": d(5)}  # the domain's count for the day
    monitor = j.monitor("credits")
    assert (monitor.plan, monitor.used, monitor.daily_cap, monitor.per_member) == \
        ("free", d(5), d(5), {"ann": d(5)})
    assert monitor.per_day == {"2026-12-20": d(5)}
    assert j.today("credits") == ("2026-12-20", d(5))


def test_late_usage_counts_in_the_history_per_day_and_per_member() -> None:
    j = Journey(WORKSPACE_TOKENS, "ws-late", "single", WS_CYCLES[0])
    j.command(utc(2026, 1, 15, 9, 5), "add_member", member="alice")
    j.use(utc(2026, 2, 14, 20), "tokens", 100_000, "alice")
    assert j.use(utc(2026, 2, 14, 23), "tokens", 50_000, "alice",
                 received=utc(2026, 2, 15, 9, 30)) == ["CycleRolled", "LateUsageRecorded"]
    j.advance(WS_CYCLES[1] + GRACE)
    assert j.inputs["cycles"][-1]["usage"] == {"tokens": "150000"}  # billed with the cycle
    assert j.models.daily == {("ws-late", "tokens", WS_CYCLES[0], "2026-02-14"): d(150_000)}
    assert j.models.by_member == {("ws-late", "tokens", WS_CYCLES[0], "alice"): d(150_000)}


def test_a_closed_cycle_keeps_the_plan_it_was_on() -> None:
    j = Journey(CREDIT_PLANS, "cr-label", "free", utc(2026, 2, 1))
    j.use(utc(2026, 2, 5, 9), "credits", 4)
    j.command(utc(2026, 2, 10, 15), "change_plan", plan="pro_100")
    assert j.advance(utc(2026, 2, 10, 16)) == ["UsagePeriodClosed"]
    assert j.inputs["cycles"] == [{"start": "2026-02-01T00:00:00+00:00",
                                   "end": "2026-02-10T15:00:00+00:00",
                                   "usage": {"credits": "4"}, "plan": "free"}]


def test_near_the_limit_never_recommends_a_plan_that_does_not_meter_the_metric() -> None:
    j = Journey(ASSISTANT_PLANS, "as-top", "scale", AS_CYCLES[0])
    for n, used in enumerate((41_000, 112_500, 90_000, 95_000)):
        j.use(AS_CYCLES[n] + timedelta(days=10), "conversations", used)
        j.advance(AS_CYCLES[n + 1] + GRACE)
    result = j.recommendation()
    assert result["what_if"] == what_if(("basic", "335.00", False), ("scale", "490.00", True),
                                        ("enterprise", "1890.00", False))
    fits = {w["plan"]: w["fits"] for w in result["what_if"]}
    assert fits[result["recommended_plan"]], result


def test_what_if_costs_are_written_to_the_cent() -> None:
    j = Journey(CREDIT_PLANS, "cr-cents", "pro_100", utc(2026, 3, 1))
    j.use(utc(2026, 3, 5), "credits", 20)
    j.advance(utc(2026, 4, 1, 1))
    assert j.recommendation()["what_if"] == what_if(
        ("free", "0.00", True), ("pro_100", "25.00", True), ("pro_200", "50.00", True),
        ("pro_400", "100.00", True))
