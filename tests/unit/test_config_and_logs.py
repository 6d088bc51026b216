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
    from infra.cli.main import command_fields

    assert command_fields(["plan=scale", "count=2", "trial=true"]) == {
        "plan": "scale", "count": 2, "trial": True}
    assert command_fields(["customer.country=DE", "customer.vat_id=DE136695976",
                           "customer.business=true"]) == {
        "customer": {"country": "DE", "vat_id": "DE136695976", "business": True}}
    assert command_fields(['customer:={"name": "Łódź sp. z o.o.", "country": "PL"}',
                           "note=a:=b"]) == {
        "customer": {"name": "Łódź sp. z o.o.", "country": "PL"}, "note": "a:=b"}
    with pytest.raises(SystemExit):
        command_fields(["plan"])
    with pytest.raises(SystemExit):
        command_fields(["customer:={not json"])
