"""The domain's error family: every refusal carries a stable, machine-readable code."""

from __future__ import annotations


class BillingError(Exception):
    """Base of all refusals. `code` is stable and documented; the message is for people."""

    code = "billing_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidUsage(BillingError):
    """A usage event that breaks the contract (missing field, bad quantity, bad time)."""

    code = "invalid_usage"


class UnknownSubscription(BillingError):
    code = "unknown_subscription"


class UnknownMetric(BillingError):
    code = "unknown_metric"


class UnknownPlan(BillingError):
    code = "unknown_plan"


class SubscriptionExists(BillingError):
    code = "subscription_exists"


class UsageTooLate(BillingError):
    """Usage timed before the open cycle (or before the subscription began)."""

    code = "too_late"


class CycleNotOver(BillingError):
    code = "cycle_not_over"


class CatalogError(BillingError):
    code = "invalid_catalog"


class CommandRefused(BillingError):
    """A lifecycle command that the subscription's state does not allow; `code` says why
    (e.g. usage_above_limit, feature_in_use, workspace_choice_required, no_free_seat)."""

    code = "command_refused"


class TimeTooFarAhead(BillingError):
    """Usage or a command timed more than a period past the subscription's open cycle."""

    code = "time_too_far_ahead"


class InvalidCommand(BillingError):
    """A command that breaks the command contract (missing or malformed fields)."""

    code = "invalid_command"
