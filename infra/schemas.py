"""The published contracts as JSON Schema (draft 2020-12), built from the engine's own
constants so that they cannot drift from its parsers: usage events, commands, `billing.events`
messages, dead letters and the catalog file. `python -m infra.schemas docs/schemas` writes
them; tests/unit/test_schemas.py checks the committed files are these, and that the schemas
and the engine's parsers accept the same inputs (docs/contracts.md says where they cannot).

Patterns use [0-9], never \\d: a JSON Schema validator in Python would let \\d match other
scripts' digits, which the engine refuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from domain.catalog.coupons import COUPON_KEYS, COUPON_SCOPES, DURATIONS
from domain.catalog.fields import MOMENT
from domain.catalog.model import (
    AGGREGATIONS,
    ALLOWANCE_KEYS,
    BILLED,
    CHARGE_MODELS,
    DAILY_CAP_ACTIONS,
    HEAD_KEYS,
    INTERVALS,
    ISSUER_KEYS,
    LIMIT_KINDS,
    PACK_KEYS,
    PERIODS,
    PLAN_KEYS,
    TOP_KEYS,
)
from domain.contracts.commands import FIELDS, HANDLERS
from domain.contracts.usage import MAX_DECIMAL_PLACES, MAX_PROPERTIES, MAX_TEXT, PROPERTY_NAME
from domain.shared.text import MAX_DEPTH, RESERVED_KEYS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://github.com/billing-engine/schemas/"
NO_NUL = "^[^\\u0000]*$"
TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": NO_NUL}
SAFE_INTEGER = 2 ** 53

_YEAR = "(?!0000)[0-9]{4}"
_LEAP_YEAR = ("(?!0000)(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])"
              "|(?:[02468][048]|[13579][26])00)")
_DATE = (f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
         f"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
         f"|{_LEAP_YEAR}-02-29)")
# RFC 3339 as the engine reads it (domain/contracts/usage.py): a real calendar date, hours to
# 23, no leap second, a fraction of 1-9 digits, Z or an offset within +-23:59.
DATE_TIME = (f"^{_DATE}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{{1,9}})?"
             f"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")
# A quantity as a decimal string: >= 0, < 10^15, at most MAX_DECIMAL_PLACES decimals, at most
# 40 characters, digits and one optional point only.
QUANTITY_TEXT = (f"^(?=.{{1,40}}$)(?:0*[1-9][0-9]{{0,14}}(?:\\.[0-9]{{1,{MAX_DECIMAL_PLACES}}})?"
                 f"|0+(?:\\.[0-9]{{1,{MAX_DECIMAL_PLACES}}})?)$")
PLAIN_DECIMAL = "^[0-9]+(?:\\.[0-9]+)?$"


def _schema(name: str, title: str, description: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": DRAFT, "$id": f"{BASE}{name}.schema.json", "title": title,
            "description": description, **body}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def usage() -> dict[str, Any]:
    return _schema("usage", "usage event", (
        "One message on billing.usage (key: the subscription id), or one event of POST "
        "/v1/usage. `id` is the idempotency key per subscription. Other fields are ignored. "
        "Beside this schema: at most 1 MiB per message, 64 levels of nesting, no key given "
        "twice."), {
        "type": "object",
        "required": ["id", "subscription", "metric", "quantity", "at"],
        "properties": {
            "id": TEXT, "subscription": TEXT, "metric": TEXT,
            "quantity": {"anyOf": [
                {"type": "integer", "minimum": 0, "exclusiveMaximum": 10 ** 15},
                {"type": "string", "pattern": QUANTITY_TEXT}]},
            "at": {"type": "string", "pattern": DATE_TIME},
            "member": _optional(TEXT), "workspace": _optional(TEXT),
            "properties": _optional({
                "type": "object", "maxProperties": MAX_PROPERTIES,
                "propertyNames": {"pattern": f"^{PROPERTY_NAME.pattern}$",
                                  "not": {"enum": sorted(RESERVED_KEYS)}},
                "additionalProperties": TEXT})}})


def _storable_values() -> dict[str, Any]:
    """Any JSON value whose strings and keys hold no U+0000, with no key the event store
    reserves, nested at most MAX_DEPTH levels below the command object."""
    defs: dict[str, Any] = {}
    scalars: list[dict[str, Any]] = [{"type": "string", "pattern": NO_NUL},
                                     {"type": ["number", "boolean", "null"]}]
    names = {"pattern": NO_NUL, "not": {"enum": sorted(RESERVED_KEYS)}}
    for depth in range(MAX_DEPTH, 0, -1):
        if depth == MAX_DEPTH:
            nested = [{"type": "array", "maxItems": 0}, {"type": "object", "maxProperties": 0}]
        else:
            inner = {"$ref": f"#/$defs/depth{depth + 1}"}
            nested = [{"type": "array", "items": inner},
                      {"type": "object", "propertyNames": names, "additionalProperties": inner}]
        defs[f"depth{depth}"] = {"anyOf": [*scalars, *nested]}
    return {"propertyNames": names, "additionalProperties": {"$ref": "#/$defs/depth1"},
            "$defs": defs}


FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "text": TEXT,
    "integer": {"type": "integer", "exclusiveMinimum": -SAFE_INTEGER,
                "exclusiveMaximum": SAFE_INTEGER},
    "flag": {"type": "boolean"},
    "amount": {"anyOf": [{"type": "integer", "minimum": 0, "exclusiveMaximum": SAFE_INTEGER},
                         {"type": "string", "maxLength": 40, "pattern": PLAIN_DECIMAL}]},
    "object": {"type": "object"},
    "names": {"type": "array", "items": {"type": "string"}},
}


def command() -> dict[str, Any]:
    per_type = []
    for kind in sorted(FIELDS):
        fields = FIELDS[kind]
        then: dict[str, Any] = {"properties": {
            name: _optional(FIELD_SCHEMAS[spec.rstrip("?")]) if spec.endswith("?")
            else FIELD_SCHEMAS[spec] for name, spec in fields.items()}}
        required = [name for name, spec in fields.items() if not spec.endswith("?")]
        if required:
            then["required"] = required
        per_type.append({"if": {"properties": {"type": {"const": kind}}}, "then": then})
    return _schema("command", "lifecycle command", (
        "One message on billing.commands (key: the subscription id), or the body of POST "
        "/v1/commands. `id` is the idempotency key per subscription. Each type's fields are "
        "listed in docs/contracts.md; other fields are ignored. What a field names (a plan, "
        "a pack) and the customer's details are checked when the command runs."), {
        "type": "object",
        "required": ["id", "type", "subscription", "at"],
        "properties": {
            "id": TEXT, "subscription": TEXT, "type": {"enum": sorted(HANDLERS)},
            "at": {"type": "string", "maxLength": 64, "pattern": DATE_TIME}},
        "allOf": per_type,
        **_storable_values()})


def event() -> dict[str, Any]:
    return _schema("event", "billing.events message", (
        "One domain event on billing.events (key: the subscription, or another aggregate's "
        "id). Consumers deduplicate by (subscription, version). `Undecodable` stands for a "
        "stored event this version could not read (its `data` says which and why); "
        "`data` holds the event's fields, amounts and times as strings."), {
        "type": "object",
        "required": ["subscription", "version", "type", "type_version", "time", "position",
                     "data"],
        "properties": {
            "subscription": {"type": "string", "minLength": 1},
            "version": {"type": "integer", "minimum": 1},
            "type": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
            "type_version": {"type": "integer", "minimum": 1},
            "time": {"anyOf": [{"type": "string", "pattern": DATE_TIME}, {"type": "null"}]},
            "position": {"type": "integer", "minimum": 1},
            "data": {"type": "object"}},
        "additionalProperties": False})


def dead_letter() -> dict[str, Any]:
    cut = {"type": "object", "required": ["size", "sha256"], "additionalProperties": False,
           "properties": {"size": {"type": "integer", "minimum": 0},
                          "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}
    return _schema("dead-letter", "billing.dlq message", (
        "A record a worker could not apply (key: the original key): the original bytes, "
        "where they came from, and a machine-readable code (also in the billing-error-code "
        "header). `value` is the original value when it is UTF-8 and whole; `value_b64` "
        "always holds it (cut at the letter size, then `value_truncated` says how large it "
        "was)."), {
        "type": "object",
        "required": ["code", "error", "consumer", "topic", "partition", "offset", "key",
                     "value", "value_b64", "dead_lettered_at"],
        "properties": {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "error": {"type": "string", "maxLength": 1000},
            "consumer": {"type": "string"}, "topic": {"type": "string"},
            "partition": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "key": {"type": ["string", "null"]}, "value": {"type": ["string", "null"]},
            "value_b64": {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"},
            "dead_lettered_at": {"type": "string", "pattern": DATE_TIME},
            "value_truncated": cut, "key_truncated": cut},
        "additionalProperties": False})


AMOUNT = {"anyOf": [{"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": PLAIN_DECIMAL}]}
MONEY = {"anyOf": [{"type": "integer", "minimum": 0},
                   {"type": "string", "pattern": "^[0-9]+(?:\\.[0-9]{1,2}0*)?$",
                    "$comment": "at most two decimals that are not zero: 12.50, 12.500"}]}
WHOLE = {"type": "integer", "minimum": 0}
NAME = {"type": "string", "minLength": 1, "pattern": NO_NUL}
NAMES = {"type": "array", "items": NAME}
FLAG = {"type": "boolean"}
DIMENSION = {"type": "string", "pattern": f"^{PROPERTY_NAME.pattern}$"}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "object", "properties": properties,
                            "additionalProperties": False}
    if required:
        body["required"] = list(required)
    return body


def catalog() -> dict[str, Any]:
    period_names = sorted(PERIODS)
    allowance = _closed({
        "included": AMOUNT, "limit": {"enum": list(LIMIT_KINDS)},
        "overage_unit_price": AMOUNT, "daily_cap": AMOUNT,
        "charge_model": {"enum": list(CHARGE_MODELS)},
        "on_daily_cap": {"enum": list(DAILY_CAP_ACTIONS)}, "minimum_spend": MONEY,
        "package": _closed({"size": AMOUNT, "price": MONEY}, ("size", "price")),
        "percentage": _closed({"rate": AMOUNT, "fixed_fee": MONEY, "per_event_min": MONEY,
                               "per_event_max": MONEY}, ("rate",)),
        "tiers": {"type": "array", "items": _closed(
            {"up_to": AMOUNT, "unit_price": AMOUNT, "flat_fee": MONEY}, ("unit_price",))},
        "aggregation": {"enum": list(AGGREGATIONS)}, "billed": {"enum": list(BILLED)},
        "unique_of": DIMENSION, "of": NAME, "group_by": DIMENSION,
        "where": {"type": "object", "minProperties": 1, "propertyNames": DIMENSION,
                  "additionalProperties": {"anyOf": [NAME, {
                      "type": "array", "minItems": 1, "items": NAME}]}}})
    plan_properties = {
        "name": NAME, "rank": WHOLE, "price": MONEY,
        "prices": {"type": "object", "propertyNames": {"enum": period_names},
                   "additionalProperties": MONEY},
        "periods": {"type": "array", "items": {"enum": period_names}},
        "annual_discount_percent": AMOUNT,
        "allowances": {"type": "object", "additionalProperties": allowance},
        "included_seats": WHOLE, "extra_seat_price": MONEY,
        "limits": {"type": "object", "additionalProperties": WHOLE},
        "features": NAMES, "recommended_for": NAMES,
        "trial_days": WHOLE, "commitment_months": WHOLE,
        "auto_renew": FLAG, "available": FLAG, "user_plans": FLAG,
        "downgrade_usage_check": FLAG, "credit_released_seats": FLAG,
        "countries": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]{2}$"}},
        "available_from": {"type": "string", "pattern": f"^{MOMENT}$"},
        "available_until": {"type": "string", "pattern": f"^{MOMENT}$"},
        "upgrade_proration": {"enum": ["prorate", "full"]},
        "change_invoicing": {"enum": ["now", "next_invoice"]},
        "minimum_commitment": MONEY, "interval": {"enum": list(INTERVALS)},
        "progressive_billing": _closed({"thresholds": {"type": "array", "minItems": 1,
                                                       "items": MONEY}, "every": MONEY},
                                       ("thresholds",))}
    assert set(plan_properties) == PLAN_KEYS and set(allowance["properties"]) == ALLOWANCE_KEYS
    head = {"id": NAME, "version": {"anyOf": [NAME, WHOLE]}, "currency": NAME,
            "free_plan": NAME, "thresholds": {"type": "array", "items": {
                "type": "integer", "exclusiveMinimum": 0, "maximum": 100}},
            "late_usage_grace_minutes": WHOLE}
    issuer = {key: WHOLE if key == "payment_terms_days" else NAME for key in sorted(ISSUER_KEYS)}
    coupon = {"name": NAME, "percent_off": AMOUNT, "amount_off": MONEY,
              "duration": {"enum": list(DURATIONS)}, "periods": WHOLE,
              "applies_to": {"enum": list(COUPON_SCOPES)}, "max_redemptions": WHOLE,
              "redeem_by": {"type": "string", "pattern": f"^{MOMENT}$"}, "plans": NAMES}
    assert set(head) == HEAD_KEYS
    pack = {"name": NAME, "metric": NAME, "quantity": AMOUNT, "price": MONEY,
            "lasts_days": WHOLE}
    assert set(pack) == PACK_KEYS
    top = {
        "catalog": _closed(head, ("id", "currency")),
        "plans": {"type": "object", "minProperties": 1, "additionalProperties": {
            "allOf": [_closed(plan_properties, ("name",)),
                      {"anyOf": [{"required": ["price"]}, {"required": ["prices"]}]}]}},
        "packs": {"type": "object", "additionalProperties": _closed(
            pack, ("name", "metric", "quantity", "price"))},
        "addons": {"type": "object", "additionalProperties": _closed(
            {"name": NAME, "price": MONEY, "features": NAMES, "per_user": FLAG,
             "solution": NAME}, ("name", "price"))},
        "user_plans": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"anyOf": [
                MONEY, _closed({"price": MONEY, "features": NAMES}, ("price",))]}}},
        "issuer": _closed(issuer),
        "coupons": {"type": "object", "additionalProperties": _closed(coupon, ("name",))}}
    assert set(top) == TOP_KEYS and set(coupon) == COUPON_KEYS
    return _schema("catalog", "catalog file", (
        "A catalog (TOML, as read by tomllib) checked for its structure and the syntax of "
        "each value. The loader (domain/catalog/model.py) also checks what relates values "
        "to each other (docs/catalog.md): tier bounds increase and the last has no up_to; an "
        "overage allowance has a price and a hard one none; a charge model has the keys it "
        "needs and no other price; free_plan names a plan; every "
        "pack's metric is some plan's; a higher rank never costs less; prices have at most "
        "two decimals; annual_discount_percent is below 100."), {
        **_closed(top, ("catalog", "plans")), "$comment": "TOML has no null"})


SCHEMAS = {"usage": usage, "command": command, "event": event, "dead-letter": dead_letter,
           "catalog": catalog}


def rendered() -> dict[str, str]:
    """File name -> text, as committed under docs/schemas/."""
    return {f"{name}.schema.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in SCHEMAS.items()}


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "docs/schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (folder / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
