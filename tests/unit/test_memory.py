"""Workers report their own peak memory, not the peak of the process that spawned them."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from infra.ops.memory import peak_rss_mib

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _touch(mib: int) -> float:
    block = bytearray(mib * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # resident, not only reserved
    return peak_rss_mib()


def test_a_spawned_worker_reports_its_own_peak_not_its_parents() -> None:
    held = _touch(200)  # the parent's peak is now at least 200 MiB
    assert held >= 200
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_touch, (20,))
    assert 20 <= child < held - 100  # getrusage's ru_maxrss would give the parent's figure


def test_a_process_that_is_gone_reports_nothing() -> None:
    process = multiprocessing.get_context("spawn").Process(target=_touch, args=(1,))
    process.start()
    process.join()
    assert process.pid is not None and peak_rss_mib(process.pid) == 0.0


def test_the_subscription_cache_keeps_the_most_recently_used_within_its_bound() -> None:
    """Full, the cache drops its least recently loaded or written eighth at once, never the
    whole cache (a cliff of reloads); a bound of 0 keeps nothing."""
    from types import SimpleNamespace

    from domain.app.billing_app import BillingApplication
    from domain.catalog.model import Catalog

    app = BillingApplication(Catalog.from_toml(
        '[catalog]\nid = "c"\ncurrency = "EUR"\n[plans.p]\nname = "P"\nprice = "1.00"\n'))
    app.cache_limit = 16
    for n in range(16):
        app._remember(SimpleNamespace(id=f"s{n}"))
    app._remember(SimpleNamespace(id="s0"))  # used again: now the most recent
    app._remember(SimpleNamespace(id="s16"))  # full: the two least recent go
    assert list(app._cache) == [*(f"s{n}" for n in range(3, 16)), "s0", "s16"]
    app.cache_limit = 0
    app._remember(SimpleNamespace(id="s17"))
    assert "s17" not in app._cache


def test_subscriptions_on_one_plan_share_one_read_only_copy_of_its_terms() -> None:
    """Loaded from events or from a snapshot, subscriptions with equal terms hold one object;
    a change in place is refused (it would change every holder's), and a copy is mutable."""
    import copy
    import pickle
    from datetime import UTC, datetime

    import orjson

    from domain.app.billing_app import BillingApplication
    from domain.catalog.model import Catalog
    from domain.shared.shared_values import FrozenDict
    from domain.subscription.aggregate import Subscription

    catalog = Catalog.from_toml(
        '[catalog]\nid = "c"\ncurrency = "EUR"\n[plans.p]\nname = "P"\nprice = "1.00"\n'
        '[plans.p.allowances.tokens]\nincluded = 100\nlimit = "hard"\n'
        '[plans.q]\nname = "Q"\nprice = "2.00"\n')
    app = BillingApplication(catalog, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    at = datetime(2026, 11, 1, tzinfo=UTC)
    app.subscribe_many([("a", "A", "p"), ("b", "B", "p"), ("c", "C", "q")], at)
    app.evict(["a", "b", "c"])
    a, b, c = (app.load_as_stored(i) for i in "abc")
    assert a.terms is b.terms and a.terms is not c.terms
    assert type(a.terms) is FrozenDict and a.terms["allowances"]["tokens"]["included"] == "100"
    with pytest.raises(TypeError, match="read-only"):
        a.terms["price"] = "0.00"
    with pytest.raises(TypeError, match="read-only"):
        a.terms["allowances"]["tokens"].update(included="1")
    with pytest.raises(TypeError, match="read-only"):
        a.terms["thresholds"].append(50)
    assert b.terms["price"] == "1.00"
    mutable = copy.deepcopy(a.terms)
    mutable["allowances"]["tokens"]["included"] = "1"
    assert type(mutable) is dict and a.terms["allowances"]["tokens"]["included"] == "100"
    assert type(pickle.loads(pickle.dumps(a.terms))) is dict
    assert orjson.loads(orjson.dumps(a.terms)) == a.terms
    a.advance_to(datetime(2026, 12, 1, 0, 30, tzinfo=UTC), catalog)  # November stays open
    assert a.closing is not None and a.closing["allowances"] is a.terms["allowances"]
    snapshot = Subscription.Snapshot.take(a)

    def restore() -> Subscription:
        stored_state = orjson.loads(orjson.dumps(snapshot.state, default=str))  # as read back
        assert type(stored_state["terms"]) is dict
        restored: Subscription = Subscription.Snapshot(
            originator_id="a", originator_version=snapshot.originator_version,
            timestamp=snapshot.timestamp, topic=snapshot.topic, state=stored_state).mutate(None)
        return restored

    first, second = restore(), restore()
    assert first.terms is a.terms and second.terms is a.terms
    assert type(first.closing["allowances"]) is FrozenDict
    assert first.closing["allowances"] is second.closing["allowances"]


def test_a_fact_of_shared_terms_is_worked_out_once_per_shared_value() -> None:
    """Asked of a shared (read-only) value, the fact is looked up after the first time; asked
    of a mutable value, it is worked out every time (the value may have changed since)."""
    from domain.shared.shared_values import kept_per_shared_value, shared

    calls: list[object] = []

    @kept_per_shared_value
    def metered(allowances: dict[str, object]) -> bool:
        calls.append(allowances)
        return bool(allowances)

    terms = shared({"tokens": {"included": "100"}})
    assert metered(terms) and metered(terms) and len(calls) == 1
    assert metered(shared({"tokens": {"included": "100"}})) and len(calls) == 1  # the same one
    mutable: dict[str, object] = {}
    assert not metered(mutable)
    mutable["tokens"] = {}
    assert metered(mutable) and len(calls) == 3
