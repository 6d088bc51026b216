"""Configuration from the environment; every worker and the CLI read the same variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

# Kafka client settings passed through from the environment (SASL/TLS where the broker has
# them), as kafka-python names them.
KAFKA_OPTIONS = {
    "BILLING_KAFKA_SECURITY_PROTOCOL": ("security_protocol", str),
    "BILLING_KAFKA_SASL_MECHANISM": ("sasl_mechanism", str),
    "BILLING_KAFKA_SASL_USERNAME": ("sasl_plain_username", str),
    "BILLING_KAFKA_SASL_PASSWORD": ("sasl_plain_password", str),
    "BILLING_KAFKA_SSL_CAFILE": ("ssl_cafile", str),
    "BILLING_KAFKA_REQUEST_TIMEOUT_MS": ("request_timeout_ms", int),
}
SECRET_OPTIONS = {"sasl_plain_password"}


def redact_url(url: str | None) -> str:
    """A connection URL without its password, for logs and reports."""
    if not url:
        return ""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username or ''}:***@{parsed.hostname or ''}"
    if parsed.port:
        netloc += f":{parsed.port}"
    return urlunparse(parsed._replace(netloc=netloc))


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
    audit: str = "billing.audit"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            usage=f"{prefix}billing.usage",
            commands=f"{prefix}billing.commands",
            events=f"{prefix}billing.events",
            dlq=f"{prefix}billing.dlq",
            audit=f"{prefix}billing.audit",
        )

    def all(self) -> list[str]:
        return [self.usage, self.commands, self.events, self.dlq, self.audit]


@dataclass(frozen=True)
class Settings:
    stack: str = "embedded"
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    kafka_bootstrap: str | None = None
    data_dir: Path = Path(".billing")
    topics: Topics = field(default_factory=lambda: Topics.with_prefix(""))
    partitions: int = 4
    pg_fsync: bool = True
    max_poll_records: int = 10_000
    session_timeout_ms: int = 6000
    catalog_path: Path | None = None
    kafka_options: dict[str, Any] = field(default_factory=dict, repr=False)
    # Create/upgrade tables at start. Off for workers running as the least-privileged
    # `billing_worker` role (docs/reliability.md): an owner runs `billing roles setup` first.
    migrate: bool = True
    # Ingestion commits each batch in a thread of its own while the next one is prepared
    # (consumers/write_behind.py); BILLING_WRITE_BEHIND=n commits in line.
    write_behind: bool = True
    # Ingestion applies a batch without reading the ledger and the subscriptions' versions
    # first, and redoes it cautiously if a unique key refuses it (consumers/usage.py);
    # BILLING_OPTIMISTIC_INGEST=n always reads first.
    optimistic_ingest: bool = True
    # The largest input record (key + value) a worker reads; a larger one is dead-lettered as
    # `too_large` unread. BILLING_MAX_MESSAGE_BYTES; Kafka's own default limit is 1 MiB too.
    max_message_bytes: int = 1024 * 1024
    # A partition with input waiting that makes no progress for this long, or a worker whose
    # batches fail for this long, makes health unhealthy. BILLING_STALL_SECONDS.
    stall_seconds: float = 30.0
    # Tamper evidence that leaves PostgreSQL (infra/ops/anchors.py): every anchor is appended to
    # this file (BILLING_AUDIT_FILE; default under the data folder) and to the audit topic,
    # with an HMAC under BILLING_AUDIT_KEY when set: a key the database never holds.
    audit_file: Path | None = None
    audit_key: bytes | None = field(default=None, repr=False)

    def anchors_file(self, database_url: str) -> Path:
        """Where the anchors of this database are kept: BILLING_AUDIT_FILE, else a file per
        database and audit topic under the data folder (several stores never share one)."""
        if self.audit_file is not None:
            return self.audit_file
        from urllib.parse import urlparse

        database = urlparse(database_url).path.strip("/") or "postgres"
        return self.data_dir / "audit" / f"{database}.{self.topics.audit}.jsonl"

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
            max_poll_records=int(e.get("BILLING_MAX_POLL_RECORDS", "10000")),
            session_timeout_ms=int(e.get("BILLING_SESSION_TIMEOUT_MS", "6000")),
            catalog_path=Path(catalog) if catalog else None,
            migrate=_bool(e.get("BILLING_MIGRATE"), True),
            write_behind=_bool(e.get("BILLING_WRITE_BEHIND"), True),
            optimistic_ingest=_bool(e.get("BILLING_OPTIMISTIC_INGEST"), True),
            max_message_bytes=int(e.get("BILLING_MAX_MESSAGE_BYTES", str(1024 * 1024))),
            stall_seconds=float(e.get("BILLING_STALL_SECONDS", "30")),
            audit_file=Path(e["BILLING_AUDIT_FILE"]).absolute()
            if e.get("BILLING_AUDIT_FILE") else None,
            audit_key=e["BILLING_AUDIT_KEY"].encode() if e.get("BILLING_AUDIT_KEY") else None,
            kafka_options={name: convert(e[var]) for var, (name, convert)
                           in KAFKA_OPTIONS.items() if e.get(var)},
        )
