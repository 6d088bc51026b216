"""Test stacks: one real PostgreSQL server and one real Kafka-protocol broker per test session
(embedded by default; `BILLING_TEST_STACK=containers` uses testcontainers; `external` uses
BILLING_DATABASE_URL and BILLING_KAFKA_BOOTSTRAP). The embedded stack's broker is Tansu, or
Apache Kafka with `BILLING_TEST_BROKER=apache-kafka` (skipped with the reason where Java or
Maven is missing, unless `BILLING_REQUIRE_APACHE_KAFKA=1`, as `.ci/run` sets). Every test gets
its own database and its own topics, so tests never share state."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import pytest

from infra.config import Settings, Topics

# The API's test fixtures (api_engine, api), for tests/integration and tests/browser.
pytest_plugins = ["tests.integration.api_server"]


@dataclasses.dataclass
class TestStack:
    __test__ = False  # not a test class (pytest would try to collect it where imported)
    admin_url: str
    kafka_bootstrap: str
    mode: str

    def database_url(self, dbname: str) -> str:
        parsed = urlparse(self.admin_url)
        return urlunparse(parsed._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    from infra.stack.embedded import start_stack

    mode = os.environ.get("BILLING_TEST_STACK", "embedded")
    broker = os.environ.get("BILLING_TEST_BROKER", "tansu")
    if broker == "apache-kafka" and os.environ.get("BILLING_REQUIRE_APACHE_KAFKA") != "1":
        from infra.stack.apache_kafka import unavailable

        reason = unavailable()
        if reason is not None:
            pytest.skip(f"Apache Kafka broker: {reason}")
    settings = dataclasses.replace(Settings.from_env(), stack=mode, broker=broker,
                                   pg_fsync=False)
    started = start_stack(settings, dbname="postgres")
    try:
        yield TestStack(started.database_url, started.kafka_bootstrap, mode)
    finally:
        started.close()


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return dataclasses.replace(Settings(), topics=Topics.with_prefix(prefix), partitions=2,
                               max_poll_records=500)


@pytest.fixture
def database_url(stack: TestStack) -> Iterator[str]:
    from infra.stack.embedded import create_database, drop_database

    name = f"test_{uuid.uuid4().hex[:12]}"
    create_database(stack.admin_url, name)
    yield stack.database_url(name)
    drop_database(stack.admin_url, name)


@pytest.fixture
def engine(settings: Settings, database_url: str, stack: TestStack) -> Iterator[object]:
    from infra.wiring.engine import Engine

    e = Engine.open(settings, database_url, stack.kafka_bootstrap)
    try:
        yield e
    finally:
        e.close()
