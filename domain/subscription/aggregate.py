"""The Subscription aggregate: one per customer subscription, keyed by its external id.

Every event's `timestamp` is business time passed in by the caller (the command's time, the usage
event's time, or a cycle boundary reached by the billing clock): the domain never reads the wall
clock. The time an event was recorded is kept by the event store next to it.

Each command checks first (small `check_*` methods raising `CommandRefused` with a code), then
triggers one named event; the `@event` methods only apply state. The terms a subscription is
billed under (price, seats, allowances, limits, features) are copied from the catalog into its
events, so replay never needs the catalog and a new catalog version applies from the next cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    event,
)

from domain.billing.charges import Charge, charge, overage_lines, prorated
from domain.billing.invoice_document import build_invoice, credit_lines
from domain.billing.pricing import (
    ZERO,
    blended_allowances,
    dec,
    is_upgrade,
    period_charges,
    plan_terms,
)
from domain.catalog.model import PERIODS, Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import (
    BillingError,
    CommandRefused,
    CycleNotOver,
    InvalidUsage,
    TimeTooFarAhead,
    UnknownMetric,
    UsageTooLate,
)
from domain.shared.events import DomainEvent, Snapshot
from domain.shared.periods import add_months, require_aware
from domain.shared.topics import keep_topics
from domain.subscription import events
from domain.subscription.customer import customer_details
from domain.subscription.cycles import commitment_end, next_boundary
from domain.subscription.metering import by_utc_day, metric_totals, next_utc_midnight, utc_day

PAYMENT_FAILURE_REASONS = ("declined", "insufficient_funds", "expired_card")
PAYMENT_RETRY_DAYS = (1, 3, 7)  # after the 1st, 2nd and 3rd failure; none after the 4th


class Subscription(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    # The events (domain/subscription/events.py), also reachable as Subscription.<Event>.
    Subscribed = events.Subscribed
    UsageRecorded = events.UsageRecorded
    LateUsageRecorded = events.LateUsageRecorded
    QuotaThresholdCrossed = events.QuotaThresholdCrossed
    DailyCapReached = events.DailyCapReached
    DailyAllowanceReset = events.DailyAllowanceReset
    CycleRolled = events.CycleRolled
    UsagePeriodClosed = events.UsagePeriodClosed
    AgreementRenewed = events.AgreementRenewed
    PlanUpgraded = events.PlanUpgraded
    PlanChangedInTrial = events.PlanChangedInTrial
    DowngradeScheduled = events.DowngradeScheduled
    CancellationScheduled = events.CancellationScheduled
    CancellationWithdrawn = events.CancellationWithdrawn
    BillingPeriodChangeScheduled = events.BillingPeriodChangeScheduled
    SeatsAdded = events.SeatsAdded
    MemberAdded = events.MemberAdded
    SeatReleased = events.SeatReleased
    UserPlanAssigned = events.UserPlanAssigned
    UserPlanUnassigned = events.UserPlanUnassigned
    PackPurchased = events.PackPurchased
    AddOnAdded = events.AddOnAdded
    AddOnRemovalScheduled = events.AddOnRemovalScheduled
    WorkspaceCreated = events.WorkspaceCreated
    WorkspaceArchived = events.WorkspaceArchived
    FeatureActivated = events.FeatureActivated
    FeatureDeactivated = events.FeatureDeactivated
    CountReported = events.CountReported
    PaymentSucceeded = events.PaymentSucceeded
    PaymentFailed = events.PaymentFailed
    ScheduledChangeCancelled = events.ScheduledChangeCancelled
    ProfileUpdated = events.ProfileUpdated
    CustomerUpdated = events.CustomerUpdated
    InvoiceIssued = events.InvoiceIssued
    InvoiceVoided = events.InvoiceVoided
    CreditNoteIssued = events.CreditNoteIssued

    # ---------------------------------------------------------------------------- events --
    # All v1. Amounts and quantities are decimal strings; `charges` are invoice-ready lines
    # (kind, description, quantity, unit_price, amount[, period_start, period_end]).

    # ---------------------------------------------------------------------- creation --

    @event(Subscribed)
    def __init__(self, id: str, account: str, terms: dict[str, Any],
                 status: str, cycle_start: datetime, cycle_end: datetime,
                 trial_end: datetime | None, commitment_end: datetime | None, seats: int | None,
                 charges: list[Charge], customer: dict[str, Any], timestamp: datetime) -> None:
        self.account = account
        self.customer = dict(customer)
        # The open draft: charge lines not invoiced yet, each with the version of its event.
        self.uninvoiced: list[Charge] = [{**c, "event_version": 1} for c in charges]
        self.invoices: dict[str, dict[str, Any]] = {}  # number -> {total, status, kind}
        self.invoiced_through = 0  # version of the event that triggered the last invoice
        self.terms = terms
        self.status = status
        self.started_at = cycle_start
        self.anchor = cycle_start if trial_end is None else cycle_end
        self.anchor_day = self.anchor.day  # the billing day, kept when the anchor moves
        self.cycle_start = cycle_start
        self.cycle_end = cycle_end
        self.trial_end = trial_end
        self.commitment_end = commitment_end
        self.seats = seats
        self.used: dict[str, Decimal] = {}
        self.extra: dict[str, Decimal] = {}  # pack units for this cycle (expire at its end)
        self.daily_day: str | None = None
        self.daily_used: dict[str, Decimal] = {}
        self.daily_capped: list[str] = []
        self.closing: dict[str, Any] | None = None  # last cycle, open for late usage
        self.members: dict[str, dict[str, str]] = {}  # member -> {solution: level}
        self.workspaces: dict[str, str] = {}  # id -> "active" | "archived"
        self.addons: dict[str, dict[str, Any]] = {}
        self.features_active: list[str] = []
        self.counts: dict[str, int] = {}
        self.scheduled_plan: dict[str, Any] | None = None
        self.scheduled_period: str | None = None
        self.cancel_at: datetime | None = None
        self.payment_attempts: dict[str, int] = {}
        self.payment_state = "ok"

    @classmethod
    def subscribe(cls, subscription_id: str, account: str, plan_id: str, catalog: Catalog,
                  at: datetime, *, period: str = "month", trial: bool = False,
                  seats: int | None = None,
                  customer: dict[str, Any] | None = None) -> Subscription:
        require_aware(at)
        plan = catalog.plan(plan_id)
        if not plan.available:
            raise CommandRefused(f"plan {plan_id} is not available", "plan_unavailable")
        terms = plan_terms(plan, period, catalog)
        if seats is not None and plan.included_seats is None:
            raise CommandRefused(f"plan {plan_id} has no seats", "seats_not_for_sale")
        seat_count = plan.included_seats if seats is None else seats
        if seat_count is not None and plan.included_seats is not None:
            if seat_count < plan.included_seats:
                seat_count = plan.included_seats
            if seat_count > plan.included_seats and plan.extra_seat_monthly_price is None:
                raise CommandRefused(f"plan {plan_id} sells no extra seats", "seats_not_for_sale")
        if trial:
            if plan.trial_days <= 0:
                raise CommandRefused(f"plan {plan_id} has no trial", "no_trial")
            end = at + timedelta(days=plan.trial_days)
            subscription = cls(id=subscription_id, account=account, terms=terms,
                               status="trialing", cycle_start=at, cycle_end=end, trial_end=end,
                               commitment_end=commitment_end(plan, end), seats=seat_count,
                               charges=[], customer=customer_details(customer), timestamp=at)
            subscription._end_agreement_unless_renewed(at)
            return subscription
        end = add_months(at, PERIODS[period])
        charges = period_charges(terms, seat_count, {}, {}, at, end, catalog)
        subscription = cls(id=subscription_id, account=account, terms=terms, status="active",
                           cycle_start=at, cycle_end=end, trial_end=None,
                           commitment_end=commitment_end(plan, at), seats=seat_count,
                           charges=charges, customer=customer_details(customer), timestamp=at)
        subscription._end_agreement_unless_renewed(at)
        return subscription

    def _end_agreement_unless_renewed(self, at: datetime) -> None:
        """A plan sold without auto-renewal ends (or goes to Free) when its agreement ends."""
        if self.commitment_end is not None and not self.terms.get("auto_renew", True):
            self._cancellation_scheduled(effective_at=self.commitment_end, timestamp=at)

    # ------------------------------------------------------------------------- views --

    @property
    def plan_id(self) -> str:
        return str(self.terms["plan_id"])

    @property
    def allowances(self) -> dict[str, dict[str, Any]]:
        return dict(self.terms["allowances"])

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=int(self.terms.get("late_usage_grace_minutes", 60)))

    def limit_of(self, metric: str) -> Decimal:
        """Usable units this cycle: included plus packs."""
        return dec(self.terms["allowances"][metric]["included"]) + self.extra.get(metric, ZERO)

    def remaining(self, metric: str) -> Decimal:
        if metric not in self.allowances:
            raise UnknownMetric(f"plan {self.plan_id} has no metric {metric!r}")
        return max(self.limit_of(metric) - self.used.get(metric, ZERO), ZERO)

    def active_workspaces(self) -> list[str]:
        return sorted(w for w, state in self.workspaces.items() if state == "active")

    def features(self) -> list[str]:
        addon_features = [f for a in self.addons.values() for f in a.get("features", [])]
        return sorted(set(self.terms.get("features", [])) | set(addon_features))

    @property
    def ended(self) -> bool:
        return self.status == "cancelled"

    # ---------------------------------------------------------------------- the clock --

    def next_due(self) -> datetime | None:
        """The next moment at which time alone changes this subscription."""
        if self.ended:  # only the last cycle's closing is still to come
            if self.closing is None:
                return None
            return datetime.fromisoformat(self.closing["end"]) + self.grace
        due = [self.cycle_end]
        if self.closing is not None:
            due.append(datetime.fromisoformat(self.closing["end"]) + self.grace)
        if self.daily_capped and self.daily_day is not None:
            due.append(next_utc_midnight(self.daily_day))
        return min(due)

    def advance_to(self, at: datetime, catalog: Catalog) -> int:
        """Apply everything due by `at`, in time order: daily resets, closing of the last
        cycle after its grace window, cycle rolls (with scheduled changes). Returns the number
        of events emitted."""
        require_aware(at)
        before = len(self.pending_events)
        while (due := self.next_due()) is not None and due <= at:
            if self.daily_capped and self.daily_day is not None \
                    and due == next_utc_midnight(self.daily_day):
                self._daily_allowance_reset(day=utc_day(due), metrics=list(self.daily_capped),
                                            timestamp=due)
            elif self.closing is not None and \
                    due == datetime.fromisoformat(self.closing["end"]) + self.grace:
                self._close_period(due)
            else:
                self.roll_cycle(due, catalog)
        return len(self.pending_events) - before

    def time_limit(self, periods: int = 1) -> datetime:
        """The first time `check_not_too_far_ahead` refuses."""
        return self.cycle_end + periods * (self.cycle_end - self.cycle_start)

    def check_not_too_far_ahead(self, at: datetime, periods: int = 1) -> None:
        """Input may move a subscription only so far past its open cycle (usage: one period;
        commands: 24, as an operator may act on a subscription the clock has not moved for a
        while): a time years ahead would otherwise roll thousands of cycles. Longer moves are
        the billing clock's."""
        limit = self.time_limit(periods)
        if at >= limit:
            raise TimeTooFarAhead(f"time {at.isoformat()} is more than {periods} period(s) "
                                  f"past the open cycle, which ends "
                                  f"{self.cycle_end.isoformat()}")

    def check_cycle_over(self, at: datetime) -> None:
        if at < self.cycle_end:
            raise CycleNotOver(f"cycle ends {self.cycle_end.isoformat()}, it is {at.isoformat()}")

    def roll_cycle(self, at: datetime, catalog: Catalog) -> None:
        """Close the open cycle at its end and open the next, applying scheduled changes."""
        require_aware(at)
        self.check_cycle_over(at)
        if self.closing is not None:
            self._close_period(self.cycle_end)  # a late-usage window never spans two cycles
        boundary = self.cycle_end
        changes: dict[str, Any] = {}
        status = self.status
        plan_id, period = self.plan_id, str(self.terms["period"])
        keep: str | None = None
        if status == "trialing":
            changes["trial_ended"] = True
            status = "active"
        if self.cancel_at is not None and boundary >= self.cancel_at:
            if catalog.free_plan is not None:
                changes["cancelled_to_free"] = catalog.free_plan
                plan_id, period = catalog.free_plan, "month"
                keep = None
            else:
                changes["cancelled"] = True
                status = "cancelled"
        elif self.scheduled_plan is not None:
            target = self.scheduled_plan["plan_id"]
            keep = self.scheduled_plan.get("keep_workspace")
            try:  # things may have changed since it was scheduled
                self.check_can_move_to(self._renewed_terms(target, period, catalog), keep,
                                       usage=False)
            except CommandRefused as refused:
                changes["downgrade_refused"] = {"to": target, "code": refused.code}
                keep = None
            else:
                changes["plan"] = {"from": plan_id, "to": target}
                plan_id = target
        if self.scheduled_period is not None and "cancelled_to_free" not in changes:
            changes["period"] = {"from": period, "to": self.scheduled_period}
            period = self.scheduled_period
        terms = self._renewed_terms(plan_id, period, catalog)
        if terms["plan_id"] != self.plan_id:
            changes.setdefault("plan", {"from": self.plan_id, "to": terms["plan_id"]})
        removed = sorted(a for a, v in self.addons.items() if v.get("remove_at") is not None
                         and datetime.fromisoformat(v["remove_at"]) <= boundary)
        if removed:
            changes["addons_removed"] = removed
        archived = self._workspaces_over_limit(terms, keep)
        seats = self._seats_for_next_period(terms)
        if seats != self.seats:
            changes["seats"] = {"from": self.seats, "to": seats}
        anchor, day = self.anchor, self.billing_day
        if changes.get("trial_ended") or "cancelled_to_free" in changes:
            anchor, day = boundary, boundary.day
        elif "period" in changes:
            anchor = boundary
        months = int(terms["period_months"])
        end = next_boundary(anchor, months, boundary, day)
        addons = {a: v for a, v in self.addons.items() if a not in removed}
        charges: list[Charge] = []
        if status != "cancelled":
            charges = period_charges(terms, seats, addons, self.members, boundary, end, catalog)
        self._cycle_rolled(
            closed_start=self.cycle_start, closed_end=boundary,
            closed_usage={m: str(q) for m, q in sorted(self.used.items())},
            cycle_start=boundary, cycle_end=end, status=status, terms=terms, changes=changes,
            seats=seats, archived_workspaces=archived, charges=charges, timestamp=boundary,
        )
        # Each archive is its own event too, as at any other time: a reader of
        # billing.events need not look inside CycleRolled for it.
        for workspace in archived:
            self._workspace_archived(workspace=workspace, timestamp=boundary)
        if self.commitment_end is not None and boundary >= self.commitment_end:
            self._agreement_renewed(agreement_end=self.commitment_end, renews=period,
                                    timestamp=boundary)

    @property
    def billing_day(self) -> int:
        return int(getattr(self, "anchor_day", self.anchor.day))

    def _renewed_terms(self, plan_id: str, period: str, catalog: Catalog) -> dict[str, Any]:
        """The current catalog's terms for the plan (a new price version applies from here);
        the old terms if the catalog no longer sells the plan for that period."""
        try:
            return plan_terms(catalog.plan(plan_id), period, catalog)
        except BillingError:
            if plan_id == self.plan_id and period == self.terms["period"]:
                return dict(self.terms)
            raise

    def _workspaces_over_limit(self, terms: dict[str, Any], keep: str | None) -> list[str]:
        limit = terms.get("limits", {}).get("workspaces")
        active = self.active_workspaces()
        if limit is None or len(active) <= limit:
            return []
        kept = [keep] if keep in active else []
        kept += [w for w in active if w not in kept][: max(limit - len(kept), 0)]
        return [w for w in active if w not in kept]

    def _seats_for_next_period(self, terms: dict[str, Any]) -> int | None:
        included = terms.get("included_seats")
        if included is None:
            return None
        return max(int(included), len(self.members))

    @event(CycleRolled)
    def _cycle_rolled(self, closed_start: datetime, closed_end: datetime,
                      closed_usage: dict[str, str], cycle_start: datetime, cycle_end: datetime,
                      status: str, terms: dict[str, Any], changes: dict[str, Any],
                      seats: int | None, archived_workspaces: list[str], charges: list[Charge],
                      timestamp: datetime) -> None:
        self._bill(charges)
        self.closing = {"start": closed_start.isoformat(), "end": closed_end.isoformat(),
                        "usage": dict(closed_usage),
                        "extra": {m: str(q) for m, q in self.extra.items()},
                        "allowances": self.terms["allowances"],
                        "trial": bool(changes.get("trial_ended"))}
        if changes.get("trial_ended") or "cancelled_to_free" in changes:
            self.anchor, self.anchor_day = cycle_start, cycle_start.day
        elif "period" in changes:
            self.anchor = cycle_start
        if changes.get("trial_ended"):
            self.trial_end = None
        if "cancelled_to_free" in changes or changes.get("cancelled"):
            self.cancel_at = None
            self.commitment_end = None
        self.status = status
        self.cycle_start, self.cycle_end = cycle_start, cycle_end
        self.terms = terms
        self._keep_only_capped_metrics()
        self._note_user_plan_lines(charges, reset=True)
        self.seats = seats
        self.used, self.extra = {}, {}  # no rollover; daily caps follow UTC days, not cycles
        self.scheduled_plan = None
        self.scheduled_period = None
        for addon in changes.get("addons_removed", []):
            self.addons.pop(addon, None)
        for workspace in archived_workspaces:
            self.workspaces[workspace] = "archived"
        allowed = set(self.features())
        self.features_active = [f for f in self.features_active if f in allowed]

    def _keep_only_capped_metrics(self) -> None:
        """A plan without a daily cap on a metric lifts that cap at once."""
        capped = {m for m, a in self.allowances.items() if "daily_cap" in a}
        self.daily_capped = [m for m in self.daily_capped if m in capped]

    @event(AgreementRenewed)
    def _agreement_renewed(self, agreement_end: datetime, renews: str,
                           timestamp: datetime) -> None:
        self.commitment_end = None

    def _close_period(self, at: datetime) -> None:
        closing = self.closing
        assert closing is not None
        start = datetime.fromisoformat(closing["start"])
        end = datetime.fromisoformat(closing["end"])
        charges: list[Charge] = []
        for metric, allowance in sorted(closing["allowances"].items()):
            if closing.get("trial"):
                break  # usage during a trial is free
            used = dec(closing["usage"].get(metric, "0"))
            extra = dec(closing["extra"].get(metric, "0"))
            charges.extend(overage_lines(metric, allowance, used, extra, start, end))
        self._usage_period_closed(period_start=start, period_end=end,
                                  usage=dict(closing["usage"]), charges=charges, timestamp=at)

    @event(UsagePeriodClosed)
    def _usage_period_closed(self, period_start: datetime, period_end: datetime,
                             usage: dict[str, str], charges: list[Charge],
                             timestamp: datetime) -> None:
        self._bill(charges)
        self.closing = None

    @event(DailyAllowanceReset)
    def _daily_allowance_reset(self, day: str, metrics: list[str], timestamp: datetime) -> None:
        self.daily_day = day
        self.daily_used = {}
        self.daily_capped = []

    # -------------------------------------------------------------------------- usage --

    def check_usage(self, item: UsageItem) -> None:
        if item.subscription != self.id:
            raise InvalidUsage(f"usage for {item.subscription!r} sent to {self.id!r}",
                               "wrong_subscription")
        if self.ended:
            raise CommandRefused(f"subscription {self.id} has ended", "subscription_ended")
        if item.at < self.cycle_start:
            closing = self.closing
            if closing is None or not (
                    datetime.fromisoformat(closing["start"]) <= item.at
                    < datetime.fromisoformat(closing["end"])):
                raise UsageTooLate(
                    f"usage at {item.at.isoformat()} is before the open cycle "
                    f"({self.cycle_start.isoformat()}) and its period is closed"
                )
            allowances = closing["allowances"]
        else:
            allowances = self.terms["allowances"]
        if item.workspace is not None and self.workspaces.get(item.workspace) == "archived":
            raise CommandRefused(f"workspace {item.workspace} is archived", "workspace_archived")
        if item.member is not None and item.member not in self.members \
                and self.counts_members:
            raise CommandRefused(f"{item.member!r} is not a member of {self.id} (never added, "
                                 "or its seat was released)", "not_a_member")
        if item.metric not in allowances:
            raise UnknownMetric(f"plan {self.plan_id} has no metric {item.metric!r}")

    def record_usage(self, items: Sequence[UsageItem], checked: bool = False) -> None:
        """Record accepted usage. Each item is checked (`check_usage`) unless the caller has
        just done so (`checked=True`, the batch path). Usage past a hard limit is recorded too
        (it happened) and reported by threshold events."""
        if not items:
            return
        if not checked:
            for item in items:
                self.check_usage(item)
        late = [i for i in items if i.at < self.cycle_start]
        current = [i for i in items if i.at >= self.cycle_start]
        if late:
            assert self.closing is not None
            self._late_usage_recorded(
                period_start=datetime.fromisoformat(self.closing["start"]),
                period_end=datetime.fromisoformat(self.closing["end"]),
                items=[i.as_record() for i in late], totals=metric_totals(late),
                timestamp=max(i.at for i in late))
        if not current:
            return
        if not self._has_daily_caps():
            self._record_current(current, capped=False)
            return
        for day, group in by_utc_day(current):  # each day's cap is judged on its own
            if self.daily_capped and self.daily_day is not None and day > self.daily_day:
                midnight = next_utc_midnight(self.daily_day)
                self._daily_allowance_reset(day=utc_day(midnight),
                                            metrics=list(self.daily_capped), timestamp=midnight)
            self._record_current(group, capped=True)

    def _record_current(self, items: list[UsageItem], capped: bool) -> None:
        totals = metric_totals(items)
        before = {metric: self.used.get(metric, ZERO) for metric in totals}
        daily_before = dict(self.daily_used) if capped else {}
        day_before = self.daily_day
        at = max(i.at for i in items)
        self.trigger_event(self.UsageRecorded, items=[i.as_record() for i in items],
                           totals=totals, timestamp=at)
        self._report_thresholds(before, at)
        if capped:
            self._report_daily_caps(daily_before, day_before, at)

    def _add_usage(self, items: list[dict[str, str]], totals: dict[str, str]) -> None:
        for metric, quantity in totals.items():
            self.used[metric] = self.used.get(metric, ZERO) + Decimal(quantity)
        if self._has_daily_caps():
            for item in items:
                day = utc_day(datetime.fromisoformat(item["at"]))
                if self.daily_day is None or day > self.daily_day:
                    self.daily_day, self.daily_used = day, {}
                if day == self.daily_day:
                    metric = item["metric"]
                    self.daily_used[metric] = (self.daily_used.get(metric, ZERO)
                                               + Decimal(item["quantity"]))

    @event(LateUsageRecorded)
    def _late_usage_recorded(self, period_start: datetime, period_end: datetime,
                             items: list[dict[str, str]], totals: dict[str, str],
                             timestamp: datetime) -> None:
        assert self.closing is not None
        usage = self.closing["usage"]
        for metric, quantity in totals.items():
            usage[metric] = str(dec(usage.get(metric, "0")) + Decimal(quantity))

    def _has_daily_caps(self) -> bool:
        return any("daily_cap" in a for a in self.terms["allowances"].values())

    def _report_thresholds(self, before: dict[str, Decimal], at: datetime) -> None:
        """`before`: the used units, before the usage just recorded, of the metrics it
        touched (in metric order)."""
        allowances = self.terms["allowances"]  # read only: no copy per metric and event
        for metric, old in before.items():
            used = self.used[metric]
            if used == old or metric not in allowances:
                continue
            limit = self.limit_of(metric)
            hard = allowances[metric]["limit"] == "hard"
            for threshold in self.terms.get("thresholds", [80, 100]):
                mark = limit * threshold / 100
                crossed = old < mark <= used if limit > 0 else (old == 0 and threshold == 100)
                if crossed:
                    self._quota_threshold_crossed(metric=metric, threshold=int(threshold),
                                                  used=str(used), limit=str(limit), hard=hard,
                                                  timestamp=at)

    def _report_daily_caps(self, before: dict[str, Decimal], day_before: str | None,
                           at: datetime) -> None:
        if self.daily_day is None:
            return
        if self.daily_day != day_before:
            before = {}
        for metric, used in sorted(self.daily_used.items()):
            cap = self.allowances.get(metric, {}).get("daily_cap")
            if cap is None or metric in self.daily_capped:
                continue
            if before.get(metric, ZERO) < dec(cap) <= used:
                self._daily_cap_reached(metric=metric, day=self.daily_day, cap=str(cap),
                                        used=str(used), timestamp=at)

    @event(QuotaThresholdCrossed)
    def _quota_threshold_crossed(self, metric: str, threshold: int, used: str, limit: str,
                                 hard: bool, timestamp: datetime) -> None:
        pass  # a notification for upstream services; the state already holds the usage

    @event(DailyCapReached)
    def _daily_cap_reached(self, metric: str, day: str, cap: str, used: str,
                           timestamp: datetime) -> None:
        self.daily_capped = sorted({*self.daily_capped, metric})

    # --------------------------------------------------------------------- plan changes --

    def change_plan(self, plan_id: str, at: datetime, catalog: Catalog,
                    keep_workspace: str | None = None) -> str:
        """Upgrade at once (prorated, or full price with a new cycle if the plan says so),
        downgrade at the next cycle. Returns "unchanged", "upgraded", "changed_in_trial" or
        "downgrade_scheduled"."""
        require_aware(at)
        self.check_not_ended()
        if plan_id == self.plan_id and self.scheduled_plan is None:
            return "unchanged"
        plan = catalog.plan(plan_id)
        if not plan.available:
            raise CommandRefused(f"plan {plan_id} is not available", "plan_unavailable")
        period = str(self.terms["period"])
        if period not in plan.prices:
            raise CommandRefused(f"plan {plan_id} is not sold per {period}", "period_not_offered")
        if plan_id == self.plan_id:  # back to the current plan: drop the scheduled change
            self._scheduled_change_cancelled(timestamp=at)
            return "scheduled_change_cancelled"
        terms = plan_terms(plan, period, catalog)
        if self.status == "trialing":
            self.check_can_move_to(terms, keep_workspace)
            self._plan_changed_in_trial(from_plan=self.plan_id, terms=terms, timestamp=at)
            return "changed_in_trial"
        if is_upgrade(self.terms, terms):
            self._upgrade(terms, at, catalog)
            return "upgraded"
        self.check_can_move_to(terms, keep_workspace)
        self._downgrade_scheduled(to_plan=plan_id, effective_at=self.cycle_end,
                                  keep_workspace=keep_workspace, timestamp=at)
        return "downgrade_scheduled"

    def check_not_ended(self) -> None:
        if self.ended:
            raise CommandRefused(f"subscription {self.id} has ended", "subscription_ended")

    def check_can_move_to(self, terms: dict[str, Any], keep_workspace: str | None,
                          usage: bool = True) -> None:
        """A move to a smaller plan is refused while the subscription uses more than it allows:
        this cycle's usage (unless the current plan waives that check: its usage resets when
        the downgrade applies anyway), active features, counted resources, workspaces."""
        if usage and self.terms.get("downgrade_usage_check", True):
            for metric, used in sorted(self.used.items()):
                allowance = terms["allowances"].get(metric)
                if allowance is None:
                    continue
                usable = dec(allowance["included"]) + self.extra.get(metric, ZERO)
                if used > usable:
                    raise CommandRefused(
                        f"{metric}: {used} used this cycle, plan {terms['plan_id']} allows "
                        f"{usable}", "usage_above_limit")
        available = set(terms.get("features", [])) | {
            f for a in self.addons.values() for f in a.get("features", [])}
        missing = sorted(set(self.features_active) - available)
        if missing:
            raise CommandRefused(f"active features not in plan {terms['plan_id']}: "
                                 f"{', '.join(missing)}", "feature_in_use")
        limits = terms.get("limits", {})
        in_use = {**self.counts, "members": len(self.members)}
        for name, value in sorted(in_use.items()):
            if name in limits and value > limits[name]:
                raise CommandRefused(f"{name}: {value} in use, plan {terms['plan_id']} allows "
                                     f"{limits[name]}", "limit_exceeded")
        active = self.active_workspaces()
        if keep_workspace is not None and keep_workspace not in active:
            raise CommandRefused(f"no active workspace {keep_workspace!r}", "unknown_workspace")
        workspace_limit = limits.get("workspaces")
        if workspace_limit is not None and len(active) > workspace_limit \
                and keep_workspace is None:
            raise CommandRefused(
                f"{len(active)} workspaces, plan {terms['plan_id']} allows {workspace_limit}: "
                "name the workspace to keep (the others are archived)",
                "workspace_choice_required")

    def _upgrade(self, terms: dict[str, Any], at: datetime, catalog: Catalog) -> None:
        old = self.terms
        cancelled = [name for name, pending in (("downgrade", self.scheduled_plan),
                                                ("cancellation", self.cancel_at)) if pending]
        if terms.get("upgrade_proration") == "full":
            if self.closing is not None:  # the new cycle ends the last one's late window
                self._close_period(at)
            end = add_months(at, int(terms["period_months"]))
            charges = period_charges(terms, self.seats, self.addons, self.members, at, end,
                                      catalog)
            self._plan_upgraded(from_plan=str(old["plan_id"]), terms=terms, charges=charges,
                                restarted_cycle=True, cycle_start=at, cycle_end=end,
                                closed_usage={m: str(q) for m, q in sorted(self.used.items())},
                                cancelled=cancelled, timestamp=at)
            return
        start, end = self.cycle_start, self.cycle_end
        terms = {**terms, "allowances": blended_allowances(old, terms, at, start, end)}
        charges = [
            prorated("proration_credit", f"Unused time on {old['plan_name']}", 1,
                     dec(old["price"]), at, start, end, credit=True),
            prorated("proration_charge", f"Remaining time on {terms['plan_name']}", 1,
                     dec(terms["price"]), at, start, end),
        ]
        extra_seats = self._extra_seats(old)
        if extra_seats and old.get("extra_seat_price") != terms.get("extra_seat_price"):
            if old.get("extra_seat_price") is not None:
                charges.append(prorated("proration_credit", "Unused time on extra seats",
                                        extra_seats, dec(old["extra_seat_price"]), at, start,
                                        end, credit=True))
            if terms.get("extra_seat_price") is not None:
                charges.append(prorated("proration_charge", "Remaining time on extra seats",
                                        extra_seats, dec(terms["extra_seat_price"]), at, start,
                                        end))
        self._plan_upgraded(from_plan=str(old["plan_id"]), terms=terms, charges=charges,
                            restarted_cycle=False, cycle_start=start, cycle_end=end,
                            closed_usage={}, cancelled=cancelled, timestamp=at)

    def _extra_seats(self, terms: dict[str, Any]) -> int:
        if self.seats is None or terms.get("included_seats") is None:
            return 0
        return max(self.seats - int(terms["included_seats"]), 0)

    @event(PlanUpgraded)
    def _plan_upgraded(self, from_plan: str, terms: dict[str, Any], charges: list[Charge],
                       restarted_cycle: bool, cycle_start: datetime, cycle_end: datetime,
                       closed_usage: dict[str, str], cancelled: list[str],
                       timestamp: datetime) -> None:
        self._bill(charges)
        if restarted_cycle:
            self.closing = {"start": self.cycle_start.isoformat(),
                            "end": cycle_start.isoformat(), "usage": dict(closed_usage),
                            "extra": {m: str(q) for m, q in self.extra.items()},
                            "allowances": self.terms["allowances"]}
            self.anchor, self.anchor_day = cycle_start, cycle_start.day
            self.used, self.extra = {}, {}
        self.cycle_start, self.cycle_end = cycle_start, cycle_end
        self.terms = terms
        self._keep_only_capped_metrics()
        self.scheduled_plan = None
        self.cancel_at = None

    @event(PlanChangedInTrial)
    def _plan_changed_in_trial(self, from_plan: str, terms: dict[str, Any],
                               timestamp: datetime) -> None:
        self.terms = terms
        if self.seats is not None and terms.get("included_seats") is not None:
            self.seats = max(self.seats, int(terms["included_seats"]))

    @event(DowngradeScheduled)
    def _downgrade_scheduled(self, to_plan: str, effective_at: datetime,
                             keep_workspace: str | None, timestamp: datetime) -> None:
        self.scheduled_plan = {"plan_id": to_plan, "keep_workspace": keep_workspace}

    @event(ScheduledChangeCancelled)
    def _scheduled_change_cancelled(self, timestamp: datetime) -> None:
        self.scheduled_plan = None

    def change_billing_period(self, period: str, at: datetime, catalog: Catalog) -> bool:
        require_aware(at)
        self.check_not_ended()
        if period not in PERIODS:
            raise CommandRefused(f"unknown billing period {period!r}", "unknown_period")
        if period == self.terms["period"] and self.scheduled_period is None:
            return False
        if self.cancel_at is not None:
            raise CommandRefused("a cancellation is scheduled: reactivate first",
                                 "cancellation_scheduled")
        plan = catalog.plan(self.scheduled_plan["plan_id"] if self.scheduled_plan
                            else self.plan_id)
        if period not in plan.prices:
            raise CommandRefused(f"plan {plan.id} is not sold per {period}", "period_not_offered")
        self._billing_period_change_scheduled(period=period, effective_at=self.cycle_end,
                                              timestamp=at)
        return True

    @event(BillingPeriodChangeScheduled)
    def _billing_period_change_scheduled(self, period: str, effective_at: datetime,
                                         timestamp: datetime) -> None:
        self.scheduled_period = None if period == self.terms["period"] else period

    # ------------------------------------------------------------------------ cancel --

    def cancel(self, at: datetime, catalog: Catalog) -> bool:
        """Service continues to the end of the paid period (or of the agreement, if later);
        then the Free plan, keeping projects and workspaces."""
        require_aware(at)
        self.check_not_ended()
        if self.cancel_at is not None:
            return False
        if catalog.free_plan is not None and self.plan_id == catalog.free_plan:
            raise CommandRefused("the Free plan has nothing to cancel", "already_free")
        effective = self.cycle_end
        if self.commitment_end is not None and self.commitment_end > effective:
            effective = self.commitment_end
        self._cancellation_scheduled(effective_at=effective, timestamp=at)
        return True

    @event(CancellationScheduled)
    def _cancellation_scheduled(self, effective_at: datetime, timestamp: datetime) -> None:
        self.cancel_at = effective_at

    def reactivate(self, at: datetime) -> None:
        require_aware(at)
        if self.cancel_at is None or at >= self.cancel_at:
            raise CommandRefused("no cancellation to withdraw", "not_cancelling")
        self._cancellation_withdrawn(timestamp=at)

    @event(CancellationWithdrawn)
    def _cancellation_withdrawn(self, timestamp: datetime) -> None:
        self.cancel_at = None

    # ------------------------------------------------------------------ seats, members --

    def add_seats(self, count: int, at: datetime) -> None:
        require_aware(at)
        self.check_not_ended()
        if count < 1:
            raise CommandRefused("add at least one seat", "invalid_quantity")
        price = self.terms.get("extra_seat_price")
        if self.seats is None or price is None:
            raise CommandRefused(f"plan {self.plan_id} sells no extra seats",
                                 "seats_not_for_sale")
        charges = [] if self.status == "trialing" else [
            prorated("seats", "Extra seats", count, dec(price), at, self.cycle_start,
                     self.cycle_end)]
        self._seats_added(count=count, seats=self.seats + count, charges=charges, timestamp=at)

    @event(SeatsAdded)
    def _seats_added(self, count: int, seats: int, charges: list[Charge],
                     timestamp: datetime) -> None:
        self._bill(charges)
        self.seats = seats

    @property
    def counts_members(self) -> bool:
        """Whether this subscription's plan is sold by seats or limits its members, or it has
        members: then usage attributed to someone who is not a member is refused."""
        return (self.terms.get("included_seats") is not None
                or "members" in self.terms.get("limits", {}) or bool(self.members))

    def check_member_can_join(self, member: str) -> None:
        if member in self.members:
            raise CommandRefused(f"{member} is already a member", "member_exists")
        limit = self.terms.get("limits", {}).get("members")
        if limit is not None and len(self.members) >= limit:
            raise CommandRefused(f"plan {self.plan_id} allows {limit} members",
                                 "member_limit_reached")
        if self.seats is not None and len(self.members) >= self.seats:
            raise CommandRefused(f"all {self.seats} seats are taken: add seats first",
                                 "no_free_seat")

    def add_member(self, member: str, at: datetime) -> None:
        require_aware(at)
        self.check_not_ended()
        self.check_member_can_join(member)
        self._member_added(member=member, timestamp=at)

    @event(MemberAdded)
    def _member_added(self, member: str, timestamp: datetime) -> None:
        self.members[member] = {}

    def release_seat(self, member: str, at: datetime) -> None:
        require_aware(at)
        if member not in self.members:
            raise CommandRefused(f"{member} is not a member", "unknown_member")
        self._seat_released(member=member, timestamp=at)

    @event(SeatReleased)
    def _seat_released(self, member: str, timestamp: datetime) -> None:
        self.members.pop(member, None)

    def assign_user_plan(self, member: str, solution: str, level: str, at: datetime,
                         catalog: Catalog, switch: bool = False) -> bool:
        """At most one level per solution for each member; a member may hold several
        solutions. A new plan is charged for the rest of the period; a switch of level
        credits the old level's rest and charges the new one's."""
        require_aware(at)
        self.check_not_ended()
        if not self.terms.get("user_plans"):
            raise CommandRefused(f"plan {self.plan_id} has no user plans",
                                 "user_plans_not_offered")
        monthly = catalog.user_plan_monthly_price(solution, level)
        held = self.members.get(member, {})
        current = held.get(solution)
        if current == level:
            return False
        if current is not None and not switch:
            raise CommandRefused(f"{member} already holds {solution}-{current}: one level per "
                                 "solution (switch to change it)", "one_level_per_solution")
        if member not in self.members:
            self.check_member_can_join(member)
        months = int(self.terms["period_months"])
        paid = self.user_plans_paid()
        charges: list[Charge] = []
        if self.status != "trialing":
            old_key = f"{member}/{solution}/{current}"
            if current is not None and old_key in paid:  # credit what was paid, at its price
                charges.append(prorated("proration_credit", f"Unused {solution}-{current}", 1,
                                        dec(paid[old_key]) * months, at, self.cycle_start,
                                        self.cycle_end, credit=True, member=member,
                                        solution=solution, level=current))
            if f"{member}/{solution}/{level}" not in paid:  # not already paid this period
                charges.append(prorated("user_plan", f"{solution}-{level} for {member}", 1,
                                        monthly * months, at, self.cycle_start, self.cycle_end,
                                        member=member, solution=solution, level=level))
        self._user_plan_assigned(member=member, solution=solution, level=level,
                                 replaced_level=current, charges=charges, timestamp=at)
        return True

    @event(UserPlanAssigned)
    def _user_plan_assigned(self, member: str, solution: str, level: str,
                            replaced_level: str | None, charges: list[Charge],
                            timestamp: datetime) -> None:
        self._bill(charges)
        self.members.setdefault(member, {})[solution] = level
        self._note_user_plan_lines(charges)

    def user_plans_paid(self) -> dict[str, str]:
        """"member/solution/level" -> monthly price, for the user plans paid this period."""
        return dict(getattr(self, "user_plan_paid", {}))

    def _note_user_plan_lines(self, charges: list[Charge], reset: bool = False) -> None:
        paid = {} if reset else self.user_plans_paid()
        months = int(self.terms["period_months"])
        for line in charges:
            if "solution" not in line:
                continue
            key = f"{line['member']}/{line['solution']}/{line['level']}"
            if line["kind"] == "user_plan":
                paid[key] = str(dec(line["unit_price"]) / months)
            elif line["kind"] == "proration_credit":
                paid.pop(key, None)
        self.user_plan_paid = paid

    def unassign_user_plan(self, member: str, solution: str, at: datetime) -> None:
        """No credit: the plan stays paid to the end of the period (re-assigning it in the same
        period costs nothing more)."""
        require_aware(at)
        self.check_not_ended()
        level = self.members.get(member, {}).get(solution)
        if level is None:
            raise CommandRefused(f"{member} holds no {solution} plan", "not_assigned")
        self._user_plan_unassigned(member=member, solution=solution, level=level, timestamp=at)

    @event(UserPlanUnassigned)
    def _user_plan_unassigned(self, member: str, solution: str, level: str,
                              timestamp: datetime) -> None:
        self.members.get(member, {}).pop(solution, None)

    # ------------------------------------------------------------------ packs, add-ons --

    def buy_pack(self, pack_id: str, at: datetime, catalog: Catalog) -> None:
        """Immediate: the units are usable at once and expire at the end of this cycle."""
        require_aware(at)
        self.check_not_ended()
        pack = catalog.pack(pack_id)
        if pack.metric not in self.allowances:
            raise CommandRefused(f"pack {pack_id} is for {pack.metric}, which plan "
                                 f"{self.plan_id} does not meter", "pack_not_applicable")
        charges = [charge("pack", pack.name, 1, pack.price, pack.price, at, self.cycle_end)]
        self._pack_purchased(pack_id=pack_id, metric=pack.metric, quantity=str(pack.quantity),
                             charges=charges, timestamp=at)

    @event(PackPurchased)
    def _pack_purchased(self, pack_id: str, metric: str, quantity: str, charges: list[Charge],
                        timestamp: datetime) -> None:
        self._bill(charges)
        self.extra[metric] = self.extra.get(metric, ZERO) + Decimal(quantity)

    def add_addon(self, addon_id: str, at: datetime, catalog: Catalog) -> bool:
        require_aware(at)
        self.check_not_ended()
        addon = catalog.addon(addon_id)
        if addon_id in self.addons and self.addons[addon_id].get("remove_at") is None:
            return False
        months = int(self.terms["period_months"])
        charges = [] if self.status == "trialing" or addon_id in self.addons else [
            prorated("addon", addon.name, 1, addon.monthly_price * months, at,
                     self.cycle_start, self.cycle_end, addon=addon_id)]
        self._addon_added(addon_id=addon_id, name=addon.name,
                          monthly_price=str(addon.monthly_price), features=list(addon.features),
                          charges=charges, timestamp=at)
        return True

    @event(AddOnAdded)
    def _addon_added(self, addon_id: str, name: str, monthly_price: str, features: list[str],
                     charges: list[Charge], timestamp: datetime) -> None:
        self._bill(charges)
        self.addons[addon_id] = {"name": name, "monthly_price": monthly_price,
                                 "features": features, "remove_at": None}

    def remove_addon(self, addon_id: str, at: datetime) -> bool:
        """Paid to the end of the period: the add-on is removed when the cycle rolls."""
        require_aware(at)
        self.check_not_ended()
        if addon_id not in self.addons:
            raise CommandRefused(f"add-on {addon_id} is not active", "addon_not_active")
        if self.addons[addon_id].get("remove_at") is not None:
            return False
        self._addon_removal_scheduled(addon_id=addon_id, effective_at=self.cycle_end,
                                      timestamp=at)
        return True

    @event(AddOnRemovalScheduled)
    def _addon_removal_scheduled(self, addon_id: str, effective_at: datetime,
                                 timestamp: datetime) -> None:
        self.addons[addon_id]["remove_at"] = effective_at.isoformat()

    # ------------------------------------------------------- workspaces, features, counts --

    def create_workspace(self, workspace: str, at: datetime) -> None:
        require_aware(at)
        self.check_not_ended()
        if workspace in self.workspaces:
            raise CommandRefused(f"workspace {workspace} exists", "workspace_exists")
        limit = self.terms.get("limits", {}).get("workspaces")
        if limit is not None and len(self.active_workspaces()) >= limit:
            raise CommandRefused(f"plan {self.plan_id} allows {limit} workspace(s)",
                                 "workspace_limit_reached")
        self._workspace_created(workspace=workspace, timestamp=at)

    @event(WorkspaceCreated)
    def _workspace_created(self, workspace: str, timestamp: datetime) -> None:
        self.workspaces[workspace] = "active"

    def archive_workspace(self, workspace: str, at: datetime) -> None:
        require_aware(at)
        if self.workspaces.get(workspace) != "active":
            raise CommandRefused(f"no active workspace {workspace}", "unknown_workspace")
        self._workspace_archived(workspace=workspace, timestamp=at)

    @event(WorkspaceArchived)
    def _workspace_archived(self, workspace: str, timestamp: datetime) -> None:
        self.workspaces[workspace] = "archived"

    def activate_feature(self, feature: str, at: datetime) -> bool:
        require_aware(at)
        if feature not in self.features():
            raise CommandRefused(f"plan {self.plan_id} has no feature {feature}",
                                 "feature_not_in_plan")
        if feature in self.features_active:
            return False
        self._feature_activated(feature=feature, timestamp=at)
        return True

    @event(FeatureActivated)
    def _feature_activated(self, feature: str, timestamp: datetime) -> None:
        self.features_active = sorted({*self.features_active, feature})

    def deactivate_feature(self, feature: str, at: datetime) -> bool:
        require_aware(at)
        if feature not in self.features_active:
            return False
        self._feature_deactivated(feature=feature, timestamp=at)
        return True

    @event(FeatureDeactivated)
    def _feature_deactivated(self, feature: str, timestamp: datetime) -> None:
        self.features_active = [f for f in self.features_active if f != feature]

    def report_count(self, name: str, value: int, at: datetime) -> bool:
        """A resource counted by the upstream service (e.g. assistants), checked on downgrade."""
        require_aware(at)
        if value < 0:
            raise CommandRefused("a count is >= 0", "invalid_quantity")
        if self.counts.get(name) == value:
            return False
        self._count_reported(name=name, value=value, timestamp=at)
        return True

    @event(CountReported)
    def _count_reported(self, name: str, value: int, timestamp: datetime) -> None:
        self.counts[name] = value

    # ----------------------------------------------------------------------- profile --

    def update_profile(self, template: str | None, integrations: list[str],
                       at: datetime) -> bool:
        require_aware(at)
        current = getattr(self, "profile", {})
        if current == {"template": template, "integrations": sorted(integrations)}:
            return False
        self._profile_updated(template=template, integrations=sorted(integrations),
                              timestamp=at)
        return True

    @event(ProfileUpdated)
    def _profile_updated(self, template: str | None, integrations: list[str],
                         timestamp: datetime) -> None:
        self.profile = {"template": template, "integrations": integrations}

    # ---------------------------------------------------------------------- invoices --

    def _bill(self, charges: list[Charge]) -> None:
        if charges:
            version = self.version + 1  # applied before the library advances the version
            self.uninvoiced = [*getattr(self, "uninvoiced", []),
                               *({**c, "event_version": version} for c in charges)]

    # When a charge is invoiced, by the kind of event that made it. The cycle's invoice comes
    # when its usage closes (in-advance charges of the new period and the closed period's
    # overage together); a subscription's first period and one-off purchases are invoiced when
    # made; a change within a period (upgrade, seats, user plans, add-ons) per the plan's
    # `change_invoicing`, except that one charging whole periods (made as a period starts,
    # such as user plans assigned on subscribing) opens that period and is invoiced at once.
    # Lines not invoiced by their own event go on the next invoice.
    INVOICED_WHEN_MADE = frozenset({"UsagePeriodClosed", "Subscribed", "PackPurchased"})
    INVOICED_PER_PLAN = frozenset({"PlanUpgraded", "SeatsAdded", "UserPlanAssigned",
                                   "AddOnAdded"})
    INVOICE_TRIGGERS = INVOICED_WHEN_MADE | INVOICED_PER_PLAN

    def invoices_on(self, kind: str, version: int) -> bool:
        """Whether the event of this kind at this version issues an invoice of the lines due
        (if any)."""
        if kind in self.INVOICED_WHEN_MADE:
            return True
        if kind not in self.INVOICED_PER_PLAN:
            return False
        if self.terms.get("change_invoicing", "now") == "now":
            return True
        made = [c for c in self.uninvoiced if c["event_version"] == version]
        return bool(made) and all(Decimal(c.get("fraction", 1)) == 1 for c in made)

    def lines_due(self, trigger_version: int) -> list[Charge]:
        return [c for c in self.uninvoiced if c["event_version"] <= trigger_version]

    def update_customer(self, fields: dict[str, Any], at: datetime) -> bool:
        """Billing details for the next invoices (issued ones never change)."""
        require_aware(at)
        customer = {**self.customer, **customer_details(fields)}
        if customer == self.customer:
            return False
        self._customer_updated(customer=customer, timestamp=at)
        return True

    @event(CustomerUpdated)
    def _customer_updated(self, customer: dict[str, Any], timestamp: datetime) -> None:
        self.customer = customer

    def check_invoice_due(self, trigger_version: int) -> None:
        if trigger_version <= self.invoiced_through:
            raise CommandRefused("already invoiced through this event", "already_invoiced")
        if not self.lines_due(trigger_version):
            raise CommandRefused("no charges to invoice", "nothing_to_invoice")

    def preview_invoice(self, issuer: dict[str, Any], at: datetime,
                        through_version: int | None = None) -> dict[str, Any]:
        """The draft as it would be issued at `at` (no number): a dry run. An invoice holds
        the lines of the events up to its trigger, however late the invoicer runs."""
        lines = self.lines_due(self.version if through_version is None else through_version)
        return build_invoice(number=None, subscription=self.id, account=self.account,
                             customer=self.customer, issuer=issuer,
                             currency=str(self.terms["currency"]), lines=lines, issued_at=at)

    def issue_invoice(self, number: str, issuer: dict[str, Any], trigger_version: int,
                      at: datetime, draft: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finalize the draft: every uninvoiced line, with tax, under a number drawn from the
        issuer's gapless series. `draft` is `preview_invoice(issuer, at, trigger_version)`
        made earlier on this same state (so it can be drafted before a number is drawn)."""
        require_aware(at)
        self.check_invoice_due(trigger_version)
        if draft is None:
            draft = self.preview_invoice(issuer, at, trigger_version)
        document = {**draft, "number": number}
        self._invoice_issued(document=document, invoiced_through=trigger_version, timestamp=at)
        return document

    @event(InvoiceIssued)
    def _invoice_issued(self, document: dict[str, Any], invoiced_through: int,
                        timestamp: datetime) -> None:
        self.uninvoiced = [c for c in self.uninvoiced if c["event_version"] > invoiced_through]
        self.invoiced_through = invoiced_through
        self.invoices[document["number"]] = {"total": document["total"], "status": "issued",
                                             "kind": "invoice", "document": document}

    def void_invoice(self, number: str, at: datetime) -> None:
        """A void invoice keeps its number; it is simply no longer owed."""
        require_aware(at)
        invoice = self.invoices.get(number)
        if invoice is None or invoice["kind"] != "invoice":
            raise CommandRefused(f"no invoice {number} on {self.id}", "unknown_invoice")
        if invoice["status"] in ("void", "paid", "credited"):
            raise CommandRefused(f"invoice {number} is {invoice['status']}: issue a credit note"
                                 if invoice["status"] == "paid" else
                                 f"invoice {number} is {invoice['status']}", "invoice_closed")
        self._invoice_voided(number=number, timestamp=at)

    @event(InvoiceVoided)
    def _invoice_voided(self, number: str, timestamp: datetime) -> None:
        self.invoices[number]["status"] = "void"

    def issue_credit_note(self, invoice_number: str, number: str, issuer: dict[str, Any],
                          at: datetime) -> dict[str, Any]:
        """A correction of an issued invoice: a document of its own, with its own number,
        referencing the invoice and crediting it in full."""
        require_aware(at)
        invoice = self.invoices.get(invoice_number)
        if invoice is None or invoice["kind"] != "invoice":
            raise CommandRefused(f"no invoice {invoice_number} on {self.id}", "unknown_invoice")
        if invoice["status"] in ("void", "credited"):
            raise CommandRefused(f"invoice {invoice_number} is {invoice['status']}",
                                 "invoice_closed")
        original = invoice["document"]
        document = build_invoice(
            number=number, subscription=self.id, account=self.account,
            customer={**self.customer, **{k: original["buyer"][k] for k in
                                          ("country", "vat_id", "business")}},
            issuer=issuer, currency=original["currency"], lines=credit_lines(original),
            issued_at=at, kind="credit_note", references=invoice_number)
        self._credit_note_issued(document=document, timestamp=at)
        return document

    @event(CreditNoteIssued)
    def _credit_note_issued(self, document: dict[str, Any], timestamp: datetime) -> None:
        self.invoices[document["references"]]["status"] = "credited"
        self.invoices[document["number"]] = {"total": document["total"], "status": "issued",
                                             "kind": "credit_note"}

    # ---------------------------------------------------------------------- payments --

    def record_payment(self, reference: str, outcome: str, amount: Decimal, at: datetime,
                       reason: str | None = None) -> None:
        """The processor's outcome for a charge (card data never reaches the engine)."""
        require_aware(at)
        if outcome == "succeeded":
            self._payment_succeeded(reference=reference, amount=str(amount), timestamp=at)
            return
        if outcome != "failed":
            raise CommandRefused(f"outcome is succeeded or failed, not {outcome!r}",
                                 "invalid_outcome")
        if reason not in PAYMENT_FAILURE_REASONS:
            raise CommandRefused(f"failure reason must be one of {PAYMENT_FAILURE_REASONS}",
                                 "invalid_reason")
        attempt = self.payment_attempts.get(reference, 0) + 1
        retry = (at + timedelta(days=PAYMENT_RETRY_DAYS[attempt - 1])
                 if attempt <= len(PAYMENT_RETRY_DAYS) else None)
        self._payment_failed(reference=reference, amount=str(amount), reason=reason,
                             attempt=attempt, next_retry_at=retry, timestamp=at)

    @event(PaymentSucceeded)
    def _payment_succeeded(self, reference: str, amount: str, timestamp: datetime) -> None:
        self.payment_attempts.pop(reference, None)
        if reference in getattr(self, "invoices", {}):
            self.invoices[reference]["status"] = "paid"
        if not self.payment_attempts:
            self.payment_state = "ok"

    @event(PaymentFailed)
    def _payment_failed(self, reference: str, amount: str, reason: str, attempt: int,
                        next_retry_at: datetime | None, timestamp: datetime) -> None:
        self.payment_attempts[reference] = attempt
        if reference in getattr(self, "invoices", {}):
            self.invoices[reference]["status"] = "payment_failed"
        self.payment_state = "retrying" if next_retry_at is not None else "past_due"




keep_topics("domain.subscription", Subscription)
