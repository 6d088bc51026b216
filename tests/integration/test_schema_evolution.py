"""An event type's new version with an upcaster: stored old-format events still replay."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import T0, subscribe

pytestmark = pytest.mark.integration

# A Subscribed event as version 1 stored it: no `customer` field, no class_version marker.
V1_SUBSCRIBED = {
    "timestamp": {"_type_": "datetime_iso", "_data_": "2026-11-01T00:00:00+00:00"},
    "originator_topic": "domain.subscription:Subscription",
    "account": "old-acct", "status": "active",
    "cycle_start": {"_type_": "datetime_iso", "_data_": "2026-11-01T00:00:00+00:00"},
    "cycle_end": {"_type_": "datetime_iso", "_data_": "2026-12-01T00:00:00+00:00"},
    "trial_end": None, "commitment_end": None, "seats": None, "charges": [],
}


def test_a_stored_v1_event_replays_to_the_same_state_as_a_v2_one(engine: Engine) -> None:
    subscribe(engine, "sub-new")
    with psycopg.connect(engine.database_url) as conn:
        state = orjson.loads(bytes(conn.execute(
            "SELECT state FROM billing_events WHERE originator_id = 'sub-new' "
            "AND originator_version = 1").fetchone()[0]))  # type: ignore[index]
        assert state["class_version"] == 2 and "customer" in state
        v1 = {**V1_SUBSCRIBED, "terms": state["terms"]}
        conn.execute("INSERT INTO billing_events (originator_id, originator_version, topic, "
                     "state) VALUES ('sub-old', 1, 'domain.subscription:Subscription.Subscribed',"
                     " %s)", (orjson.dumps(v1),))
    old = engine.app.load_as_stored("sub-old")
    new = engine.app.load_as_stored("sub-new")
    assert old.customer == {} == new.customer
    assert (old.plan_id, old.cycle_start, old.cycle_end, old.terms) == (
        new.plan_id, new.cycle_start, new.cycle_end, new.terms)
    assert old.cycle_start == T0
    # It keeps working: the old subscription takes new events as version 2.
    old.update_customer({"country": "SE"}, T0)
    engine.app.save_batch([old], None)
    assert engine.app.load_as_stored("sub-old").customer == {"country": "SE"}
