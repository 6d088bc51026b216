"""What the API's routes share, opened once per `billing serve` process: the engine (the event
store, the catalog, a producer), a small pool of read connections, an async one for the
entitlement check (the hot path answers without a thread hop), and who each key is."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from domain.contracts.commands import Command
from domain.subscription.aggregate import Subscription
from infra.api import keys
from infra.api.entitlement_cache import EntitlementCache, follow
from infra.api.errors import ApiError, not_found
from infra.kafka import clients as kafka
from infra.kafka.clients import KeyPartitions, RecordBatches
from infra.wiring.engine import Engine

# How long a key is trusted without asking the database again: a revoked key stops working
# within this time.
KEY_CACHE_SECONDS = 5.0
# Key ids not in memory looked up in the database at once, per process: requests with made-up
# key ids (each a lookup) can hold at most these connections of the pool, never the rest of the
# API's database work; they wait their turn in the event loop, not in the thread pool.
KEY_LOOKUPS = 2


class BusinessClock:
    """The engine's "now": the billing clock's time where it is ahead of the wall clock (a
    simulated deployment), else the wall clock's. The stored clock is read again in the
    background (`refresh`, from the entitlement cache's follower) once it is half a second
    old, and trusted for a second; a request finding it older reads it itself, one request
    at a time (when each read the store, a thousand requests a second queued on it)."""

    TRUSTED = 1.0

    def __init__(self, read: Callable[[], datetime | None]) -> None:
        self._read = read
        self._read_at = -1.0
        self._clock: datetime | None = None
        self._reading = threading.Lock()

    def cached(self) -> datetime | None:
        """Now, if the billing clock was read in the last second (no I/O), else None."""
        if time.monotonic() - self._read_at > self.TRUSTED:
            return None
        wall = datetime.now(UTC)
        return wall if self._clock is None or self._clock < wall else self._clock

    def refresh(self, older_than: float = TRUSTED / 2) -> None:
        with self._reading:
            if time.monotonic() - self._read_at > older_than:
                self._clock = self._read()
                self._read_at = time.monotonic()

    def now(self) -> datetime:
        found = self.cached()
        while found is None:
            self.refresh(self.TRUSTED)
            found = self.cached()
        return found


@dataclass
class ApiContext:
    engine: Engine
    pool: ConnectionPool[Any]
    apool: AsyncConnectionPool[Any] | None = None
    app_lock: threading.Lock = field(default_factory=threading.Lock)
    _publish_lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: dict[str, tuple[float, keys.Principal | None, bytes]] = field(default_factory=dict)
    _batches: RecordBatches | None = None
    _partitions: dict[str, KeyPartitions] = field(default_factory=dict)
    clock: BusinessClock = field(init=False)
    entitlements: EntitlementCache = field(default_factory=EntitlementCache)
    accounts: dict[str, str] = field(default_factory=dict)  # subscription -> its account
    _stop: threading.Event = field(default_factory=threading.Event)
    # Keys not in memory are looked up at most this many at a time (below).
    key_lookups: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(
        KEY_LOOKUPS))

    def __post_init__(self) -> None:
        self.clock = BusinessClock(self._billing_clock)

    def _billing_clock(self) -> datetime | None:
        with self.app_lock:
            clock = self.engine.app.clock()
        return None if clock is None else clock.now

    @classmethod
    def open(cls, engine: Engine, pool_size: int = 4) -> ApiContext:
        pool: ConnectionPool[Any] = ConnectionPool(
            engine.database_url, min_size=1, max_size=pool_size, open=True,
            kwargs={"autocommit": True})
        if engine.settings.migrate:  # else the owner made it (`billing roles setup`)
            with pool.connection() as conn:
                keys.ensure_schema(conn)
        return cls(engine, pool)

    async def open_async(self, size: int = 4) -> None:
        """At the server's start: the async pool, and the entitlement cache's follower."""
        self.apool = AsyncConnectionPool(self.engine.database_url, min_size=size, max_size=size,
                                         open=False, kwargs={"autocommit": True})
        await self.apool.open(wait=True)
        engine = self.engine
        self._stop.clear()
        follow(self.entitlements, lambda: kafka.consumer(
            engine.kafka_bootstrap, engine.settings, client_id="billing-api-cache",
            fetch_min_bytes=1),  # a kept reading must stop answering as soon as it can
            engine.settings.topics.events, self._stop, refresh=self._refresh)

    def _refresh(self) -> None:
        """Ten times a second, from the entitlement cache's follower."""
        from infra.api.entitlements import refresh_kept

        self.clock.refresh()
        self.refresh_keys()
        refresh_kept(self)

    async def close_async(self) -> None:
        self._stop.set()
        if self.apool is not None:
            await self.apool.close()

    def close(self) -> None:
        self.pool.close()

    # --- who is asking ------------------------------------------------------------------

    def known_principal(self, token: str) -> tuple[bool, keys.Principal | None]:
        """(True, who) when the answer needs no database (a malformed token, a key seen in
        the last few seconds); (False, None) when `principal` must ask."""
        parsed = keys.parse(token)
        if parsed is None:
            return True, None
        key_id, secret = parsed
        cached = self._keys.get(key_id)
        if cached is None or time.monotonic() - cached[0] > KEY_CACHE_SECONDS:
            return False, None
        _, principal, digest = cached
        return True, principal if principal and keys.matches(digest, secret) else None

    def principal(self, token: str) -> keys.Principal | None:
        parsed = keys.parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        cached = self._keys.get(key_id)
        if cached is None or time.monotonic() - cached[0] > KEY_CACHE_SECONDS:
            self._read_keys([key_id])
            cached = self._keys[key_id]
        _, principal, digest = cached
        if principal is None or not keys.matches(digest, secret):
            return None
        return principal

    def refresh_keys(self) -> None:
        """Read again the known keys read more than half their trust ago (in the background,
        so that a busy key never makes a request wait for the database; unknown ones are read
        again only when asked)."""
        now = time.monotonic()
        old = [key_id for key_id, (read_at, who, _) in list(self._keys.items())
               if who is not None and now - read_at > KEY_CACHE_SECONDS / 2]
        if old:
            self._read_keys(old)

    def _read_keys(self, key_ids: list[str]) -> None:
        with self.pool.connection() as conn:
            rows = {row[0]: row[1:] for row in conn.execute(
                "SELECT key_id, secret_sha256, account, admin FROM api_keys WHERE "
                "key_id = ANY(%s) AND revoked_at IS NULL", (key_ids,))}
        read_at = time.monotonic()
        if len(self._keys) + len(key_ids) > 10_000:
            self._keys.clear()
        for key_id in key_ids:
            row = rows.get(key_id)
            self._keys[key_id] = (read_at, None, b"") if row is None else (
                read_at, keys.Principal(key_id, row[1], row[2]), bytes(row[0]))

    # --- the event store ----------------------------------------------------------------

    def subscriptions(self, ids: list[str]) -> dict[str, Subscription]:
        """The subscriptions as stored now (those that exist)."""
        app = self.engine.app
        with self.app_lock:
            app.revalidate(ids)
            app.preload(ids)
            found = {}
            for sid in ids:
                sub = app.find(sid)
                if sub is not None:
                    found[sid] = sub
            return found

    def own_subscription(self, principal: keys.Principal, sid: str) -> Subscription:
        """The subscription, if this key may see it; a tenant asking for another account's is
        told it does not exist."""
        sub = self.subscriptions([sid]).get(sid)
        if sub is None or not principal.may_see(sub.account):
            raise not_found(f"subscription {sid!r}")
        return sub

    def preview(self, command: Command) -> dict[str, Any]:
        """What a command would do (domain/app/preview_command.py), nothing saved."""
        with self.app_lock:
            return self.engine.app.preview(command)

    # --- Kafka --------------------------------------------------------------------------

    def publish(self, topic: str, messages: list[tuple[bytes, bytes]]) -> dict[int, int]:
        """Records keyed by subscription, on the partitions the engine's partitioner gives
        (murmur2, as Kafka's Java client), acknowledged by the broker before returning."""
        with self._publish_lock:
            if self._batches is None:
                self._batches = RecordBatches(self.engine.producer())
            producer = self._batches.producer
            partition_of = self._partitions.get(topic)
            if partition_of is None:
                partition_of = self._partitions[topic] = KeyPartitions(
                    lambda: producer.partitions_for(topic))
            partition_of.refresh()
            records = []
            for key, value in messages:
                partition = partition_of(key)
                if partition is None:
                    raise ApiError(503, "broker_unavailable",
                                   f"no partitions known for {topic}")
                records.append((partition, key, value))
            return self._batches.publish(topic, records)

