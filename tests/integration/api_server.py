"""`billing serve`'s app on a real uvicorn server in a thread of the test, on a free port,
over an engine of the test's own (its database, its topics, the catalog it gives)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn

from infra.api import keys
from infra.api.app import serving_app
from infra.api.context import ApiContext
from infra.stack.embedded import free_port
from infra.wiring.engine import Engine


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


@contextmanager
def running_api(engine: Engine) -> Iterator[RunningApi]:
    ctx = ApiContext.open(engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(serving_app(ctx), host="127.0.0.1", port=port,
                                          access_log=False, log_config=None, loop="asyncio",
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
