"""The entitlement decision (pure) and the API's kept readings (no I/O)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from infra.api.entitlement_cache import EntitlementCache
from projections.quota.entitlements import Freshness, decide

NOW = datetime(2027, 3, 10, 12, tzinfo=UTC)
FRESH = Freshness(3, 3, NOW, NOW)


def row(limit_kind: str = "hard", used: str = "0", included: str = "30", packs: str = "0",
        daily_cap: str | None = None) -> dict[str, Any]:
    return {"subscription_id": "s", "metric": "credits", "plan_id": "p",
            "included": Decimal(included), "packs": Decimal(packs), "used": Decimal(used),
            "limit_kind": limit_kind, "daily_cap": None if daily_cap is None else Decimal(
                daily_cap), "cycle_start": NOW, "cycle_end": NOW}


@pytest.mark.parametrize(("reading", "today", "requested", "access", "reason"), [
    (row(used="29"), "0", "1", True, None),
    (row(used="29"), "0", "2", False, "would_exceed_limit"),
    (row(used="30"), "0", "0", False, "limit_reached"),
    (row(used="30", packs="10"), "0", "10", True, None),
    (row(used="31", limit_kind="overage"), "0", "5", True, None),
    (row(daily_cap="5"), "4", "1", True, None),
    (row(daily_cap="5"), "4", "2", False, "would_exceed_daily_cap"),
    (row(daily_cap="5"), "5", "0", False, "daily_cap_reached"),
    (row(used="30", daily_cap="5"), "5", "0", False, "limit_reached"),  # the cycle first
])
def test_access_follows_the_limit_kind_packs_and_the_daily_cap(
        reading: dict[str, Any], today: str, requested: str, access: bool,
        reason: str | None) -> None:
    answer = decide(reading, Decimal(today), Decimal(requested), NOW, FRESH)
    assert (answer["has_access"], answer["reason"]) == (access, reason)


def test_overage_units_are_only_those_past_the_usable_amount_and_amounts_are_plain() -> None:
    answer = decide(row(used="28", limit_kind="overage", included="2E+1", packs="10"),
                    Decimal(0), Decimal(5), NOW, FRESH)
    assert (answer["limit"], answer["remaining"], answer["overage_units"]) == ("30", "2", "3")
    past = decide(row(used="40", limit_kind="overage"), Decimal(0), Decimal(5), NOW, FRESH)
    assert past["overage_units"] == "5"
    capped = decide(row(daily_cap="5"), Decimal(1), Decimal(0), NOW, FRESH)
    assert capped["daily_reset_at"] == "2027-03-11T00:00:00+00:00"


def test_pending_events_count_what_the_model_has_not_applied() -> None:
    assert Freshness(3, 7, None, NOW).view()["pending_events"] == 4
    assert Freshness(7, 3, None, NOW).pending_events == 0


KEY = ("s", "credits", NOW.date())
PROJECTED = 0  # where these test readings hold their projected version


def kept(cache: EntitlementCache, projected: int, stored: int) -> None:
    cache.asking("s")
    cache.answered(KEY, (projected,), stored, NOW)


def test_a_reading_behind_a_newer_version_answers_only_while_young() -> None:
    cache = EntitlementCache(behind_age=0)
    cache.following = True
    kept(cache, 3, 3)
    assert cache.get(KEY, PROJECTED) == ((3,), NOW)
    cache.seen("s", 3)
    assert cache.get(KEY, PROJECTED) is not None
    cache.seen("s", 4)
    assert cache.get(KEY, PROJECTED) is None
    kept(cache, 3, 4)  # read while the projection was behind
    assert cache.get(KEY, PROJECTED) is None
    assert cache.newest("s") == 4  # what an answer counts as pending
    cache.behind_age = 60
    assert cache.get(KEY, PROJECTED) is not None
    kept(cache, 4, 4)
    cache.behind_age = 0
    assert cache.get(KEY, PROJECTED) is not None
    assert (cache.hits, cache.misses) == (4, 2)


def test_the_readings_due_again_are_those_asked_for_that_age_or_fall_behind() -> None:
    cache = EntitlementCache(max_age=60)
    cache.following = True
    kept(cache, 3, 3)
    other = ("s", "tokens", NOW.date())
    cache.asking("s")
    cache.answered(other, (3,), 3, NOW)
    assert cache.due(PROJECTED) == []  # young, and nobody asked since
    cache.get(KEY, PROJECTED)
    assert cache.due(PROJECTED) == []  # asked for, but young and not behind
    cache.seen("s", 4)
    assert cache.due(PROJECTED) == [KEY]  # behind: the one asked for, once
    assert cache.due(PROJECTED) == []
    cache.get(other, PROJECTED)
    cache.max_age = 0
    assert cache.due(PROJECTED) == [other]


def test_a_version_seen_while_the_database_is_asked_is_not_lost() -> None:
    cache = EntitlementCache(behind_age=0)
    cache.following = True
    cache.asking("s")
    cache.seen("s", 5)  # published while the query ran, which read version 4
    cache.answered(KEY, (4,), 4, NOW)
    assert cache.get(KEY, PROJECTED) is None
    assert cache.newest("s") == 5


def test_readings_expire_are_bounded_and_are_not_kept_without_the_follower() -> None:
    cache = EntitlementCache(capacity=2, max_age=0)
    cache.following = True
    kept(cache, 1, 1)
    assert cache.get(KEY, PROJECTED) is None  # older than max_age
    cache.max_age = 60
    for day in range(1, 4):
        cache.asking("s")
        cache.answered(("s", "credits", day), (1,), 1, NOW)
    assert cache.get(("s", "credits", 1), PROJECTED) is None  # the oldest went
    assert cache.get(("s", "credits", 3), PROJECTED) is not None
    cache.stop_following()
    assert cache.get(("s", "credits", 3), PROJECTED) is None
    kept(cache, 1, 1)
    assert cache.get(KEY, PROJECTED) is None
    assert cache.newest("s") == 0


def test_versions_of_subscriptions_not_kept_are_not_remembered() -> None:
    cache = EntitlementCache()
    cache.following = True
    for n in range(1000):
        cache.seen(f"other-{n}", n)
    assert cache.newest("other-999") == 0
    threads = [threading.Thread(target=kept, args=(cache, 1, 1)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get(KEY, PROJECTED) is not None


def test_live_streams_past_the_limit_are_refused_with_a_code(monkeypatch: Any) -> None:
    from infra.api import stream
    from infra.api.errors import ApiError

    monkeypatch.setattr(stream, "_open_streams", stream.MAX_STREAMS - 1)
    stream.admit_stream()
    monkeypatch.setattr(stream, "_open_streams", stream.MAX_STREAMS)
    with pytest.raises(ApiError) as refused:
        stream.admit_stream()
    assert (refused.value.status, refused.value.code) == (429, "too_many_streams")


def test_the_business_clock_is_read_once_however_many_ask_at_once() -> None:
    from infra.api.context import BusinessClock

    reads: list[int] = []
    ahead = datetime(2099, 1, 1, tzinfo=UTC)

    def read() -> datetime:
        reads.append(1)
        time.sleep(0.05)  # a slow store: everyone asks meanwhile
        return ahead
    clock = BusinessClock(read)
    assert clock.cached() is None
    threads = [threading.Thread(target=clock.now) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1 and clock.cached() == ahead
    clock.refresh()  # younger than half its trust: not read again
    assert len(reads) == 1
    clock.refresh(older_than=0)
    assert len(reads) == 2
