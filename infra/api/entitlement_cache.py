"""Entitlement readings kept between requests, read again in the background.

An entitlement check reads one quota row with its versions; on these machines that database
round trip costs about 1 ms of CPU through the API, several times everything else in the
answer (bench/api.py). Upstream services ask the same question many times between two
changes, so the API keeps each reading and follows `billing.events` itself (every partition,
from its end when the API starts; no consumer group, no position): a message for a
subscription tells its newest stored version. Ten times a second the follower reads again, in
one query, the readings answered from since they were taken that are past half of `max_age`
(five seconds by default) or that `billing.events` has shown to be behind (`due`).

A kept reading answers while it is younger than `max_age`; one that is behind (a newer version
was seen, or it was read while the projection was behind) only while it is younger than
`behind_age` (one second). Its answer then says so: `pending_events` counts the versions seen
that the reading does not include, and `checked_at` says when it was taken. So an answer from
memory is at most about a tenth of a second older than the database's (the refresh), except
when the database cannot keep up (then, after `behind_age`, checks ask it themselves), and it
is never silent about what it lacks. What the store holds and the relay has not published yet
is not seen on `billing.events`; `max_age` bounds how long that goes uncounted.

If the follower stops (broker gone), nothing is kept any more: every check reads the database,
as without the cache."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)

Key = tuple[str, str, Any]  # (subscription, metric, UTC day)


class EntitlementCache:
    def __init__(self, capacity: int = 100_000, max_age: float = 5.0,
                 behind_age: float = 1.0) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self.behind_age = behind_age
        self._readings: OrderedDict[Key, tuple[float, datetime, tuple[Any, ...]]] = \
            OrderedDict()
        self._per_subscription: Counter[str] = Counter()  # readings kept per subscription
        self._asking: Counter[str] = Counter()  # subscriptions being read right now
        self._newest: dict[str, int] = {}  # newest version seen, kept subscriptions only
        self._wanted: set[Key] = set()  # readings answered from since taken
        self._lock = threading.Lock()
        self.following = False
        self.hits = 0
        self.misses = 0

    def get(self, key: Key, projected_at: int, count: bool = True
            ) -> tuple[tuple[Any, ...], datetime] | None:
        """The reading and when it was taken, if kept, younger than `max_age`, and (when
        `billing.events` has shown a newer version since) younger than `behind_age`.
        `projected_at`: where a reading holds its projected version. `count=False`: the
        caller counts the hit itself (or asks again on a miss)."""
        with self._lock:
            kept = self._readings.get(key)
            age = time.monotonic() - kept[0] if kept is not None else 0.0
            if kept is None or age > self.max_age or (
                    age > self.behind_age
                    and kept[2][projected_at] < self._newest.get(key[0], 0)):
                self.misses += count
                return None
            self._readings.move_to_end(key)
            self._wanted.add(key)
            self.hits += count
            return kept[2], kept[1]

    def due(self, projected_at: int, limit: int = 5_000) -> list[Key]:
        """Readings answered from since they were taken that are past half their age, or
        that `billing.events` has shown to be behind: the follower reads them again in one
        query, so that checks keep answering from memory instead of each asking the
        database when its reading expires."""
        now = time.monotonic()
        found: list[Key] = []
        with self._lock:
            for key in list(self._wanted):
                kept = self._readings.get(key)
                if kept is None:
                    self._wanted.discard(key)
                elif now - kept[0] > self.max_age / 2 \
                        or kept[2][projected_at] < self._newest.get(key[0], 0):
                    self._wanted.discard(key)
                    found.append(key)
                    if len(found) >= limit:
                        break
        return found

    def newest(self, subscription: str) -> int:
        return self._newest.get(subscription, 0)

    def asking(self, subscription: str) -> None:
        """Before reading the database: versions seen meanwhile are remembered."""
        with self._lock:
            self._asking[subscription] += 1

    def answered(self, key: Key, reading: tuple[Any, ...] | None, stored_version: int,
                 taken_at: datetime) -> None:
        """After reading it: keep the reading (if the follower runs), the newest version being
        what the store had then or what the follower saw meanwhile."""
        subscription = key[0]
        with self._lock:
            self._asking[subscription] -= 1
            if self._asking[subscription] <= 0:
                del self._asking[subscription]
            if reading is None or not self.following:
                if subscription not in self._per_subscription \
                        and subscription not in self._asking:
                    self._newest.pop(subscription, None)
                return
            self._newest[subscription] = max(self._newest.get(subscription, 0), stored_version)
            if key not in self._readings:
                self._per_subscription[subscription] += 1
            self._readings[key] = (time.monotonic(), taken_at, reading)
            self._readings.move_to_end(key)
            while len(self._readings) > self.capacity:
                self._forget(self._readings.popitem(last=False)[0])

    def seen(self, subscription: str, version: int) -> None:
        if subscription in self._per_subscription or subscription in self._asking:
            with self._lock:
                if version > self._newest.get(subscription, 0):
                    self._newest[subscription] = version

    def stop_following(self) -> None:
        with self._lock:
            self.following = False
            self._readings.clear()
            self._per_subscription.clear()
            self._newest.clear()
            self._wanted.clear()

    def _forget(self, key: Key) -> None:
        self._wanted.discard(key)
        subscription = key[0]
        self._per_subscription[subscription] -= 1
        if self._per_subscription[subscription] <= 0:
            del self._per_subscription[subscription]
            if subscription not in self._asking:
                self._newest.pop(subscription, None)


def follow(cache: EntitlementCache, open_consumer: Callable[[], Any], topic: str,
           stop: threading.Event, refresh: Callable[[], None] = lambda: None,
           refresh_every: float = 0.1) -> threading.Thread:
    """A daemon thread reading `topic` from its end into `cache.seen`, calling `refresh`
    (read the readings `due` again) every `refresh_every` seconds; the cache keeps readings
    only while it runs."""
    from consumers.loop import partitions_of

    consumer = open_consumer()
    partitions = partitions_of(consumer, topic)
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)  # resolved now: what is published from here on is seen
    cache.following = True

    def run() -> None:
        refreshed = time.monotonic()
        try:
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=int(refresh_every * 1000)).values():
                    for record in records:
                        version = _version(record.value)
                        if record.key is not None and version is not None:
                            cache.seen(record.key.decode(), version)
                if time.monotonic() - refreshed >= refresh_every:
                    refreshed = time.monotonic()
                    try:
                        refresh()
                    except Exception as e:  # the database: checks ask it themselves
                        log.warning("refreshing kept entitlement readings failed: %s", e)
        except Exception:
            log.exception("the entitlement cache stopped following %s; every check reads "
                          "the database", topic)
        finally:
            cache.stop_following()
            consumer.close()

    thread = threading.Thread(target=run, name="entitlement-cache", daemon=True)
    thread.start()
    return thread


def _version(value: bytes | None) -> int | None:
    try:
        version = orjson.loads(value or b"").get("version")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return version if isinstance(version, int) else None
