"""The topics written into the event store are a stored format: moving a class to another
module must not change them (the store would then hold two names for one event). Every
aggregate, event and snapshot class of domain/ is listed here with the topic it writes, and
every topic ever written resolves to its class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

from eventsourcing.domain import BaseAggregate, CanMutateAggregate, CanSnapshotAggregate
from eventsourcing.utils import get_topic, resolve_topic

import domain

SUBSCRIPTION_EVENTS = (
    "AddOnAdded", "AddOnRemovalScheduled", "AgreementRenewed", "BillingPeriodChangeScheduled",
    "AutoTopUpConfigured", "CancellationScheduled", "CancellationWithdrawn", "CountReported",
    "CouponApplied", "CreditNoteIssued", "CreditsGranted",
    "CustomerUpdated", "CycleRolled", "DailyAllowanceReset", "DailyCapReached",
    "DowngradeScheduled", "FeatureActivated", "FeatureDeactivated", "InvoiceIssued",
    "InvoiceVoided", "LateUsageRecorded", "MemberAdded", "PackPurchased", "PaymentFailed",
    "PaymentSucceeded", "PauseScheduled", "PauseWithdrawn", "Paused", "PlanChangedInTrial",
    "PlanUpgraded", "PriceOverridesScheduled", "ProfileUpdated", "QuotaThresholdCrossed", "Resumed",
    "ScheduledChangeCancelled", "SeatReleased", "SeatsAdded",
    "Subscribed", "Terminated", "UnitsDrawn", "UnitsExpired", "UnitsGranted", "UsageCharged",
    "UsagePeriodClosed", "UsageRecorded",
    "UserPlanAssigned", "UserPlanUnassigned", "WorkspaceArchived", "WorkspaceCreated")
STORED_TOPICS = {
    "domain.catalog_versions:CatalogVersions",
    "domain.catalog_versions:CatalogVersions.Registered",
    "domain.catalog_versions:CatalogVersions.VersionPublished",
    "domain.catalog_versions:DeploymentCatalog",
    "domain.catalog_versions:DeploymentCatalog.Chosen",
    "domain.clock:BillingClock",
    "domain.coupon_redemptions:CouponRedemptions",
    "domain.coupon_redemptions:CouponRedemptions.Opened",
    "domain.coupon_redemptions:CouponRedemptions.Redeemed",
    "domain.clock:BillingClock.Advanced",
    "domain.clock:BillingClock.Started",
    "domain.invoice_series:InvoiceSeries",
    "domain.invoice_series:InvoiceSeries.NumbersAssigned",
    "domain.invoice_series:InvoiceSeries.Opened",
    "domain.subscription:Subscription",
    "domain.subscription:SubscriptionSnapshot",
    *(f"domain.subscription:Subscription.{name}" for name in SUBSCRIPTION_EVENTS),
}


def _stored_classes() -> Iterator[type]:
    """Every concrete aggregate, event and snapshot class defined under domain/."""
    seen: set[type] = set()

    def nested(cls: type) -> Iterator[type]:
        for obj in vars(cls).values():
            if inspect.isclass(obj) and obj not in seen and obj.__module__.startswith("domain"):
                seen.add(obj)
                yield obj
                yield from nested(obj)

    for info in pkgutil.walk_packages(domain.__path__, "domain."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and obj not in seen:
                seen.add(obj)
                for cls in (obj, *nested(obj)):
                    if issubclass(cls, (CanMutateAggregate, CanSnapshotAggregate, BaseAggregate)) \
                            and not getattr(cls, "__abstract_event__", False):
                        yield cls


def test_every_stored_class_keeps_the_topic_it_has_always_written() -> None:
    written = {get_topic(cls): cls for cls in _stored_classes()}
    assert set(written) >= STORED_TOPICS
    # Anything else is a base class, never stored itself.
    assert [t for t in set(written) - STORED_TOPICS if not written[t].__subclasses__()] == []


def test_every_topic_in_the_store_resolves_to_the_class_that_writes_it() -> None:
    for topic in sorted(STORED_TOPICS):
        assert get_topic(resolve_topic(topic)) == topic, topic


def test_a_process_that_opens_the_application_resolves_every_stored_topic() -> None:
    """A reader resolves topics without importing the aggregates' modules itself: the
    application module brings them in, so a moved module's old topic still resolves."""
    import subprocess
    import sys

    script = ("import domain.app.billing_app\nfrom eventsourcing.utils import resolve_topic\n"
              f"for t in {sorted(STORED_TOPICS)!r}: resolve_topic(t)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
