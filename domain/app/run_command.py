"""One command, exactly once per (subscription, command id): load, one command, save."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.app.ports import CommandOutcome, UsageKey
from domain.app.retry import retry_on_conflict
from domain.catalog.redemptions import CouponRedemptions
from domain.contracts.commands import Command, Outcome, execute

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def command_key(command: Command) -> UsageKey:
    """Commands share the idempotency ledger with usage, in their own id space."""
    return (command.subscription, f"cmd:{command.id}")


def run_command(app: BillingApplication, command: Command) -> Outcome:
    """A replayed id has no second effect and answers "duplicate". Refusals raise
    BillingError with a code. Another writer changing the subscription (or running this
    command) first makes the save fail; the subscription is reloaded and decided again."""
    key = command_key(command)

    def attempt() -> Outcome:
        if app.usage_ledger().seen_usage([key]):
            return Outcome(command, "duplicate", 0)
        app.revalidate([command.subscription])
        redemptions: dict[str, CouponRedemptions] = {}
        subscription, outcome = execute(app.find(command.subscription), command, app.catalog,
                                        app.redeemer(redemptions))
        app.save_batch([subscription, *redemptions.values()], tracking=None, usage_keys=[key],
                       command_outcomes=[
            CommandOutcome(command.subscription, command.id, command.type,
                           subscription.account, outcome.result, events=outcome.events)])
        return outcome

    return retry_on_conflict(attempt)
