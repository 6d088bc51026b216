"""What a command would do, without doing it: load a private copy, run the command on it, and
read what it would emit and charge. Nothing is saved. The customer portal shows this before
the customer confirms (an upgrade's prorated charge, when a downgrade takes effect, why a
change is refused)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from domain.billing.invoice_document import build_invoice
from domain.contracts.commands import COMMAND_PERIODS_AHEAD, Command, execute
from domain.shared.errors import BillingError

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def preview_command(app: BillingApplication, command: Command) -> dict[str, Any]:
    """{"allowed": False, "code", "reason"} for a refusal; else {"allowed": True, "result",
    "events": [type, ...], "charges": the invoice the command's own lines would make (no
    number; None without lines), "state": the copy afterwards}."""
    copy = app.load_as_stored(command.subscription)  # never the cached aggregate
    try:  # as `execute` would refuse it, before moving the copy that far
        copy.check_not_too_far_ahead(command.at, periods=COMMAND_PERIODS_AHEAD)
    except BillingError as e:
        return {"allowed": False, "code": e.code, "reason": str(e)}
    copy.advance_to(command.at, app.catalog)  # what is due by then is not the command's
    copy.collect_events()
    before = {id(c) for c in copy.uninvoiced}
    try:
        changed, outcome = execute(copy, command, app.catalog)
    except BillingError as e:
        return {"allowed": False, "code": e.code, "reason": str(e)}
    lines = [c for c in changed.uninvoiced if id(c) not in before]
    events = [type(e).__name__ for e in changed.collect_events()]
    charges = build_invoice(
        number=None, subscription=changed.id, account=changed.account,
        customer=changed.customer, issuer=app.issuer, currency=str(changed.terms["currency"]),
        lines=lines, issued_at=command.at) if lines else None
    return {"allowed": True, "result": outcome.result, "events": events, "charges": charges,
            "state": changed}

