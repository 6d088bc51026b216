"""Configuration from the environment; every worker and the CLI read the same variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "y", "on"}


@dataclass(frozen=True)
class Topics:
    usage: str
    commands: str
    events: str
    dlq: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            usage=f"{prefix}billing.usage",
            commands=f"{prefix}billing.commands",
            events=f"{prefix}billing.events",
            dlq=f"{prefix}billing.dlq",
        )

    def all(self) -> list[str]:
        return [self.usage, self.commands, self.events, self.dlq]


@dataclass(frozen=True)
class Settings:
    stack: str = "embedded"
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    data_dir: Path = Path(".billing")
    topics: Topics = field(default_factory=lambda: Topics.with_prefix(""))
    partitions: int = 4
    pg_fsync: bool = True
    max_poll_records: int = 5000
    session_timeout_ms: int = 6000
    catalog_path: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        catalog = e.get("BILLING_CATALOG")
        return cls(
            stack=e.get("BILLING_STACK", "embedded"),
            database_url=e.get("BILLING_DATABASE_URL") or None,
            kafka_bootstrap=e.get("BILLING_KAFKA_BOOTSTRAP") or None,
            data_dir=Path(e.get("BILLING_DATA_DIR", ".billing")).absolute(),
            topics=Topics.with_prefix(e.get("BILLING_TOPIC_PREFIX", "")),
            partitions=int(e.get("BILLING_PARTITIONS", "4")),
            pg_fsync=_bool(e.get("BILLING_PG_FSYNC"), True),
            max_poll_records=int(e.get("BILLING_MAX_POLL_RECORDS", "5000")),
            session_timeout_ms=int(e.get("BILLING_SESSION_TIMEOUT_MS", "6000")),
            catalog_path=Path(catalog) if catalog else None,
        )
