"""The `billing.events` message format: one JSON object per domain event.

{"subscription": str, "version": int, "type": str, "type_version": int, "time": RFC 3339,
 "position": int (notification id in the event store), "data": {...}}
Decimals are written as strings; times with their offset.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import Notification

_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def event_message(app: Application[Any], notification: Notification) -> dict[str, Any]:
    event: Any = app.mapper.to_domain_event(notification)
    return {
        "subscription": notification.originator_id,
        "version": notification.originator_version,
        "type": type(event).__qualname__.rsplit(".", 1)[-1],
        "type_version": getattr(type(event), "class_version", 1),
        "time": event.timestamp.isoformat(),
        "position": notification.id,
        "data": {k: v for k, v in vars(event).items() if k not in _ENVELOPE},
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message, default=_default)


def decode(value: bytes) -> dict[str, Any]:
    message = orjson.loads(value)
    if not isinstance(message, dict):
        raise ValueError("an event message is a JSON object")
    return message
