"""Logging: one JSON object per line (BILLING_LOG_FORMAT=json, the default of `billing run`) or
plain text. Fields passed with `extra=` (subscription, topic, partition, position, worker, ...)
become keys of the object. Secrets never reach a log line: connection URLs are logged
redacted, and any value that contains a configured password is masked here as a last guard."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _secrets() -> list[str]:
    found = [os.environ.get(name, "") for name in ("BILLING_KAFKA_SASL_PASSWORD",
                                                   "BILLING_KAFKA_SSL_PASSWORD", "PGPASSWORD")]
    found.append(urlparse(os.environ.get("BILLING_DATABASE_URL", "")).password or "")
    return [s for s in found if len(s) >= 4]


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets = _secrets()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        text = orjson.dumps(entry, default=str).decode()
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def configure(level: int, json_lines: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
