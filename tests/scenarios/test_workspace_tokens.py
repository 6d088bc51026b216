"""Pricing model 1 (DESIGN.md): workspace plans with a token pool, examples/workspace_tokens.toml.

One subscription ("acme") is driven through 13 monthly cycle rolls with a simulated clock, in
memory only (no event store, no Kafka, no wall clock). Commands go through the JSON command
contract (`parse_command` + `execute`), usage through the usage contract (`parse_usage`) and
`record_usage`, time through `Subscription.advance_to`. After every step the new events are
collected, so each test below asserts exactly what one step emitted.

The journey (cycle n starts on the 15th at 09:00 UTC, n months after 2026-01-15; the catalog's
grace window for late usage is 60 minutes):

- cycle 0: subscribe to Single (5 included seats), workspace hq, 5 members (a 6th is refused),
  80 % and 100 % of the tokens, a pack, 80 % of the raised limit, late usage after the roll;
- cycle 1: 2 extra seats mid-month (prorated), 2 members, one batch past 80 and 100 %;
- cycle 2: frank's seat released, so cycle 3 bills 6 seats;
- cycle 3: a 2nd workspace refused on Single, upgrade to Multi (prorated), 2 more workspaces;
- cycle 5: downgrade refused without a workspace choice, then scheduled keeping client-a;
- cycle 6: Single again, hq and client-b archived at the roll;
- cycle 8: grace's seat released, so cycle 9 bills the 5 included seats only;
- every cycle from 2 on: 850,000 tokens on the 20th (an 80 % warning each month);
- cycle 13 (2027-02-15 .. 03-15) is the open cycle at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.contracts.commands import execute, parse_command
from domain.contracts.usage import parse_usage
from domain.shared.errors import BillingError, CommandRefused
from domain.shared.periods import add_months
from domain.subscription.aggregate import Subscription

CATALOG_PATH = Path(__file__).resolve().parents[2] / "examples" / "workspace_tokens.toml"
CATALOG = Catalog.from_file(CATALOG_PATH)
SUB = "acme"
START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
GRACE = timedelta(minutes=60)
CENT = Decimal("0.01")
MONTHS = 13
FIRST_TEAM = ("alice", "bob", "carol", "dave", "erin")
MONTHLY_TOKENS = 850_000  # the usage of an ordinary month: past 80 %, below 100 %


def utc(year: int, month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def boundary(n: int) -> datetime:
    """The start of cycle n (cycle 0 starts at the subscription)."""
    return add_months(START, n)


def prorate(price: Decimal, at: datetime, start: datetime, end: datetime) -> Decimal:
    """The documented rule (domain/billing/charges.py): price x (end - at) / (end - start),
    durations in whole microseconds, the line rounded HALF_UP to the cent."""
    micro = timedelta(microseconds=1)
    fraction = Decimal((end - at) // micro) / Decimal((end - start) // micro)
    return (price * fraction).quantize(CENT, rounding=ROUND_HALF_UP)


# ------------------------------------------------------------------------------ journey --

@dataclass
class Journey:
    """The subscription, and the events each named step emitted (in order)."""

    sub: Subscription | None = None
    steps: dict[str, list[Any]] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    history: list[Any] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)  # step -> len(history) after it
    commands: int = 0
    usages: int = 0

    @property
    def subscription(self) -> Subscription:
        assert self.sub is not None
        return self.sub

    def _collect(self, step: str) -> None:
        events = self.subscription.collect_events()
        self.steps.setdefault(step, []).extend(events)
        self.history.extend(events)
        self.ends[step] = len(self.history)

    def state_after(self, step: str) -> Subscription:
        """The subscription as it was right after the named step, rebuilt from its events."""
        return replay(self.history[: self.ends[step]])

    def _command(self, kind: str, at: datetime, fields: dict[str, Any]) -> Any:
        self.commands += 1
        raw = {"id": f"cmd-{self.commands}", "type": kind, "subscription": SUB,
               "at": at.isoformat(), **fields}
        self.sub, outcome = execute(self.sub, parse_command(raw), CATALOG)
        return outcome

    def command(self, step: str, kind: str, at: datetime, **fields: Any) -> None:
        outcome = self._command(kind, at, fields)
        self.results[step] = outcome.result
        self._collect(step)

    def refused(self, step: str, kind: str, at: datetime, **fields: Any) -> None:
        with pytest.raises(CommandRefused) as refusal:
            self._command(kind, at, fields)
        self.refusals[step] = refusal.value.code
        self._collect(step)

    def tokens(self, step: str, quantity: int, at: datetime, member: str,
               workspace: str) -> None:
        self.usages += 1
        item = parse_usage({"id": f"u-{self.usages}", "subscription": SUB, "metric": "tokens",
                            "quantity": quantity, "at": at.isoformat(), "member": member,
                            "workspace": workspace})
        self.subscription.advance_to(item.at, CATALOG)
        self.subscription.record_usage([item])
        self._collect(step)

    def advance(self, step: str, to: datetime) -> None:
        self.subscription.advance_to(to, CATALOG)
        self._collect(step)

    def roll(self, n: int) -> None:
        """Cycle n opens; the closed cycle's grace window passes."""
        self.advance(f"roll-{n}", boundary(n) + GRACE)

    def ordinary_month(self, n: int, workspace: str) -> None:
        """Cycle n: the month's usage on the 20th."""
        at = boundary(n).replace(day=20, hour=10)
        self.tokens(f"usage-{n}", MONTHLY_TOKENS, at, "alice", workspace)


def play_cycle_0(j: Journey) -> None:
    j.command("subscribe", "subscribe", START, account="acme-as", plan="single")
    j.command("workspace-hq", "create_workspace", utc(2026, 1, 15, 9, 5), workspace="hq")
    for member in FIRST_TEAM:
        j.command("team", "add_member", utc(2026, 1, 15, 9, 10), member=member)
    j.refused("sixth-member", "add_member", utc(2026, 1, 15, 9, 15), member="frank")
    j.tokens("tokens-80", 800_000, utc(2026, 1, 20, 10), "alice", "hq")
    j.tokens("tokens-100", 250_000, utc(2026, 1, 26, 14), "bob", "hq")
    j.command("pack", "buy_pack", utc(2026, 1, 27, 8), pack="tokens_500k")
    j.tokens("tokens-after-pack", 150_000, utc(2026, 2, 3, 11), "carol", "hq")
    j.advance("roll-1", boundary(1))
    j.tokens("late-usage", 10_000, utc(2026, 2, 15, 8, 30), "dave", "hq")
    j.advance("grace-open", boundary(1) + GRACE - timedelta(minutes=1))
    j.advance("close-0", boundary(1) + GRACE)


def play_cycle_1(j: Journey) -> None:
    j.command("add-seats", "add_seats", utc(2026, 2, 20, 12), count=2)
    for member in ("frank", "grace"):
        j.command("new-members", "add_member", utc(2026, 2, 20, 12, 5), member=member)
    j.tokens("tokens-80-and-100", 1_000_000, utc(2026, 3, 1, 10), "frank", "hq")
    j.roll(2)


def play_cycle_2(j: Journey) -> None:
    j.ordinary_month(2, "hq")
    j.command("release-frank", "release_seat", utc(2026, 3, 20, 16), member="frank")
    j.roll(3)


def play_cycle_3(j: Journey) -> None:
    j.ordinary_month(3, "hq")
    j.refused("second-workspace-on-single", "create_workspace", utc(2026, 4, 22, 10),
              workspace="client-a")
    j.command("upgrade", "change_plan", utc(2026, 4, 24, 15, 30), plan="multi")
    for workspace in ("client-a", "client-b"):
        j.command("client-workspaces", "create_workspace", utc(2026, 4, 24, 16),
                  workspace=workspace)
    j.roll(4)


def play_cycle_5(j: Journey) -> None:
    j.ordinary_month(5, "client-b")
    j.refused("downgrade-without-choice", "change_plan", utc(2026, 7, 1, 10), plan="single")
    j.refused("downgrade-unknown-workspace", "change_plan", utc(2026, 7, 1, 10, 1),
              plan="single", keep_workspace="client-z")
    j.command("downgrade", "change_plan", utc(2026, 7, 1, 10, 2), plan="single",
              keep_workspace="client-a")
    j.roll(6)


def play_journey() -> Journey:
    j = Journey()
    play_cycle_0(j)
    play_cycle_1(j)
    play_cycle_2(j)
    play_cycle_3(j)
    j.ordinary_month(4, "client-a")
    j.roll(5)
    play_cycle_5(j)
    for n in range(6, MONTHS):
        j.ordinary_month(n, "client-a")
        if n == 8:
            j.command("release-grace", "release_seat", utc(2026, 9, 20, 16), member="grace")
        j.roll(n + 1)
    j.ordinary_month(MONTHS, "client-a")
    return j


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    yield play_journey()


# ------------------------------------------------------------------------------ helpers --

def kinds(events: Sequence[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def lines(event: Any) -> list[tuple[str, str, str, str]]:
    """Each charge line as (kind, quantity, unit_price, amount)."""
    return [(c["kind"], c["quantity"], c["unit_price"], c["amount"]) for c in event.charges]


def only(events: Sequence[Any], kind: type) -> Any:
    (match,) = [e for e in events if isinstance(e, kind)]
    return match


def of_kind(events: Sequence[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def threshold(event: Any) -> tuple[str, int, str, str, bool]:
    return (event.metric, event.threshold, event.used, event.limit, event.hard)


def plan_line(plan: str) -> tuple[str, str, str, str]:
    price = str(CATALOG.plan(plan).prices["month"])
    return ("plan", "1", price, price)


def seat_line(extra: int) -> tuple[str, str, str, str]:
    return ("seats", str(extra), "99.00", str(Decimal("99.00") * extra))


# ---------------------------------------------------------------------------- catalog --

def test_catalog_has_two_plans_that_differ_only_in_workspaces() -> None:
    single, multi = CATALOG.plan("single"), CATALOG.plan("multi")
    assert CATALOG.currency == "NOK"
    assert (single.name, single.prices, single.limits) == (
        "Single project", {"month": Decimal("490.00")}, {"workspaces": 1})
    assert (multi.name, multi.prices, multi.limits) == (
        "Multi project", {"month": Decimal("990.00")}, {})  # no limit: unlimited workspaces
    assert single.features == multi.features
    assert single.allowances == multi.allowances
    assert (single.included_seats, single.extra_seat_monthly_price) == (5, Decimal("99.00"))
    assert (multi.included_seats, multi.extra_seat_monthly_price) == (5, Decimal("99.00"))
    tokens = single.allowances["tokens"]
    assert (tokens.included, tokens.limit, tokens.overage_unit_price) == (
        Decimal(1_000_000), "hard", None)
    pack = CATALOG.pack("tokens_500k")
    assert (pack.metric, pack.quantity, pack.price) == ("tokens", Decimal(500_000),
                                                        Decimal("199.00"))
    assert CATALOG.thresholds == (80, 100)
    assert CATALOG.late_usage_grace_minutes == 60


# ---------------------------------------------------------------------------- cycle 0 --

def test_subscribe_charges_the_first_month_in_advance(journey: Journey) -> None:
    (subscribed,) = journey.steps["subscribe"]
    assert isinstance(subscribed, Subscription.Subscribed)
    assert (subscribed.originator_id, subscribed.account, subscribed.status) == (
        "acme", "acme-as", "active")
    assert (subscribed.cycle_start, subscribed.cycle_end) == (START, utc(2026, 2, 15))
    assert subscribed.timestamp == START
    assert subscribed.seats == 5
    assert subscribed.terms["plan_id"] == "single"
    assert subscribed.terms["limits"] == {"workspaces": 1}
    assert subscribed.terms["allowances"] == {"tokens": {"included": "1000000", "limit": "hard"}}
    assert subscribed.terms["currency"] == "NOK"
    assert lines(subscribed) == [("plan", "1", "490.00", "490.00")]
    assert subscribed.charges[0]["description"] == "Single project (month)"
    assert subscribed.charges[0]["period_start"] == START.isoformat()
    assert subscribed.charges[0]["period_end"] == utc(2026, 2, 15).isoformat()


def test_five_included_seats_take_five_members_and_no_sixth(journey: Journey) -> None:
    assert kinds(journey.steps["workspace-hq"]) == ["WorkspaceCreated"]
    assert kinds(journey.steps["team"]) == ["MemberAdded"] * 5
    assert [e.member for e in journey.steps["team"]] == list(FIRST_TEAM)
    assert journey.refusals["sixth-member"] == "no_free_seat"
    assert journey.steps["sixth-member"] == []


def test_usage_warns_at_80_percent_of_the_token_pool(journey: Journey) -> None:
    recorded, warning = journey.steps["tokens-80"]
    assert isinstance(recorded, Subscription.UsageRecorded)
    assert recorded.totals == {"tokens": "800000"}
    assert recorded.items == [{"id": "u-1", "metric": "tokens", "quantity": "800000",
                               "at": utc(2026, 1, 20, 10).isoformat(), "member": "alice",
                               "workspace": "hq"}]
    assert isinstance(warning, Subscription.QuotaThresholdCrossed)
    assert threshold(warning) == ("tokens", 80, "800000", "1000000", True)
    assert warning.timestamp == utc(2026, 1, 20, 10)


def test_the_pool_runs_out_at_100_percent_a_hard_limit(journey: Journey) -> None:
    recorded, exhausted = journey.steps["tokens-100"]
    assert recorded.totals == {"tokens": "250000"}
    assert isinstance(exhausted, Subscription.QuotaThresholdCrossed)
    # hard: the AI features pause; the usage that happened is still recorded
    assert threshold(exhausted) == ("tokens", 100, "1050000", "1000000", True)


def test_a_pack_is_charged_at_once_and_raises_the_limit_until_cycle_end(
        journey: Journey) -> None:
    (bought,) = journey.steps["pack"]
    assert isinstance(bought, Subscription.PackPurchased)
    assert (bought.pack_id, bought.metric, bought.quantity) == ("tokens_500k", "tokens", "500000")
    assert lines(bought) == [("pack", "1", "199.00", "199.00")]
    assert bought.charges[0]["period_start"] == utc(2026, 1, 27, 8).isoformat()
    assert bought.charges[0]["period_end"] == utc(2026, 2, 15).isoformat()
    assert journey.results["pack"] == "applied"


def test_the_raised_limit_warns_again_at_its_80_percent(journey: Journey) -> None:
    recorded, warning = journey.steps["tokens-after-pack"]
    assert recorded.totals == {"tokens": "150000"}
    # 1,200,000 used of 1,000,000 included + 500,000 from the pack: exactly 80 %
    assert threshold(warning) == ("tokens", 80, "1200000", "1500000", True)


def test_a_replayed_cycle_0_shows_the_limit_and_remaining_tokens_at_each_step(
        journey: Journey) -> None:
    expected = {"tokens-80": (1_000_000, 200_000),
                "tokens-100": (1_000_000, 0),  # the AI features pause
                "pack": (1_500_000, 450_000),  # usable at once
                "tokens-after-pack": (1_500_000, 300_000)}
    for step, (limit, remaining) in expected.items():
        sub = journey.state_after(step)
        assert (sub.limit_of("tokens"), sub.remaining("tokens")) == (limit, remaining), step


def test_first_roll_bills_the_plan_and_does_not_carry_the_pack_over(journey: Journey) -> None:
    (rolled,) = journey.steps["roll-1"]
    assert isinstance(rolled, Subscription.CycleRolled)
    assert (rolled.closed_start, rolled.closed_end) == (START, utc(2026, 2, 15))
    assert rolled.closed_usage == {"tokens": "1200000"}
    assert (rolled.cycle_start, rolled.cycle_end) == (utc(2026, 2, 15), utc(2026, 3, 15))
    assert rolled.timestamp == utc(2026, 2, 15)
    assert (rolled.changes, rolled.seats, rolled.archived_workspaces) == ({}, 5, [])
    assert lines(rolled) == [plan_line("single")]
    sub = journey.state_after("roll-1")
    assert sub.extra == {}  # the pack expired with its cycle
    assert sub.used == {}  # unused tokens do not roll over either
    assert (sub.limit_of("tokens"), sub.remaining("tokens")) == (1_000_000, 1_000_000)


def test_late_usage_counts_for_the_closed_month_until_its_grace_window_ends(
        journey: Journey) -> None:
    (late,) = journey.steps["late-usage"]
    assert isinstance(late, Subscription.LateUsageRecorded)
    assert (late.period_start, late.period_end) == (START, utc(2026, 2, 15))
    assert late.totals == {"tokens": "10000"}
    assert journey.steps["grace-open"] == []
    (closed,) = journey.steps["close-0"]
    assert isinstance(closed, Subscription.UsagePeriodClosed)
    assert closed.timestamp == utc(2026, 2, 15) + GRACE
    assert (closed.period_start, closed.period_end) == (START, utc(2026, 2, 15))
    assert closed.usage == {"tokens": "1210000"}
    assert closed.charges == []  # tokens are a hard limit: never billed as overage


# ---------------------------------------------------------------------------- cycle 1 --

def test_extra_seats_mid_month_are_charged_prorated_for_the_rest_of_the_cycle(
        journey: Journey) -> None:
    (added,) = journey.steps["add-seats"]
    assert isinstance(added, Subscription.SeatsAdded)
    assert (added.count, added.seats) == (2, 7)
    at, start, end = utc(2026, 2, 20, 12), utc(2026, 2, 15), utc(2026, 3, 15)
    expected = prorate(2 * Decimal("99.00"), at, start, end)
    # 198.00 x (22 d 21 h) / 28 d = 198 x 1,976,400 s / 2,419,200 s = 161.7589... -> 161.76
    assert expected == Decimal("161.76")
    assert lines(added) == [("seats", "2", "99.00", "161.76")]
    assert added.charges[0]["fraction"] == "0.816964"
    assert (added.charges[0]["period_start"], added.charges[0]["period_end"]) == (
        at.isoformat(), end.isoformat())
    assert kinds(journey.steps["new-members"]) == ["MemberAdded", "MemberAdded"]


def test_one_batch_past_both_thresholds_reports_both(journey: Journey) -> None:
    recorded, warning, exhausted = journey.steps["tokens-80-and-100"]
    assert recorded.totals == {"tokens": "1000000"}
    assert threshold(warning) == ("tokens", 80, "1000000", "1000000", True)
    assert threshold(exhausted) == ("tokens", 100, "1000000", "1000000", True)


def test_the_roll_bills_the_plan_and_the_extra_seats_for_the_whole_month(
        journey: Journey) -> None:
    rolled, closed = journey.steps["roll-2"]
    assert isinstance(rolled, Subscription.CycleRolled)
    assert (rolled.cycle_start, rolled.cycle_end) == (utc(2026, 3, 15), utc(2026, 4, 15))
    assert (rolled.changes, rolled.seats) == ({}, 7)
    assert lines(rolled) == [plan_line("single"), ("seats", "2", "99.00", "198.00")]
    assert isinstance(closed, Subscription.UsagePeriodClosed)
    assert (closed.usage, closed.charges) == ({"tokens": "1000000"}, [])


# ---------------------------------------------------------------------------- cycle 2 --

def test_a_released_seat_frees_at_once_without_a_credit(journey: Journey) -> None:
    (released,) = journey.steps["release-frank"]
    assert isinstance(released, Subscription.SeatReleased)
    assert released.member == "frank"
    assert released.timestamp == utc(2026, 3, 20, 16)
    assert released.charges == [] and released.seats is None  # paid to the cycle's end
    sub = journey.state_after("release-frank")
    assert "frank" not in sub.members  # the member leaves at once
    assert (sub.seats, len(sub.members)) == (7, 6)  # one free seat for a new person


def test_the_next_month_bills_only_the_seats_in_use(journey: Journey) -> None:
    rolled, closed = journey.steps["roll-3"]
    assert rolled.changes == {"seats": {"from": 7, "to": 6}}
    assert rolled.seats == 6
    assert lines(rolled) == [plan_line("single"), ("seats", "1", "99.00", "99.00")]
    assert (closed.usage, closed.charges) == ({"tokens": "850000"}, [])


# ---------------------------------------------------------------------------- cycle 3 --

def test_single_allows_one_workspace(journey: Journey) -> None:
    assert journey.refusals["second-workspace-on-single"] == "workspace_limit_reached"
    assert journey.steps["second-workspace-on-single"] == []


def test_upgrade_to_multi_mid_cycle_credits_single_and_charges_multi_prorated(
        journey: Journey) -> None:
    (upgraded,) = journey.steps["upgrade"]
    assert isinstance(upgraded, Subscription.PlanUpgraded)
    assert journey.results["upgrade"] == "upgraded"
    assert (upgraded.from_plan, upgraded.terms["plan_id"]) == ("single", "multi")
    assert upgraded.terms["limits"] == {}
    at, start, end = utc(2026, 4, 24, 15, 30), utc(2026, 4, 15), utc(2026, 5, 15)
    credit = -prorate(Decimal("490.00"), at, start, end)
    rest = prorate(Decimal("990.00"), at, start, end)
    # 20 d 17.5 h of 30 d = 1,791,000 s / 2,592,000 s: 490 x = 338.5763... ; 990 x = 684.0625
    assert (credit, rest) == (Decimal("-338.58"), Decimal("684.06"))
    assert lines(upgraded) == [("proration_credit", "1", "490.00", "-338.58"),
                               ("proration_charge", "1", "990.00", "684.06")]
    assert [c["description"] for c in upgraded.charges] == [
        "Unused time on Single project", "Remaining time on Multi project"]
    # same seat price on both plans: the extra seat is not re-prorated
    assert (upgraded.restarted_cycle, upgraded.cycle_start, upgraded.cycle_end) == (
        False, start, end)
    assert upgraded.cancelled == []


def test_multi_creates_more_workspaces(journey: Journey) -> None:
    created = journey.steps["client-workspaces"]
    assert kinds(created) == ["WorkspaceCreated", "WorkspaceCreated"]
    assert [e.workspace for e in created] == ["client-a", "client-b"]


def test_months_on_multi_bill_the_multi_price(journey: Journey) -> None:
    for n in (4, 5):
        rolled, _ = journey.steps[f"roll-{n}"]
        assert rolled.terms["plan_id"] == "multi"
        assert lines(rolled) == [plan_line("multi"), ("seats", "1", "99.00", "99.00")]
        assert rolled.charges[0]["description"] == "Multi project (month)"


# ---------------------------------------------------------------------------- cycle 5 --

def test_downgrade_to_single_needs_the_workspace_to_keep(journey: Journey) -> None:
    assert journey.refusals["downgrade-without-choice"] == "workspace_choice_required"
    assert journey.steps["downgrade-without-choice"] == []
    assert journey.refusals["downgrade-unknown-workspace"] == "unknown_workspace"
    assert journey.steps["downgrade-unknown-workspace"] == []


def test_downgrade_with_a_workspace_to_keep_is_scheduled_for_the_next_roll(
        journey: Journey) -> None:
    (scheduled,) = journey.steps["downgrade"]
    assert isinstance(scheduled, Subscription.DowngradeScheduled)
    assert journey.results["downgrade"] == "downgrade_scheduled"
    assert (scheduled.to_plan, scheduled.keep_workspace, scheduled.effective_at) == (
        "single", "client-a", utc(2026, 7, 15))
    sub = journey.state_after("downgrade")
    assert sub.plan_id == "multi"  # still Multi until the cycle ends
    assert sub.active_workspaces() == ["client-a", "client-b", "hq"]


def test_the_downgrade_takes_effect_at_the_roll_and_archives_the_other_workspaces(
        journey: Journey) -> None:
    rolled, archived_b, archived_hq, closed = journey.steps["roll-6"]
    assert isinstance(rolled, Subscription.CycleRolled)
    assert rolled.changes == {"plan": {"from": "multi", "to": "single"}}
    assert rolled.archived_workspaces == ["client-b", "hq"]
    # each archive is its own event as well, at the roll's time
    assert [(type(e).__name__, e.workspace, e.timestamp) for e in (archived_b, archived_hq)] \
        == [("WorkspaceArchived", "client-b", utc(2026, 7, 15)),
            ("WorkspaceArchived", "hq", utc(2026, 7, 15))]
    assert (rolled.terms["plan_id"], rolled.terms["limits"]) == ("single", {"workspaces": 1})
    assert lines(rolled) == [plan_line("single"), ("seats", "1", "99.00", "99.00")]
    assert (closed.usage, closed.charges) == ({"tokens": "850000"}, [])
    sub = journey.state_after("roll-6")
    assert sub.active_workspaces() == ["client-a"]
    assert sub.workspaces == {"hq": "archived", "client-a": "active", "client-b": "archived"}


def test_releasing_another_seat_brings_the_bill_back_to_the_plan_fee(journey: Journey) -> None:
    assert kinds(journey.steps["release-grace"]) == ["SeatReleased"]
    rolled, _ = journey.steps["roll-9"]
    assert rolled.changes == {"seats": {"from": 6, "to": 5}}
    assert lines(rolled) == [plan_line("single")]


# ---------------------------------------------------------------------------- 13 months --

EXPECTED_ROLLS = {
    1: [plan_line("single")],
    2: [plan_line("single"), seat_line(2)],
    3: [plan_line("single"), seat_line(1)],
    4: [plan_line("multi"), seat_line(1)],
    5: [plan_line("multi"), seat_line(1)],
    6: [plan_line("single"), seat_line(1)],
    7: [plan_line("single"), seat_line(1)],
    8: [plan_line("single"), seat_line(1)],
    **{n: [plan_line("single")] for n in range(9, MONTHS + 1)},
}


def test_every_month_rolls_on_the_15th_with_its_charges_to_the_cent(journey: Journey) -> None:
    rolls = of_kind(journey.history, Subscription.CycleRolled)
    assert len(rolls) == MONTHS
    for n, rolled in enumerate(rolls, start=1):
        assert (rolled.cycle_start, rolled.cycle_end) == (boundary(n), boundary(n + 1))
        assert (rolled.cycle_start.day, rolled.cycle_start.hour) == (15, 9)
        assert rolled.closed_start == boundary(n - 1)
        assert lines(rolled) == EXPECTED_ROLLS[n], f"roll {n}"
        assert all(c["period_start"] == boundary(n).isoformat() for c in rolled.charges)
        assert all(c["period_end"] == boundary(n + 1).isoformat() for c in rolled.charges)


def test_every_closed_month_closes_after_the_grace_window_without_overage(
        journey: Journey) -> None:
    closings = of_kind(journey.history, Subscription.UsagePeriodClosed)
    assert len(closings) == MONTHS
    for n, closed in enumerate(closings, start=1):
        assert closed.timestamp == boundary(n) + GRACE
        assert (closed.period_start, closed.period_end) == (boundary(n - 1), boundary(n))
        assert closed.charges == []
    usage = [c.usage["tokens"] for c in closings]
    assert usage == ["1210000", "1000000", *["850000"] * (MONTHS - 2)]


def test_tokens_reset_every_month_so_each_month_warns_at_80_percent_again(
        journey: Journey) -> None:
    for n in range(2, MONTHS + 1):
        recorded, warning = journey.steps[f"usage-{n}"]
        assert recorded.totals == {"tokens": "850000"}
        assert threshold(warning) == ("tokens", 80, "850000", "1000000", True)


def test_state_after_13_months(journey: Journey) -> None:
    sub = journey.subscription
    assert (sub.plan_id, sub.status) == ("single", "active")
    assert (sub.cycle_start, sub.cycle_end) == (utc(2027, 2, 15), utc(2027, 3, 15))
    assert sub.seats == 5
    assert sorted(sub.members) == sorted(FIRST_TEAM)
    assert sub.workspaces == {"hq": "archived", "client-a": "active", "client-b": "archived"}
    assert sub.used == {"tokens": Decimal(MONTHLY_TOKENS)}
    assert sub.extra == {}
    assert sub.remaining("tokens") == Decimal(150_000)
    assert sub.closing is None  # January 2027 closed at 10:00 on 2027-02-15
    assert sub.scheduled_plan is None
    assert sub.next_due() == utc(2027, 3, 15)  # the 14th roll
    assert sub.version == len(journey.history)


def test_everything_billed_in_13_months_to_the_cent(journey: Journey) -> None:
    billed = [Decimal(c["amount"]) for e in journey.history for c in getattr(e, "charges", [])]
    # 490 subscribe + 199 pack + 161.76 seats + 345.48 upgrade (684.06 - 338.58)
    # + rolls: 490 + 688 + 589 + 1089 + 1089 + 589 + 589 + 589 + 5 x 490
    assert sum(billed, Decimal(0)) == Decimal("9358.24")


def test_replaying_the_13_months_rebuilds_the_same_state(journey: Journey) -> None:
    sub, rebuilt = journey.subscription, replay(journey.history)
    assert rebuilt.version == sub.version
    for name in ("terms", "seats", "members", "workspaces", "used", "extra", "cycle_start",
                 "cycle_end", "anchor", "closing"):
        assert getattr(rebuilt, name) == getattr(sub, name), name


# ---------------------------------------------------------------------------- replay --

def replay(events: Sequence[Any]) -> Subscription:
    """The aggregate rebuilt from its events alone (as an auditor would)."""
    sub = None
    for e in events:
        sub = e.mutate(sub)
    assert isinstance(sub, Subscription)
    return sub


# ------------------------------------------------------------------- bugs found (xfail) --

def fresh_multi_with_pack() -> Subscription:
    """Multi, 1,200,000 tokens used of 1,000,000 included + a 500,000 pack, one workspace."""
    sub = Subscription.subscribe("pack-user", "pack-user", "multi", CATALOG, START)
    sub.create_workspace("only", START)
    sub.buy_pack("tokens_500k", utc(2026, 1, 20), CATALOG)
    sub.record_usage([parse_usage({"id": "p1", "subscription": "pack-user", "metric": "tokens",
                                   "quantity": 1_200_000, "at": "2026-01-21T09:00:00+00:00"})])
    return sub


def test_a_downgrade_is_not_blocked_by_tokens_a_pack_paid_for() -> None:
    sub = fresh_multi_with_pack()
    assert sub.limit_of("tokens") == Decimal(1_500_000)
    assert sub.change_plan("single", utc(2026, 1, 22), CATALOG) == "downgrade_scheduled"


def test_usage_in_an_archived_workspace_is_refused(journey: Journey) -> None:
    sub = replay(journey.history)
    item = parse_usage({"id": "ghost", "subscription": SUB, "metric": "tokens", "quantity": 1,
                        "at": "2027-02-20T12:00:00+00:00", "workspace": "hq"})
    with pytest.raises(BillingError):
        sub.check_usage(item)


def test_a_workspace_created_after_a_scheduled_downgrade_never_replaces_the_old_one() -> None:
    sub = Subscription.subscribe("late-ws", "late-ws", "multi", CATALOG, START)
    sub.create_workspace("zeta", START)
    assert sub.change_plan("single", utc(2026, 1, 20), CATALOG) == "downgrade_scheduled"
    with contextlib.suppress(CommandRefused):  # refusing it would be correct too
        sub.create_workspace("alpha", utc(2026, 1, 21))
    sub.collect_events()
    sub.advance_to(utc(2026, 2, 15), CATALOG)
    rolled = only(sub.collect_events(), Subscription.CycleRolled)
    assert "zeta" not in rolled.archived_workspaces
    assert sub.workspaces["zeta"] == "active"
