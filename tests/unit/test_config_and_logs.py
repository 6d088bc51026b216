"""Settings from the environment (Kafka SASL/TLS passthrough) and the JSON log lines: secrets
stay out of both."""

from __future__ import annotations

import json
from typing import Any

import pytest


def test_kafka_security_settings_pass_through_and_stay_out_of_repr() -> None:
    from infra.config import Settings, redact_url

    settings = Settings.from_env({
        "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BILLING_KAFKA_SASL_MECHANISM": "PLAIN",
        "BILLING_KAFKA_SASL_USERNAME": "svc", "BILLING_KAFKA_SASL_PASSWORD": "hunter22",
        "BILLING_DATABASE_URL": "postgresql://u:pw-9876@db:5432/billing"})
    assert settings.kafka_options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                                      "sasl_plain_username": "svc",
                                      "sasl_plain_password": "hunter22"}
    assert "hunter22" not in repr(settings) and "pw-9876" not in repr(settings)
    assert redact_url(settings.database_url) == "postgresql://u:***@db:5432/billing"


def test_json_log_lines_mask_configured_secrets(monkeypatch: Any) -> None:
    import logging

    from infra.logs import JsonFormatter

    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD", "kafka-secret-1")
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://u:db-secret-2@h:5432/b")
    record = logging.LogRecord("billing", logging.ERROR, __file__, 1,
                               "failed with %s and %s", ("kafka-secret-1", "db-secret-2"), None)
    record.subscription, record.position = "sub-1", 42
    line = json.loads(JsonFormatter().format(record))
    assert "secret" not in line["msg"] and line["msg"].count("***") == 2
    assert (line["subscription"], line["position"], line["level"]) == ("sub-1", 42, "error")


def test_command_fields_from_the_command_line() -> None:
    """Issue 17.10: `billing command` passes objects (the customer, whose country decides
    VAT) as dotted keys or as JSON."""
    from infra.cli.common import UsageError
    from infra.cli.main import command_fields

    assert command_fields(["plan=scale", "count=2", "trial=true"]) == {
        "plan": "scale", "count": 2, "trial": True}
    assert command_fields(["customer.country=DE", "customer.vat_id=DE136695976",
                           "customer.business=true"]) == {
        "customer": {"country": "DE", "vat_id": "DE136695976", "business": True}}
    assert command_fields(['customer:={"name": "Łódź sp. z o.o.", "country": "PL"}',
                           "note=a:=b"]) == {
        "customer": {"name": "Łódź sp. z o.o.", "country": "PL"}, "note": "a:=b"}
    with pytest.raises(UsageError):
        command_fields(["plan"])
    with pytest.raises(UsageError):
        command_fields(["customer:={not json"])


def _refused(env: dict[str, str]) -> str:
    from infra.config import ConfigError, Settings

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "\n" not in message and next(iter(env)) in message
    return message


@pytest.mark.parametrize("word,value", [
    ("1", True), ("true", True), ("YES", True), ("On", True), ("y", True),
    ("0", False), ("false", False), ("no", False), ("OFF", False), ("N", False)])
def test_booleans_take_exactly_the_usual_words(word: str, value: bool) -> None:
    from infra.config import Settings

    settings = Settings.from_env({"BILLING_OPTIMISTIC_INGEST": word, "BILLING_MIGRATE": word,
                                  "BILLING_WRITE_BEHIND": word, "BILLING_PG_FSYNC": word})
    assert (settings.optimistic_ingest, settings.migrate, settings.write_behind,
            settings.pg_fsync) == (value,) * 4


@pytest.mark.parametrize("name", ["BILLING_OPTIMISTIC_INGEST", "BILLING_MIGRATE",
                                  "BILLING_WRITE_BEHIND", "BILLING_PG_FSYNC"])
@pytest.mark.parametrize("word", ["onn", "2", "enabled", " on", "tru"])
def test_a_boolean_that_is_no_known_word_is_refused(name: str, word: str) -> None:
    """`BILLING_OPTIMISTIC_INGEST=onn` was silently off."""
    message = _refused({name: word})
    assert "1/true/yes/on/y or 0/false/no/off/n" in message


@pytest.mark.parametrize("name,value,allowed", [
    ("BILLING_PARTITIONS", "abc", "1 to 10,000"),
    ("BILLING_PARTITIONS", "0", "1 to 10,000"),
    ("BILLING_PARTITIONS", "4.5", "1 to 10,000"),
    ("BILLING_MAX_POLL_RECORDS", "-1", "1 to 1,000,000"),
    ("BILLING_SESSION_TIMEOUT_MS", "10", "1,000 to 3,600,000"),
    ("BILLING_MAX_MESSAGE_BYTES", "1e6", "1,024 to"),
    ("BILLING_KAFKA_REQUEST_TIMEOUT_MS", "soon", "1 to 3,600,000"),
    ("BILLING_STALL_SECONDS", "abc", "above 0"),
    ("BILLING_STALL_SECONDS", "0", "above 0"),
    ("BILLING_STALL_SECONDS", "inf", "above 0"),
])
def test_numbers_are_numbers_within_their_range(name: str, value: str, allowed: str) -> None:
    """`BILLING_PARTITIONS=abc` ended in a traceback that did not name the variable."""
    assert allowed in _refused({name: value})


@pytest.mark.parametrize("name,value,allowed", [
    ("BILLING_STACK", "docker", "embedded, external, containers"),
    ("BILLING_LOG_FORMAT", "xml", "json, text"),
    ("BILLING_KAFKA_SECURITY_PROTOCOL", "TLS", "SASL_SSL"),
    ("BILLING_KAFKA_SASL_MECHANISM", "MD5", "SCRAM-SHA-512"),
])
def test_enumerations_name_their_values(name: str, value: str, allowed: str) -> None:
    assert allowed in _refused({name: value})


@pytest.mark.parametrize("name,value", [
    ("BILLING_DATABASE_URL", "mysql://u@h/db"),
    ("BILLING_DATABASE_URL", "postgresql://u@h:port/db"),
    ("BILLING_KAFKA_BOOTSTRAP", "localhost"),
    ("BILLING_KAFKA_BOOTSTRAP", "a:1,,b:2"),
    ("BILLING_TOPIC_PREFIX", "team a/"),
    ("BILLING_ENDPOINTS", "anywhere"),
    ("BILLING_CATALOG", "/no/such/catalog.toml"),
    ("BILLING_KAFKA_SSL_CAFILE", "/no/such/ca.pem"),
])
def test_addresses_and_paths_are_checked(name: str, value: str) -> None:
    _refused({name: value})


def test_defaults_and_accepted_forms() -> None:
    from infra.config import Settings

    assert Settings.from_env({}) == Settings.from_env({"BILLING_PARTITIONS": "",
                                                       "BILLING_OPTIMISTIC_INGEST": ""})
    settings = Settings.from_env({
        "BILLING_STACK": "external", "BILLING_PARTITIONS": "12",
        "BILLING_DATABASE_URL": "host=db dbname=billing", "BILLING_STALL_SECONDS": "2.5",
        "BILLING_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "BILLING_TOPIC_PREFIX": "t1a2.",
        "BILLING_ENDPOINTS": "0.0.0.0:9100", "BILLING_LOG_FORMAT": "json",
        "BILLING_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "BILLING_KAFKA_REQUEST_TIMEOUT_MS": "4000"})
    assert (settings.stack, settings.partitions, settings.stall_seconds,
            settings.topics.usage, settings.endpoints, settings.log_format) == (
        "external", 12, 2.5, "t1a2.billing.usage", "0.0.0.0:9100", "json")
    assert settings.kafka_options == {"security_protocol": "SASL_SSL",
                                      "request_timeout_ms": 4000}


def test_a_client_certificate_comes_with_its_key_and_hostname_checks_can_be_turned_off(
        tmp_path: Any) -> None:
    import pytest

    from infra.config import ConfigError, Settings

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env({"BILLING_KAFKA_SSL_CERTFILE": str(cert)})
    settings = Settings.from_env({
        "BILLING_KAFKA_SECURITY_PROTOCOL": "ssl", "BILLING_KAFKA_SSL_CERTFILE": str(cert),
        "BILLING_KAFKA_SSL_KEYFILE": str(key), "BILLING_KAFKA_SSL_PASSWORD": "key-pass-77",
        "BILLING_KAFKA_SSL_CHECK_HOSTNAME": "off"})
    assert settings.kafka_options == {
        "security_protocol": "SSL", "ssl_certfile": str(cert), "ssl_keyfile": str(key),
        "ssl_password": "key-pass-77", "ssl_check_hostname": False}
    assert "key-pass-77" not in repr(settings)
    with pytest.raises(ConfigError, match="BILLING_KAFKA_SSL_CHECK_HOSTNAME"):
        Settings.from_env({"BILLING_KAFKA_SSL_CHECK_HOSTNAME": "maybe"})


def test_json_log_lines_mask_the_client_key_password(monkeypatch: Any) -> None:
    import logging

    from infra.logs import JsonFormatter

    monkeypatch.setenv("BILLING_KAFKA_SSL_PASSWORD", "tls-key-secret")
    record = logging.LogRecord("billing", logging.ERROR, __file__, 1, "key %s", ("tls-key-secret",),
                               None)
    assert "tls-key-secret" not in JsonFormatter().format(record)
