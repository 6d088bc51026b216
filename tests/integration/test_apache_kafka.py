"""The engine on a real Apache Kafka broker's SASL/SCRAM listener (issue 19.1): the whole
pipeline with credentials, and a wrong password refused. Needs Java 17 and Maven (skipped with
the reason on a machine without them, unless BILLING_REQUIRE_APACHE_KAFKA=1)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import Settings
from infra.kafka import clients as kafka
from infra.stack import apache_kafka
from infra.stack.apache_kafka import ApacheKafkaBroker, unavailable
from tests.integration.helpers import tokens_ingested_over

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    os.environ.get("BILLING_TEST_BROKER") != "apache-kafka",
    reason="brokers of its own, Apache Kafka: runs with BILLING_TEST_BROKER=apache-kafka "
           "(as .ci/run's second pass does)")]
USER, PASSWORD = "billing", "scram-s3cret-7"


def scram(password: str) -> dict[str, str]:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": USER, "sasl_plain_password": password}


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    reason = unavailable()
    if reason is not None and os.environ.get("BILLING_REQUIRE_APACHE_KAFKA") != "1":
        pytest.skip(f"Apache Kafka broker: {reason}")
    broker = ApacheKafkaBroker(tmp_path_factory.mktemp("kafka-scram"),
                               Settings.from_env().data_dir / "apache-kafka",
                               scram_users={USER: PASSWORD})
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_the_pipeline_runs_over_sasl_scram(scram_broker: ApacheKafkaBroker, settings: Settings,
                                           database_url: str) -> None:
    secured = dataclasses.replace(settings, kafka_options=scram(PASSWORD))
    assert tokens_ingested_over(secured, database_url, f"127.0.0.1:{scram_broker.sasl_port}",
                                "sub-sasl") == "100"


def test_a_wrong_password_is_refused(scram_broker: ApacheKafkaBroker) -> None:
    """Refused, and the error says why (kafka-python only logs it); its bootstrap wait is
    shortened from 30 s."""
    with pytest.raises(kafka.BrokerUnreachable, match=r"(?i)sasl|authenticat"):
        kafka.ensure_topics(f"127.0.0.1:{scram_broker.sasl_port}", ["t-never"], 1,
                            {**scram("not-the-password"), "bootstrap_timeout_ms": 5000})


def test_the_broker_keeps_its_topics_across_a_restart(scram_broker: ApacheKafkaBroker,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Data kept: a restart of the same folder finds its log directory formatted and the
    topics and records still there. The cluster id begins with "-" (one in 64 random ids do:
    the format command once read it as an option and failed)."""
    monkeypatch.setattr(apache_kafka, "_cluster_id", lambda: "-AAAAAAAAAAAAAAAAAAAAA")
    broker = ApacheKafkaBroker(tmp_path, Settings.from_env().data_dir / "apache-kafka")
    bootstrap = broker.start()
    try:
        kafka.ensure_topics(bootstrap, ["kept"], 1)
        ends = kafka.publish(kafka.producer(bootstrap), "kept", [(b"k", b"v")] * 3)
        assert ends == {0: 3}
    finally:
        broker.stop()
    bootstrap = broker.start()
    try:
        records = kafka.read_from_start(bootstrap, Settings(), "kept", "billing-check",
                                        quiet_seconds=5)
        assert [r.value for r in records] == [b"v"] * 3
    finally:
        broker.stop()
