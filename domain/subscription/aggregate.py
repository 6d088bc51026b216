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

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    event,
)

from domain.billing.calendar import first_boundary, first_period
from domain.billing.charges import Charge
from domain.billing.overrides import checked_overrides, with_overrides
from domain.billing.pricing import (
    ZERO,
    dec,
    period_charges,
    plan_terms,
)
from domain.catalog.model import PERIOD_NAMES, Catalog
from domain.shared.errors import (
    CommandRefused,
    UnknownMetric,
)
from domain.shared.events import DomainEvent, Snapshot
from domain.shared.periods import length_of, require_aware
from domain.shared.shared_values import shared
from domain.shared.topics import keep_topics
from domain.subscription import (
    coupons,
    credits,
    cycles,
    events,
    extras,
    invoicing,
    metering,
    pausing,
    plan_changes,
    seats,
    termination,
    unit_credits,
)
from domain.subscription.customer import customer_details
from domain.subscription.cycles import commitment_end
from domain.subscription.seats import check_seat_count

# When a subscription may start: every date computed from it (trials, agreements, periods far
# ahead) stays within the years a datetime holds.
FIRST_YEAR, LAST_YEAR = 1970, 9000


class Subscription(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent
    # State set only by appliers in the concern modules (declared here for the type checker).
    profile: dict[str, Any]
    user_plan_paid: dict[str, str]
    # The open cycle's fees of percentage-priced metrics (metric -> exact sum, as text); absent
    # from subscriptions (and snapshots) that never had one: read with getattr.
    cycle_fees: dict[str, str]
    # The open cycle's meters of metrics not summed (domain/subscription/measures.py); absent
    # likewise: read with `meters_now`.
    meters: dict[str, dict[str, Any]]
    # What metrics billed on use have been charged in the open cycle (metric -> amount, as
    # text); absent likewise: read with getattr.
    advance_billed: dict[str, str]
    # A termination's refund not yet issued as a credit note (termination.py); absent likewise.
    refund_due: list[dict[str, Any]] | None
    terminated_at: datetime
    pause_at: datetime | None  # a pause scheduled for the period's end (pausing.py); absent
    pending_overrides: dict[str, Any] | None  # prices agreed from the next period; absent
    coupons_redeemed: list[str]  # every coupon this subscription has redeemed; absent
    # The active coupon (domain/subscription/coupons.py); absent likewise.
    coupon: dict[str, Any] | None
    # Prepaid credits and the automatic top-up (domain/subscription/credits.py); absent likewise.
    credit_grants: list[dict[str, Any]]
    auto_top_up: dict[str, str] | None
    # Unit credits (domain/subscription/unit_credits.py); absent likewise.
    unit_grants: list[dict[str, Any]]
    unit_grants_made: int  # grant ids count on from it (spent grants leave the list)

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
    UsageCharged = events.UsageCharged
    CouponApplied = events.CouponApplied
    Terminated = events.Terminated
    PauseScheduled = events.PauseScheduled
    PauseWithdrawn = events.PauseWithdrawn
    Paused = events.Paused
    Resumed = events.Resumed
    PriceOverridesScheduled = events.PriceOverridesScheduled
    CreditsGranted = events.CreditsGranted
    UnitsGranted = events.UnitsGranted
    UnitsDrawn = events.UnitsDrawn
    UnitsExpired = events.UnitsExpired
    AutoTopUpConfigured = events.AutoTopUpConfigured
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
        self.terms = shared(terms)
        self.status = status
        self.started_at = cycle_start
        # Anniversary billing counts periods from the start; after a trial, or a calendar
        # subscription's shorter first period, from that first period's end.
        whole = length_of(terms).after(cycle_start) == cycle_end
        self.anchor = cycle_start if trial_end is None and whole else cycle_end
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

    def restored(self) -> None:
        """From a snapshot: its plan terms shared with the other subscriptions holding equal
        ones, as an event's are (domain.shared.shared_values); the closed cycle's allowances too,
        which an event takes from the terms."""
        self.terms = shared(self.terms)
        if self.closing is not None and "allowances" in self.closing:
            self.closing["allowances"] = shared(self.closing["allowances"])

    @classmethod
    def subscribe(cls, subscription_id: str, account: str, plan_id: str, catalog: Catalog,
                  at: datetime, *, period: str = "month", trial: bool = False,
                  seats: int | None = None, customer: dict[str, Any] | None = None,
                  overrides: dict[str, Any] | None = None,
                  billing_day: int | None = None) -> Subscription:
        require_aware(at)
        if period not in PERIOD_NAMES:
            raise CommandRefused(f"unknown billing period {period!r}", "unknown_period")
        if not FIRST_YEAR <= at.astimezone(UTC).year <= LAST_YEAR:
            raise CommandRefused(f"a subscription starts between {FIRST_YEAR} and {LAST_YEAR}",
                                 "invalid_timestamp")
        plan = catalog.plan(plan_id)
        plan.check_offered(at, customer_details(customer).get("country"),
                           deal=overrides is not None)
        terms = plan_terms(plan, period, catalog)
        if overrides is not None:  # a deal: "contact us for custom pricing"
            terms = with_overrides(terms, checked_overrides(overrides, terms))
        if seats is not None and plan.included_seats is None:
            raise CommandRefused(f"plan {plan_id} has no seats", "seats_not_for_sale")
        seat_count = plan.included_seats if seats is None else seats
        if seat_count is not None:
            check_seat_count(seat_count)
        if seat_count is not None and plan.included_seats is not None:
            if seat_count < plan.included_seats:
                seat_count = plan.included_seats
            if seat_count > plan.included_seats and plan.extra_seat_monthly_price is None:
                raise CommandRefused(f"plan {plan_id} sells no extra seats", "seats_not_for_sale")
        if trial and billing_day is not None:
            raise CommandRefused("a trial bills from its end: no billing_day with it",
                                 "invalid_billing_day")
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
        end = length_of(terms).after(at)
        charges = period_charges(terms, seat_count, {}, {}, at, end, catalog)
        if billing_day is not None:  # calendar billing: a prorated first period
            end = first_boundary(at, billing_day, length_of(terms))
            terms, charges = first_period(
                terms, period_charges(terms, seat_count, {}, {}, at, end, catalog), at, end)
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

    def accepts_until(self, at: datetime) -> datetime:
        """Until when usage timed `at` (accepted now: in the open cycle, or late in the last
        one) could still be accepted: its cycle's end plus the grace window. Past it, the same
        usage is refused as too late, so its id may leave the ledger."""
        if at >= self.cycle_start or self.closing is None:
            return self.cycle_end + self.grace
        return datetime.fromisoformat(self.closing["end"]) + self.grace

    def limit_of(self, metric: str) -> Decimal:
        """Usable units this cycle: included plus packs, plus unit credits not drawn yet."""
        return dec(self.terms["allowances"][metric]["included"]) + self.extra.get(metric, ZERO) \
            + self.unit_balance_now(metric)

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
    # in domain/subscription/cycles.py
    next_due = cycles.next_due
    advance_to = cycles.advance_to
    time_limit = cycles.time_limit
    check_not_too_far_ahead = cycles.check_not_too_far_ahead
    check_cycle_over = cycles.check_cycle_over
    roll_cycle = cycles.roll_cycle
    billing_day = property(cycles.billing_day)
    _renewed_terms = cycles._renewed_terms
    _workspaces_over_limit = cycles._workspaces_over_limit
    _seats_for_next_period = cycles._seats_for_next_period
    _cycle_rolled = event(CycleRolled)(cycles._cycle_rolled)
    _keep_only_capped_metrics = cycles._keep_only_capped_metrics
    _agreement_renewed = event(AgreementRenewed)(cycles._agreement_renewed)
    _close_period = cycles._close_period
    _open_closing = cycles._open_closing
    _usage_period_closed = event(UsagePeriodClosed)(cycles._usage_period_closed)
    _daily_allowance_reset = event(DailyAllowanceReset)(cycles._daily_allowance_reset)

    # -------------------------------------------------------------------------- usage --
    # in domain/subscription/metering.py
    check_usage = metering.check_usage
    record_usage = metering.record_usage
    refuses_daily = metering.refuses_daily
    _record_current = metering._record_current
    _add_usage = metering._add_usage
    meters_now = metering.meters_now
    _closed_usage = metering._closed_usage
    _start_measures = metering._start_measures
    _late_usage_recorded = event(LateUsageRecorded)(metering._late_usage_recorded)
    _has_daily_caps = metering._has_daily_caps
    _report_thresholds = metering._report_thresholds
    _report_daily_caps = metering._report_daily_caps
    _quota_threshold_crossed = event(QuotaThresholdCrossed)(metering._quota_threshold_crossed)
    _daily_cap_reached = event(DailyCapReached)(metering._daily_cap_reached)
    _charge_on_use = metering._charge_on_use
    _usage_charges_so_far = metering._usage_charges_so_far
    _usage_charged = event(UsageCharged)(metering._usage_charged)

    # --------------------------------------------------------------------- plan changes --
    # in domain/subscription/plan_changes.py
    change_plan = plan_changes.change_plan
    _change_plan = plan_changes._change_plan
    _drop_unsold_period = plan_changes._drop_unsold_period
    check_not_ended = plan_changes.check_not_ended
    check_can_move_to = plan_changes.check_can_move_to
    _upgrade = plan_changes._upgrade
    override_prices = plan_changes.override_prices
    member_features = extras.member_features
    _price_overrides_scheduled = event(PriceOverridesScheduled)(
        plan_changes._price_overrides_scheduled)
    change_plan_and_period = plan_changes.change_plan_and_period
    _switch_period_now = plan_changes._switch_period_now
    _extra_seats = plan_changes._extra_seats
    _plan_upgraded = event(PlanUpgraded)(plan_changes._plan_upgraded)
    _plan_changed_in_trial = event(PlanChangedInTrial)(plan_changes._plan_changed_in_trial)
    _downgrade_scheduled = event(DowngradeScheduled)(plan_changes._downgrade_scheduled)
    _scheduled_change_cancelled = event(ScheduledChangeCancelled)(
        plan_changes._scheduled_change_cancelled)
    change_billing_period = plan_changes.change_billing_period
    _billing_period_change_scheduled = event(BillingPeriodChangeScheduled)(
        plan_changes._billing_period_change_scheduled)

    # ------------------------------------------------------------------------ cancel --
    # in domain/subscription/plan_changes.py
    cancel = plan_changes.cancel
    _cancellation_scheduled = event(CancellationScheduled)(plan_changes._cancellation_scheduled)
    reactivate = plan_changes.reactivate
    _cancellation_withdrawn = event(CancellationWithdrawn)(plan_changes._cancellation_withdrawn)

    # ------------------------------------------------------------------ seats, members --
    # in domain/subscription/seats.py
    add_seats = seats.add_seats
    _seats_added = event(SeatsAdded)(seats._seats_added)
    counts_members = property(seats.counts_members)
    check_member_can_join = seats.check_member_can_join
    add_member = seats.add_member
    _member_added = event(MemberAdded)(seats._member_added)
    release_seat = seats.release_seat
    _seat_released = event(SeatReleased)(seats._seat_released)
    assign_user_plan = seats.assign_user_plan
    _user_plan_assigned = event(UserPlanAssigned)(seats._user_plan_assigned)
    user_plans_paid = seats.user_plans_paid
    _note_user_plan_lines = seats._note_user_plan_lines
    unassign_user_plan = seats.unassign_user_plan
    _user_plan_unassigned = event(UserPlanUnassigned)(seats._user_plan_unassigned)

    # ------------------------------------------------------------------ packs, add-ons --
    # in domain/subscription/extras.py
    buy_pack = extras.buy_pack
    _pack_purchased = event(PackPurchased)(extras._pack_purchased)
    add_addon = extras.add_addon
    _addon_added = event(AddOnAdded)(extras._addon_added)
    remove_addon = extras.remove_addon
    _addon_removal_scheduled = event(AddOnRemovalScheduled)(extras._addon_removal_scheduled)

    # ------------------------------------------------------- workspaces, features, counts --
    # in domain/subscription/extras.py
    create_workspace = extras.create_workspace
    _workspace_created = event(WorkspaceCreated)(extras._workspace_created)
    archive_workspace = extras.archive_workspace
    _workspace_archived = event(WorkspaceArchived)(extras._workspace_archived)
    activate_feature = extras.activate_feature
    _feature_activated = event(FeatureActivated)(extras._feature_activated)
    deactivate_feature = extras.deactivate_feature
    _feature_deactivated = event(FeatureDeactivated)(extras._feature_deactivated)
    report_count = extras.report_count
    _count_reported = event(CountReported)(extras._count_reported)

    # ----------------------------------------------------------------------- profile --
    # in domain/subscription/extras.py
    update_profile = extras.update_profile
    _profile_updated = event(ProfileUpdated)(extras._profile_updated)

    # ---------------------------------------------------------------------- invoices --
    # in domain/subscription/invoicing.py
    _bill = invoicing._bill
    invoices_on = invoicing.invoices_on
    lines_due = invoicing.lines_due
    update_customer = invoicing.update_customer
    _customer_updated = event(CustomerUpdated)(invoicing._customer_updated)
    check_invoice_due = invoicing.check_invoice_due
    preview_invoice = invoicing.preview_invoice
    issue_invoice = invoicing.issue_invoice
    _invoice_issued = event(InvoiceIssued)(invoicing._invoice_issued)
    void_invoice = invoicing.void_invoice
    _invoice_voided = event(InvoiceVoided)(invoicing._invoice_voided)
    issue_credit_note = invoicing.issue_credit_note
    _credit_note_issued = event(CreditNoteIssued)(invoicing._credit_note_issued)

    # When a charge is invoiced, by the kind of event that made it. The cycle's invoice comes
    # when its usage closes (in-advance charges of the new period and the closed period's
    # overage together); a subscription's first period and one-off purchases are invoiced when
    # made; a change within a period (upgrade, seats, user plans, add-ons) per the plan's
    # `change_invoicing`, except that one charging whole periods (made as a period starts,
    # such as user plans assigned on subscribing) opens that period and is invoiced at once.
    # Lines not invoiced by their own event go on the next invoice.
    INVOICED_WHEN_MADE = frozenset({"UsagePeriodClosed", "Subscribed", "PackPurchased",
                                    "UsageCharged", "CreditsGranted", "Terminated",
                                    "Resumed", "UnitsGranted"})
    INVOICED_PER_PLAN = frozenset({"PlanUpgraded", "SeatsAdded", "UserPlanAssigned",
                                   "AddOnAdded"})
    INVOICE_TRIGGERS = INVOICED_WHEN_MADE | INVOICED_PER_PLAN

    # ---------------------------------------------------------------- pause and resume --
    # in domain/subscription/pausing.py
    pause = pausing.pause
    _pause_scheduled = event(PauseScheduled)(pausing._pause_scheduled)
    pause_scheduled_at = pausing.pause_scheduled_at
    _pause = pausing._pause
    _paused = event(Paused)(pausing._paused)
    resume = pausing.resume
    _pause_withdrawn = event(PauseWithdrawn)(pausing._pause_withdrawn)
    _resumed = event(Resumed)(pausing._resumed)
    check_not_paused = pausing.check_not_paused

    # -------------------------------------------------------------------- termination --
    # in domain/subscription/termination.py
    terminate = termination.terminate
    _terminated = event(Terminated)(termination._terminated)
    refund_due_now = termination.refund_due_now
    unused_credits = termination.unused_credits
    issue_refund_note = termination.issue_refund_note

    # ------------------------------------------------------------------------ coupons --
    # in domain/subscription/coupons.py
    apply_coupon = coupons.apply_coupon
    _coupon_applied = event(CouponApplied)(coupons._coupon_applied)
    coupon_now = coupons.coupon_now
    _spend_coupon_period = coupons._spend_coupon_period

    # ------------------------------------------------------------------------ credits --
    # in domain/subscription/credits.py
    grant_credits = credits.grant_credits
    _credits_granted = event(CreditsGranted)(credits._credits_granted)
    configure_auto_top_up = credits.configure_auto_top_up
    _auto_top_up_configured = event(AutoTopUpConfigured)(credits._auto_top_up_configured)
    credit_grants_now = credits.credit_grants_now
    credit_balance = credits.credit_balance
    with_credits = credits.with_credits
    _spend_credits = credits._spend_credits
    top_up_if_low = credits.top_up_if_low

    # ------------------------------------------------------------------- unit credits --
    # in domain/subscription/unit_credits.py
    grant_units = unit_credits.grant_units
    check_units = unit_credits.check_units
    _add_unit_grant = unit_credits._add_unit_grant
    buy_lasting_pack = unit_credits.buy_lasting_pack
    _units_granted = event(UnitsGranted)(unit_credits._units_granted)
    unit_grants_now = unit_credits.unit_grants_now
    draw_units = unit_credits.draw_units
    _units_drawn = event(UnitsDrawn)(unit_credits._units_drawn)
    next_unit_expiry = unit_credits.next_unit_expiry
    unit_balance_now = unit_credits.unit_balance_now
    expire_units = unit_credits.expire_units
    _units_expired = event(UnitsExpired)(unit_credits._units_expired)

    # ---------------------------------------------------------------------- payments --
    # in domain/subscription/invoicing.py
    record_payment = invoicing.record_payment
    _payment_succeeded = event(PaymentSucceeded)(invoicing._payment_succeeded)
    _payment_failed = event(PaymentFailed)(invoicing._payment_failed)








keep_topics("domain.subscription", Subscription)
