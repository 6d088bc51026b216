"""The engine on a real Apache Kafka broker's TLS listeners, configured as a deployment does,
by BILLING_KAFKA_SECURITY_PROTOCOL and BILLING_KAFKA_SSL_CAFILE (certificates made at run time
by a throwaway CA): the whole pipeline over SSL, a client that does not trust the CA refused in
bounded time, and SCRAM over SASL_SSL. Needs Java 17, Maven and openssl (skipped with the
reason on a machine without them, unless BILLING_REQUIRE_APACHE_KAFKA=1)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.config import Settings
from infra.kafka import clients as kafka
from infra.stack.apache_kafka import ApacheKafkaBroker, TlsFiles, unavailable
from infra.wiring.engine import Engine
from tests.integration import tls_certificates
from tests.integration.helpers import (
    ingest_all,
    project_all,
    publish,
    quota_used,
    read_topic,
    relay_all,
    subscribe,
    tokens_ingested_over,
    usage,
)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    os.environ.get("BILLING_TEST_BROKER") != "apache-kafka",
    reason="brokers of its own, Apache Kafka: runs with BILLING_TEST_BROKER=apache-kafka "
           "(as .ci/run's second pass does)")]
USER, PASSWORD = "billing", "scram-s3cret-7"
# kafka-python's clients wait for a first broker this long (bootstrap_timeout_ms, 30 s by
# default, which no BILLING_* variable sets) before giving up; the refusal tests shorten it,
# and the refusal must come within it, plus a margin.
BOOTSTRAP_SECONDS = 5
SHORT_WAIT = {"bootstrap_timeout_ms": BOOTSTRAP_SECONDS * 1000}


def tls_options(ca: Path | None, protocol: str = "SSL", **env: str) -> dict[str, Any]:
    """The Kafka client settings a deployment's environment gives the engine."""
    variables = {"BILLING_KAFKA_SECURITY_PROTOCOL": protocol, **env}
    if ca is not None:
        variables["BILLING_KAFKA_SSL_CAFILE"] = str(ca)
    return Settings.from_env(variables).kafka_options


def scram_env(password: str) -> dict[str, str]:
    return {"BILLING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "BILLING_KAFKA_SASL_USERNAME": USER, "BILLING_KAFKA_SASL_PASSWORD": password}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    reason = unavailable() or tls_certificates.unavailable()
    if reason is not None and os.environ.get("BILLING_REQUIRE_APACHE_KAFKA") != "1":
        pytest.skip(f"Apache Kafka broker over TLS: {reason}")
    return tls_certificates.server_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(tls_files: TlsFiles,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    broker = ApacheKafkaBroker(tmp_path_factory.mktemp("kafka-tls"),
                               Settings.from_env().data_dir / "apache-kafka",
                               scram_users={USER: PASSWORD}, tls=tls_files)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_the_pipeline_runs_over_tls(tls_broker: ApacheKafkaBroker, tls_files: TlsFiles,
                                    settings: Settings, database_url: str,
                                    tmp_path: Path) -> None:
    """Topics created and their identities read (admin client), usage published by the engine
    and by `billing usage publish` (its settings from the environment), ingested, a malformed
    record dead-lettered, events relayed and projected into the quota, health probed: every
    client over the SSL listener."""
    secured = dataclasses.replace(settings, kafka_options=tls_options(tls_files.ca))
    assert secured.kafka_options == {"security_protocol": "SSL",
                                     "ssl_cafile": str(tls_files.ca)}
    bootstrap = f"127.0.0.1:{tls_broker.ssl_port}"
    engine = Engine.open(secured, database_url, bootstrap)
    try:
        subscribe(engine, "sub-tls", plan="scale")
        ends = publish(engine, [*(usage(f"u{i}", "sub-tls", "tokens", 5) for i in range(20)),
                                (b"sub-tls", b'{"id": "x", ')])
        lines = tmp_path / "usage.jsonl"
        lines.write_text("".join(usage(f"cli{i}", "sub-tls", "tokens", 1)[1].decode() + "\n"
                                 for i in range(3)), "utf-8")
        env = engine.subprocess_env(BILLING_KAFKA_SECURITY_PROTOCOL="SSL",
                                    BILLING_KAFKA_SSL_CAFILE=str(tls_files.ca))
        published = _cli("usage", "publish", str(lines), "--json", env=env)
        assert published.returncode == 0, published.stderr
        for partition, end in json.loads(published.stdout)["end_offsets"].items():
            ends[int(partition)] = max(end, ends.get(int(partition), 0))
        ingestor = ingest_all(engine, ends)
        assert ingestor.stats.dead_lettered == 1
        letters = [orjson.loads(r.value) for r in read_topic(engine, secured.topics.dlq, 1)]
        assert [letter["code"] for letter in letters] == ["malformed_json"]
        relay_all(engine)
        project_all(engine)
        assert quota_used(database_url) == {("sub-tls", "tokens"): Decimal(103)}
        assert kafka.broker_reachable(bootstrap, secured.topics.all(),
                                      options=secured.kafka_options)
        ready = _cli("ready", "--json", env=env)
        assert ready.returncode == 0 and json.loads(ready.stdout)["broker"], ready.stdout
    finally:
        engine.close()


def test_a_client_that_does_not_trust_the_ca_is_refused_in_bounded_time(
        tls_broker: ApacheKafkaBroker, settings: Settings, database_url: str,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A broker certificate from another CA: the engine does not start (KafkaError once
    kafka-python's bootstrap wait is over; the certificate error is in its log) instead of
    hanging. Without a CA file (the system's CAs only), readiness says no within seconds."""
    bootstrap = f"127.0.0.1:{tls_broker.ssl_port}"
    other_ca, _ = tls_certificates.certificate_authority(tmp_path / "other")
    distrusting = dataclasses.replace(settings,
                                      kafka_options={**tls_options(other_ca), **SHORT_WAIT})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(
            kafka.BrokerUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        Engine.open(distrusting, database_url, bootstrap).close()
    assert time.monotonic() - started < BOOTSTRAP_SECONDS + 15
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text

    no_ca = tls_options(None)
    assert no_ca == {"security_protocol": "SSL"}
    started = time.monotonic()
    assert not kafka.broker_reachable(bootstrap, settings.topics.all(), options=no_ca)
    env = {"BILLING_STACK": "external", "BILLING_DATABASE_URL": database_url,
           "BILLING_KAFKA_BOOTSTRAP": bootstrap, "BILLING_KAFKA_SECURITY_PROTOCOL": "SSL"}
    ready = _cli("ready", "--json", env=env)
    assert ready.returncode == 1 and json.loads(ready.stdout)["broker"] is False, ready.stdout
    assert time.monotonic() - started < 20


def test_the_pipeline_runs_over_sasl_ssl_with_scram(tls_broker: ApacheKafkaBroker,
                                                    tls_files: TlsFiles, settings: Settings,
                                                    database_url: str) -> None:
    options = tls_options(tls_files.ca, "SASL_SSL", **scram_env(PASSWORD))
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_plain_username"] == USER
    secured = dataclasses.replace(settings, kafka_options=options)
    assert tokens_ingested_over(secured, database_url, f"127.0.0.1:{tls_broker.sasl_ssl_port}",
                                "sub-sasl-ssl") == "100"


def test_a_wrong_password_over_sasl_ssl_is_refused(tls_broker: ApacheKafkaBroker,
                                                   tls_files: TlsFiles) -> None:
    """The TLS handshake succeeds, SCRAM does not: refused once the bootstrap wait is over, and
    the broker's log says why. (Whether kafka-python reads the broker's error answer before the
    broker closes the connection is a race, so the client's log is not the witness.)"""
    options = tls_options(tls_files.ca, "SASL_SSL", **scram_env("not-the-password"),
                          BILLING_KAFKA_REQUEST_TIMEOUT_MS="5000")
    started = time.monotonic()
    with pytest.raises(kafka.BrokerUnreachable, match=r"(?i)sasl|authenticat"):
        kafka.ensure_topics(f"127.0.0.1:{tls_broker.sasl_ssl_port}", ["t-never"], 1,
                            {**options, **SHORT_WAIT})
    assert time.monotonic() - started < BOOTSTRAP_SECONDS + 15
    refusals = [line for line in tls_broker.log_path.read_text("utf-8").splitlines()
                if "Failed authentication" in line]
    assert any("invalid credentials" in line for line in refusals), refusals


def test_mutual_tls_takes_a_client_certificate_and_refuses_a_client_without_one(
        tls_broker: ApacheKafkaBroker, tls_files: TlsFiles, settings: Settings,
        database_url: str) -> None:
    """The MTLS listener asks every client for a certificate its CA signed: the engine, given
    one by BILLING_KAFKA_SSL_CERTFILE and BILLING_KAFKA_SSL_KEYFILE, runs; without one it is
    refused, with the reason in the error."""
    cert, key = tls_certificates.client_files(tls_files.ca.parent)
    options = tls_options(tls_files.ca, BILLING_KAFKA_SSL_CERTFILE=str(cert),
                          BILLING_KAFKA_SSL_KEYFILE=str(key))
    assert options["ssl_certfile"] == str(cert) and options["ssl_keyfile"] == str(key)
    bootstrap = f"127.0.0.1:{tls_broker.mtls_port}"
    assert tokens_ingested_over(dataclasses.replace(settings, kafka_options=options),
                                database_url, bootstrap, "sub-mtls", 10, 2) == "20"
    with pytest.raises(kafka.BrokerUnreachable, match=f"no Kafka broker answered at {bootstrap}"):
        kafka.ensure_topics(bootstrap, ["t-never"], 1, {**tls_options(tls_files.ca), **SHORT_WAIT})
