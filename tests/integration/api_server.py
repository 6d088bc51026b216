"""`billing serve`'s app on a real uvicorn server in a thread of the test, on a free port,
over an engine of the test's own (its database, its topics, the catalog it gives)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from domain.catalog.model import Catalog
from infra.api import keys
from infra.api.app import SERVER_OPTIONS, serving_app
from infra.api.context import ApiContext
from infra.config import Settings
from infra.stack.embedded import free_port
from infra.wiring.engine import Engine
from tests.integration.helpers import project_all, relay_all

CATALOG = """
[catalog]
id = "api-test"
version = "1"
currency = "EUR"

[plans.free]
name = "Free"
rank = 0
price = 0
allowances.credits = { included = 30, daily_cap = 5, limit = "hard" }
features = ["ai_assistant"]

[plans.pro]
name = "Pro"
rank = 1
price = "25.00"
recommended_for = ["e-commerce"]
allowances.credits = { included = 100, limit = "overage", overage_unit_price = "0.10" }
features = ["ai_assistant", "custom_domains"]

[plans.max]
name = "Max"
rank = 2
price = "50.00"
allowances.credits = { included = 400, limit = "overage", overage_unit_price = "0.05" }
features = ["ai_assistant", "custom_domains", "saml_sso"]

[addons.sso]
name = "SSO"
price = "10.00"
features = ["saml_sso"]

[coupons.SPRING10]
name = "Spring 10 %"
percent_off = 10
"""
START = datetime(2027, 3, 1, tzinfo=UTC)
NOW = datetime(2027, 3, 10, 12, tzinfo=UTC)  # the billing clock, ahead of the wall clock


def open_engine(settings: Settings, database_url: str, bootstrap: str,
                folder: Path) -> Engine:
    """An engine on CATALOG with three subscriptions (two of account acct-a, one of acct-b),
    subscribed at START, the billing clock at NOW, everything relayed and projected."""
    path = folder / "catalog.toml"
    path.write_text(CATALOG, "utf-8")
    engine = Engine.open(settings, database_url, bootstrap, catalog=Catalog.from_file(path))
    engine.app.subscribe_many([("a-free", "acct-a", "free"), ("a-pro", "acct-a", "pro"),
                               ("b-free", "acct-b", "free")], START)
    engine.app.advance_clock(NOW, ["a-free", "a-pro", "b-free"])
    relay_all(engine)
    project_all(engine)
    return engine


@dataclass
class RunningApi:
    url: str
    ctx: ApiContext
    # Each topic's end offsets as the API's publishes were acknowledged: what a test waits
    # for the workers to reach (the broker's own ListOffsets is not trusted on Tansu).
    published: dict[str, dict[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        publish = self.ctx.publish

        def recorded(topic: str, messages: list[tuple[bytes, bytes]]) -> dict[int, int]:
            ends = publish(topic, messages)
            known = self.published.setdefault(topic, {})
            for partition, end in ends.items():
                known[partition] = max(end, known.get(partition, 0))
            return ends
        self.ctx.publish = recorded  # type: ignore[method-assign]

    def key(self, account: str | None = None) -> str:
        """A fresh key's token: a tenant's for `account`, else an operator's."""
        with self.ctx.pool.connection() as conn:
            return keys.create(conn, account=account, admin=account is None).token

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def api_engine(settings: Settings, database_url: str, stack: Any,
               tmp_path: Path) -> Iterator[Engine]:
    """`open_engine` for a test (tests/conftest.py registers this module's fixtures)."""
    engine = open_engine(settings, database_url, stack.kafka_bootstrap, tmp_path)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def api(api_engine: Engine) -> Iterator[RunningApi]:
    """The API on a real server over `api_engine`."""
    with running_api(api_engine) as running:
        yield running


@contextmanager
def running_api(engine: Engine) -> Iterator[RunningApi]:
    ctx = ApiContext.open(engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(serving_app(ctx), host="127.0.0.1", port=port,
                                          **{**SERVER_OPTIONS, "loop": "asyncio"},
                                          timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield RunningApi(f"http://127.0.0.1:{port}", ctx)
    finally:
        server.should_exit = True
        thread.join(15)
        ctx.close()
