"""Lifecycle commands: one contract for the Python API, the CLI and the `billing.commands` topic.

A command is a JSON object `{"id", "type", "subscription", "at", ...fields}`; `id` is its
idempotency key (per subscription). `parse_command` checks the contract (InvalidCommand with a
code); `execute` runs it on the subscription: first everything due by the command's time
(`advance_to`), then the command's own checks and event. Each `_cmd_*` function is one use case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.catalog.model import Catalog
from domain.contracts.usage import DECIMAL_STRING, MAX_TEXT, parse_rfc3339
from domain.shared.errors import CommandRefused, InvalidCommand
from domain.shared.text import InvalidText, check_all_text
from domain.subscription.aggregate import Subscription
from domain.subscription.coupons import Redeem


@dataclass(frozen=True)
class Command:
    id: str
    type: str
    subscription: str
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)

    def text(self, name: str, required: bool = True) -> str | None:
        value = self.fields.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise InvalidCommand(f"{self.type}: '{name}' must be a non-empty string",
                                 "invalid_field")
        return value

    def required(self, name: str) -> str:
        value = self.text(name)
        assert value is not None
        return value

    # An optional field given as null is absent, as the contract (and its schema) says.
    def integer(self, name: str, default: int | None = None) -> int:
        value = self.fields.get(name)
        if value is None:
            value = default
        if not _of_kind("integer", value):
            raise InvalidCommand(f"{self.type}: '{name}' must be an integer", "invalid_field")
        assert isinstance(value, int | float)
        return int(value)  # a JSON number with a zero fraction (3.0) is an integer

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.fields.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidCommand(f"{self.type}: '{name}' must be an object", "invalid_field")
        return value

    def flag(self, name: str) -> bool:
        value = self.fields.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise InvalidCommand(f"{self.type}: '{name}' must be true or false", "invalid_field")
        return value

    def amount(self, name: str) -> Decimal:
        """An integer >= 0 or a plain decimal string (digits, an optional fraction)."""
        value = self.fields.get(name)
        amount = plain_amount(value)
        if amount is None:
            raise InvalidCommand(f"{self.type}: '{name}' must be an integer >= 0 or a plain "
                                 "decimal string like \"12.50\"", "invalid_field")
        return amount


def plain_amount(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):  # a JSON number with a zero fraction is an integer
        ok = float(value).is_integer() and 0 <= value < SAFE_INTEGER
        return Decimal(int(value)) if ok else None
    if isinstance(value, str) and len(value) <= 40 and DECIMAL_STRING.fullmatch(value):
        return Decimal(value)
    return None


SAFE_INTEGER = 2**53
# Each command type's fields beyond the envelope, checked by `parse_command` (so a malformed
# command is refused before it is published or run) and published as JSON Schema
# (docs/schemas/command.schema.json). "?" marks an optional field (absent or null).
FIELD_KINDS = ("text", "integer", "flag", "amount", "object", "names")
FIELDS: dict[str, dict[str, str]] = {
    "subscribe": {"plan": "text", "account": "text?", "period": "text?", "trial": "flag?",
                  "seats": "integer?", "customer": "object?", "coupon": "text?",
                  "overrides": "object?", "billing_day": "integer?"},
    "override_prices": {"overrides": "object"},
    "apply_coupon": {"coupon": "text"},
    "grant_credits": {"amount": "amount", "priority": "integer?", "expires_at": "text?",
                      "purchased": "flag?", "reason": "text?"},
    "configure_auto_top_up": {"threshold": "amount", "amount": "amount"},
    "grant_units": {"metric": "text", "quantity": "amount", "priority": "integer?",
                    "expires_at": "text?", "reason": "text?"},
    "terminate": {"refund": "flag?"},
    "pause": {}, "resume": {},
    "change_plan": {"plan": "text", "keep_workspace": "text?", "period": "text?"},
    "cancel": {}, "reactivate": {}, "advance": {},
    "add_seats": {"count": "integer"},
    "add_member": {"member": "text"}, "release_seat": {"member": "text"},
    "assign_user_plan": {"member": "text", "solution": "text", "level": "text",
                         "switch": "flag?"},
    "unassign_user_plan": {"member": "text", "solution": "text"},
    "buy_pack": {"pack": "text"}, "add_addon": {"addon": "text"},
    "remove_addon": {"addon": "text"}, "change_billing_period": {"period": "text"},
    "record_payment": {"reference": "text", "outcome": "text", "amount": "amount",
                       "reason": "text?"},
    "create_workspace": {"workspace": "text"}, "archive_workspace": {"workspace": "text"},
    "activate_feature": {"feature": "text"}, "deactivate_feature": {"feature": "text"},
    "report_count": {"name": "text", "value": "integer"},
    "update_customer": {"customer": "object?"},
    "update_profile": {"template": "text?", "integrations": "names?"},
    "void_invoice": {"number": "text"},
}


def check_fields(kind: str, fields: dict[str, Any]) -> None:
    """The command type's fields, each of its kind (`FIELDS`); others are ignored."""
    for name, spec in FIELDS[kind].items():
        value = fields.get(name)
        optional = spec.endswith("?")
        if value is None:
            if optional:
                continue
            raise InvalidCommand(f"{kind}: '{name}' is required", "invalid_field")
        if not _of_kind(spec.rstrip("?"), value):
            raise InvalidCommand(f"{kind}: '{name}' must be {_KIND_TEXT[spec.rstrip('?')]}",
                                 "invalid_field")


_KIND_TEXT = {"text": f"a non-empty string of at most {MAX_TEXT} characters",
              "integer": "an integer", "flag": "true or false",
              "amount": "an integer >= 0 or a plain decimal string", "object": "an object",
              "names": "a list of strings"}


def _of_kind(kind: str, value: object) -> bool:
    if kind == "text":
        return isinstance(value, str) and 0 < len(value) <= MAX_TEXT
    if kind == "integer":  # within what every JSON reader holds exactly (+-2^53)
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and float(value).is_integer() and abs(value) < SAFE_INTEGER)
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "amount":
        return plain_amount(value) is not None
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def parse_command(raw: object) -> Command:
    if not isinstance(raw, dict):
        raise InvalidCommand("a command is a JSON object", "not_an_object")
    missing = [k for k in ("id", "type", "subscription", "at") if raw.get(k) is None]
    if missing:
        raise InvalidCommand(f"missing field(s): {', '.join(missing)}", "missing_field")
    for key in ("id", "type", "subscription"):
        if not isinstance(raw[key], str) or not raw[key] or len(raw[key]) > MAX_TEXT:
            raise InvalidCommand(f"'{key}' must be a non-empty string", "invalid_field")
    try:
        check_all_text(raw, "command")
    except InvalidText as e:
        raise InvalidCommand(str(e), e.code) from None
    if raw["type"] not in HANDLERS:
        raise InvalidCommand(f"unknown command type {raw['type'][:64]!r}", "unknown_command")
    at_text = raw["at"]
    if not isinstance(at_text, str) or len(at_text) > 64:
        raise InvalidCommand("'at' must be RFC 3339 with an offset", "invalid_timestamp")
    try:
        at = parse_rfc3339(at_text)
    except ValueError as e:
        raise InvalidCommand(f"'at': {e}", "invalid_timestamp") from None
    fields = {k: v for k, v in raw.items() if k not in ("id", "type", "subscription", "at")}
    check_fields(raw["type"], fields)
    return Command(raw["id"], raw["type"], raw["subscription"], at, fields)


@dataclass
class Outcome:
    command: Command
    result: str  # "applied", "unchanged", "downgrade_scheduled", ...
    events: int


Handler = Callable[[Subscription, Command, Catalog], str]


COMMAND_PERIODS_AHEAD = 24


def execute(subscription: Subscription | None, command: Command,
            catalog: Catalog, redeem: Redeem | None = None) -> tuple[Subscription, Outcome]:
    """Run a command; returns the (new or changed) aggregate with pending events. `redeem`
    records a coupon's redemption where the caller keeps its aggregate (none in a preview:
    a coupon's redemption limit is then not checked)."""
    if command.type == "subscribe":
        if subscription is not None:
            raise CommandRefused(f"subscription {command.subscription} exists",
                                 "subscription_exists")
        created = Subscription.subscribe(
            command.subscription, command.text("account", False) or command.subscription,
            command.required("plan"), catalog, command.at,
            period=command.text("period", False) or "month", trial=command.flag("trial"),
            seats=command.integer("seats") if command.fields.get("seats") is not None
            else None,
            customer=command.mapping("customer"),
            overrides=command.mapping("overrides") if command.fields.get("overrides")
            is not None else None,
            billing_day=command.integer("billing_day") if command.fields.get("billing_day")
            is not None else None,
        )
        coupon = command.text("coupon", False)
        if coupon:
            created.apply_coupon(catalog.coupon(coupon), command.at, redeem)
        return created, Outcome(command, "applied", len(created.pending_events))
    if subscription is None:
        raise CommandRefused(f"no subscription {command.subscription!r}", "unknown_subscription")
    if command.at < subscription.cycle_start:
        raise CommandRefused(
            f"command time {command.at.isoformat()} is before the open cycle "
            f"({subscription.cycle_start.isoformat()})", "stale_command")
    subscription.check_not_too_far_ahead(command.at, periods=COMMAND_PERIODS_AHEAD)
    before = len(subscription.pending_events)
    subscription.advance_to(command.at, catalog)
    subscription.check_not_paused(command.type)
    if command.type == "apply_coupon":
        subscription.apply_coupon(catalog.coupon(command.required("coupon")), command.at, redeem)
        result = "applied"
    else:
        result = HANDLERS[command.type](subscription, command, catalog)
    return subscription, Outcome(command, result, len(subscription.pending_events) - before)


def _applied(changed: bool) -> str:
    return "applied" if changed else "unchanged"


def _cmd_change_plan(s: Subscription, c: Command, catalog: Catalog) -> str:
    return s.change_plan(c.required("plan"), c.at, catalog, c.text("keep_workspace", False),
                         c.text("period", False))


def _cmd_cancel(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.cancel(c.at, catalog))


def _cmd_reactivate(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.reactivate(c.at)
    return "applied"


def _cmd_add_seats(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.add_seats(c.integer("count"), c.at)
    return "applied"


def _cmd_add_member(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.add_member(c.required("member"), c.at)
    return "applied"


def _cmd_release_seat(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.release_seat(c.required("member"), c.at)
    return "applied"


def _cmd_assign_user_plan(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.assign_user_plan(c.required("member"), c.required("solution"),
                                       c.required("level"), c.at, catalog, c.flag("switch")))


def _cmd_unassign_user_plan(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.unassign_user_plan(c.required("member"), c.required("solution"), c.at)
    return "applied"


def _cmd_buy_pack(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.buy_pack(c.required("pack"), c.at, catalog)
    return "applied"


def _cmd_add_addon(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.add_addon(c.required("addon"), c.at, catalog))


def _cmd_remove_addon(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.remove_addon(c.required("addon"), c.at))


def _cmd_change_billing_period(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.change_billing_period(c.required("period"), c.at, catalog))


def _cmd_record_payment(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.record_payment(c.required("reference"), c.required("outcome"), c.amount("amount"), c.at,
                     c.text("reason", False))
    return "applied"


def _cmd_create_workspace(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.create_workspace(c.required("workspace"), c.at)
    return "applied"


def _cmd_archive_workspace(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.archive_workspace(c.required("workspace"), c.at)
    return "applied"


def _cmd_activate_feature(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.activate_feature(c.required("feature"), c.at))


def _cmd_deactivate_feature(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.deactivate_feature(c.required("feature"), c.at))


def _cmd_report_count(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.report_count(c.required("name"), c.integer("value"), c.at))


def _cmd_update_customer(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.update_customer(c.mapping("customer"), c.at))


def _cmd_update_profile(s: Subscription, c: Command, catalog: Catalog) -> str:
    integrations = c.fields.get("integrations", [])
    if not isinstance(integrations, list) or not all(isinstance(i, str) for i in integrations):
        raise InvalidCommand("update_profile: 'integrations' is a list of names",
                             "invalid_field")
    return _applied(s.update_profile(c.text("template", False), integrations, c.at))


def _cmd_void_invoice(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.void_invoice(c.required("number"), c.at)
    return "applied"


def _expires_at(c: Command) -> datetime | None:
    expires = c.text("expires_at", False)
    try:
        return None if expires is None else parse_rfc3339(expires)
    except ValueError as e:
        raise InvalidCommand(f"{c.type}: 'expires_at': {e}", "invalid_field") from None


def _cmd_grant_credits(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.grant_credits(c.amount("amount"), c.at, priority=c.integer("priority", 0),
                    expires_at=_expires_at(c), purchased=c.flag("purchased"),
                    reason=c.text("reason", False))
    return "applied"


def _cmd_grant_units(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.grant_units(c.required("metric"), c.amount("quantity"), c.at,
                  priority=c.integer("priority", 0), expires_at=_expires_at(c),
                  reason=c.text("reason", False))
    return "applied"


def _cmd_terminate(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.terminate(c.at, refund=c.fields.get("refund") is not False)
    return "applied"


def _cmd_override_prices(s: Subscription, c: Command, catalog: Catalog) -> str:
    s.override_prices(c.mapping("overrides"), c.at)
    return "applied"


def _cmd_configure_auto_top_up(s: Subscription, c: Command, catalog: Catalog) -> str:
    return _applied(s.configure_auto_top_up(c.amount("threshold"), c.amount("amount"), c.at))


def _cmd_advance(s: Subscription, c: Command, catalog: Catalog) -> str:
    return "applied"  # `execute` already advanced the subscription to the command's time


HANDLERS: dict[str, Handler] = {
    "subscribe": lambda s, c, k: "applied",  # handled in execute (creates the aggregate)
    "apply_coupon": lambda s, c, k: "applied",  # handled in execute (may redeem a coupon)
    "change_plan": _cmd_change_plan,
    "cancel": _cmd_cancel,
    "reactivate": _cmd_reactivate,
    "add_seats": _cmd_add_seats,
    "add_member": _cmd_add_member,
    "release_seat": _cmd_release_seat,
    "assign_user_plan": _cmd_assign_user_plan,
    "unassign_user_plan": _cmd_unassign_user_plan,
    "buy_pack": _cmd_buy_pack,
    "add_addon": _cmd_add_addon,
    "remove_addon": _cmd_remove_addon,
    "change_billing_period": _cmd_change_billing_period,
    "record_payment": _cmd_record_payment,
    "create_workspace": _cmd_create_workspace,
    "archive_workspace": _cmd_archive_workspace,
    "activate_feature": _cmd_activate_feature,
    "deactivate_feature": _cmd_deactivate_feature,
    "report_count": _cmd_report_count,
    "advance": _cmd_advance,
    "update_customer": _cmd_update_customer,
    "void_invoice": _cmd_void_invoice,
    "update_profile": _cmd_update_profile,
    "grant_credits": _cmd_grant_credits,
    "grant_units": _cmd_grant_units,
    "configure_auto_top_up": _cmd_configure_auto_top_up,
    "terminate": _cmd_terminate,
    "override_prices": _cmd_override_prices,
    "pause": lambda s, c, k: _applied(s.pause(c.at)),
    "resume": lambda s, c, k: s.resume(c.at, k),
}
