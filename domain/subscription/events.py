"""The events of a subscription, each a stored format: fields are only added, with a new
`class_version` and an upcast of the older stored form. All amounts and quantities are decimal
strings; `charges` are invoice-ready lines (kind, description, quantity, unit_price, amount[,
period_start, period_end]). The aggregate (domain/subscription/aggregate.py) names each one as
`Subscription.<Event>`, the topic it is stored under."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.billing.charges import Charge
from domain.shared.events import CreatedEvent, DomainEvent


class Subscribed(CreatedEvent):
    """v2 added `customer` (billing details for invoices). Stored v1 events are upcast on
    load: they get no customer details (invoices then tax them as domestic)."""

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("customer", {})

    account: str
    terms: dict[str, Any]
    status: str
    cycle_start: datetime
    cycle_end: datetime
    trial_end: datetime | None
    commitment_end: datetime | None
    seats: int | None
    charges: list[Charge]
    customer: dict[str, Any]


class UsageRecorded(DomainEvent):
    """One per subscription per ingested batch: the accepted items and totals per metric.
    Applied by its own `apply` and triggered with `trigger_event`, not through an @event
    method: it is the hot path of ingestion, and the decorator's argument handling on
    every call (binding, filtering, a dict per event) was a third of recording usage."""

    class_version = 1
    items: list[dict[str, str]]
    totals: dict[str, str]

    def apply(self, aggregate: Any) -> None:
        aggregate._add_usage(self.items, self.totals)


class LateUsageRecorded(DomainEvent):
    """Usage timed in the last closed cycle, arrived within its grace window."""

    class_version = 1
    period_start: datetime
    period_end: datetime
    items: list[dict[str, str]]
    totals: dict[str, str]


class QuotaThresholdCrossed(DomainEvent):
    class_version = 1
    metric: str
    threshold: int
    used: str
    limit: str
    hard: bool


class DailyCapReached(DomainEvent):
    class_version = 1
    metric: str
    day: str
    cap: str
    used: str


class DailyAllowanceReset(DomainEvent):
    class_version = 1
    day: str
    metrics: list[str]


class CycleRolled(DomainEvent):
    """Opens the next cycle: scheduled changes applied, allowances reset (no rollover),
    charges for the new period in advance. The closed cycle's usage stays open for late
    usage until UsagePeriodClosed."""

    class_version = 1
    closed_start: datetime
    closed_end: datetime
    closed_usage: dict[str, str]
    cycle_start: datetime
    cycle_end: datetime
    status: str
    terms: dict[str, Any]
    changes: dict[str, Any]
    seats: int | None
    archived_workspaces: list[str]
    charges: list[Charge]


class UsagePeriodClosed(DomainEvent):
    """The grace window of a closed cycle has passed: its usage is final, with overage."""

    class_version = 1
    period_start: datetime
    period_end: datetime
    usage: dict[str, str]
    charges: list[Charge]


class AgreementRenewed(DomainEvent):
    class_version = 1
    agreement_end: datetime
    renews: str


class PlanUpgraded(DomainEvent):
    class_version = 1
    from_plan: str
    terms: dict[str, Any]
    charges: list[Charge]
    restarted_cycle: bool
    cycle_start: datetime
    cycle_end: datetime
    closed_usage: dict[str, str]
    cancelled: list[str]


class PlanChangedInTrial(DomainEvent):
    class_version = 1
    from_plan: str
    terms: dict[str, Any]


class DowngradeScheduled(DomainEvent):
    class_version = 1
    to_plan: str
    effective_at: datetime
    keep_workspace: str | None


class CancellationScheduled(DomainEvent):
    class_version = 1
    effective_at: datetime


class CancellationWithdrawn(DomainEvent):
    class_version = 1


class BillingPeriodChangeScheduled(DomainEvent):
    class_version = 1
    period: str
    effective_at: datetime


class SeatsAdded(DomainEvent):
    class_version = 1
    count: int
    seats: int
    charges: list[Charge]


class MemberAdded(DomainEvent):
    class_version = 1
    member: str


class SeatReleased(DomainEvent):
    """The member leaves at once and loses access; their content stays. The seat stays paid
    to the end of the period and the next period bills the seats in use, unless the plan
    credits released seats (`credit_released_seats`): then an extra seat no member uses any
    more is credited for the rest of the period (`charges`) and no longer counted (`seats`).
    v2 added `charges` and `seats`; stored v1 events are upcast with none."""

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("charges", [])
        state.setdefault("seats", None)

    member: str
    charges: list[Charge]
    seats: int | None


class UserPlanAssigned(DomainEvent):
    class_version = 1
    member: str
    solution: str
    level: str
    replaced_level: str | None
    charges: list[Charge]


class UserPlanUnassigned(DomainEvent):
    class_version = 1
    member: str
    solution: str
    level: str


class PackPurchased(DomainEvent):
    class_version = 1
    pack_id: str
    metric: str
    quantity: str
    charges: list[Charge]


class CreditsGranted(DomainEvent):
    """Prepaid credits: `grant` (g1, g2, ...), `amount`, `priority`, `expires_at` (or None),
    `purchased` (a top-up, charged in `charges`) and `reason`."""

    class_version = 1
    grant: str
    amount: str
    priority: int
    expires_at: str | None
    purchased: bool
    reason: str | None
    charges: list[Charge]


class UnitsGranted(DomainEvent):
    """Unit credits: `grant` {"id" (u1, u2, ...), "metric", "quantity", "remaining",
    "priority", "expires_at" (or None), "pack_id" (a lasting pack bought, charged in
    `charges`; None: given)}, `reason`, and the metric's usable `balance` after it."""

    class_version = 1
    grant: dict[str, Any]
    reason: str | None
    charges: list[Charge]
    balance: str


class UnitsDrawn(DomainEvent):
    """Usage of `metric` past the usable amount drew unit credits: `drawn` [{"grant",
    "quantity"}], added to the open cycle's pack units (or the closing cycle's, for late usage:
    `closing`); `balance`: the metric's usable units left."""

    class_version = 1
    metric: str
    drawn: list[dict[str, str]]
    closing: bool
    balance: str


class UnitsExpired(DomainEvent):
    """Unit grants expired with units left: `expired` [{"grant", "metric", "quantity"}], and
    each metric's usable `balances` after."""

    class_version = 1
    expired: list[dict[str, str]]
    balances: dict[str, str]


class AutoTopUpConfigured(DomainEvent):
    class_version = 1
    setting: dict[str, str] | None  # {"threshold", "amount"}, or None: off


class PauseScheduled(DomainEvent):
    class_version = 1
    pause_at: datetime


class PauseWithdrawn(DomainEvent):
    class_version = 1


class Paused(DomainEvent):
    """The paid period ended into a pause: its usage closed with `closed_usage`; `plan_id`
    and `currency`: what was paused."""

    class_version = 1
    closed_usage: dict[str, str]
    plan_id: str
    currency: str


class Resumed(DomainEvent):
    """A paused subscription starts a new period: `terms`, `seats` and its `charges`."""

    class_version = 1
    cycle_start: datetime
    cycle_end: datetime
    terms: dict[str, Any]
    seats: int | None
    charges: list[Charge]


class PriceOverridesScheduled(DomainEvent):
    """Custom prices agreed with the customer, from the next period on (`{}`: back to the
    catalog's)."""

    class_version = 1
    overrides: dict[str, Any]


class Terminated(DomainEvent):
    """The subscription ended at once: its open cycle closed at this time with `closed_usage`,
    and `refund` (prorated credit lines for the unused rest of the period, or none); `plan_id`
    and `currency`: what ended."""

    class_version = 1
    closed_usage: dict[str, str]
    refund: list[Charge]
    plan_id: str
    currency: str


class CouponApplied(DomainEvent):
    """A coupon's terms as the catalog said when it was applied (id, name, percent_off or
    amount_off, applies_to, periods)."""

    class_version = 1
    coupon: dict[str, Any]


class UsageCharged(DomainEvent):
    """Usage of metrics billed on use (`billed = "in_advance"`) charged as it was recorded:
    the lines, and what each metric has been charged in the cycle so far."""

    class_version = 1
    charges: list[Charge]
    billed: dict[str, str]


class AddOnAdded(DomainEvent):
    """`users`: how the add-on is counted, "members" or "solution:<name>" (per user), or None
    (once); absent from events written before add-ons per user (read as None)."""

    class_version = 1
    addon_id: str
    name: str
    monthly_price: str
    features: list[str]
    charges: list[Charge]
    users: str | None


class AddOnRemovalScheduled(DomainEvent):
    class_version = 1
    addon_id: str
    effective_at: datetime


class WorkspaceCreated(DomainEvent):
    class_version = 1
    workspace: str


class WorkspaceArchived(DomainEvent):
    class_version = 1
    workspace: str


class FeatureActivated(DomainEvent):
    class_version = 1
    feature: str


class FeatureDeactivated(DomainEvent):
    class_version = 1
    feature: str


class CountReported(DomainEvent):
    class_version = 1
    name: str
    value: int


class PaymentSucceeded(DomainEvent):
    class_version = 1
    reference: str
    amount: str


class PaymentFailed(DomainEvent):
    class_version = 1
    reference: str
    amount: str
    reason: str
    attempt: int
    next_retry_at: datetime | None


class ScheduledChangeCancelled(DomainEvent):
    class_version = 1


class ProfileUpdated(DomainEvent):
    """What the customer set up (agent template, connected integrations): an input to
    plan recommendations."""

    class_version = 1
    template: str | None
    integrations: list[str]


class CustomerUpdated(DomainEvent):
    class_version = 1
    customer: dict[str, Any]


class InvoiceIssued(DomainEvent):
    class_version = 1
    document: dict[str, Any]
    invoiced_through: int


class InvoiceVoided(DomainEvent):
    class_version = 1
    number: str


class CreditNoteIssued(DomainEvent):
    class_version = 1
    document: dict[str, Any]
