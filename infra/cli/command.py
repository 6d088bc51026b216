"""`billing command`: one lifecycle command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from infra.cli.common import OK, UsageError, at_or_billing_now, billing_now, connect, open_app
from infra.config import Settings


def _field_value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def command_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` (true/false and integers typed, the rest text), `a.b=value` into an object
    (`customer.country=DE`), `key:=JSON` for any JSON value (`customer:='{"country":"DE"}'`)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        raw_json = ":=" in pair and pair.index(":=") < pair.find("=") + 1
        key, sep, value = pair.partition(":=" if raw_json else "=")
        if not sep or not key:
            raise UsageError(f"fields are key=value or key:=JSON, not {pair!r}", "usage")
        try:
            parsed = orjson.loads(value) if raw_json else _field_value(value)
        except orjson.JSONDecodeError as e:
            raise UsageError(f"{key}: not JSON: {e}", "usage") from None
        *path, last = key.split(".")
        target = fields
        for part in path:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"{key}: {part} is not an object", "usage")
        target[last] = parsed
    return fields


def cmd_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one lifecycle command against the event store (or publish it with --publish)."""
    import uuid

    from domain.contracts.commands import Command, parse_command
    from infra.kafka import clients as kafka

    fields = command_fields(args.fields)  # a usage error before anything is opened

    def parsed(at: datetime) -> tuple[dict[str, Any], Command]:
        raw: dict[str, Any] = {"id": args.id or f"cli-{uuid.uuid4().hex}", "type": args.type,
                               "subscription": args.subscription, "at": at.isoformat(),
                               **fields}
        return raw, parse_command(raw)  # refused here, before anything is sent or written

    if args.publish:
        raw, _ = parsed(at_or_billing_now(args.at, settings))
        stack = connect(settings)
        producer = kafka.producer(stack.kafka_bootstrap, settings)
        try:
            kafka.publish(producer, settings.topics.commands,
                          [(args.subscription.encode(), orjson.dumps(raw))])
        finally:
            producer.close()
        print(json.dumps({"published": raw}) if args.json else f"published {raw['id']}")
        return OK
    app = open_app(settings)
    try:
        raw, command = parsed(args.at or billing_now(app))
        outcome = app.handle(command)
    finally:
        app.close()
    result = {"id": raw["id"], "type": args.type, "subscription": args.subscription,
              "result": outcome.result, "events": outcome.events}
    print(json.dumps(result) if args.json
          else f"{args.type} {args.subscription}: {outcome.result} ({outcome.events} events)")
    return OK
