"""Lifecycle commands over `billing.commands`: idempotent by id, refusals dead-lettered with a
code, the consumer never stops; the billing clock rolls every subscription."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import publish, read_topic, until

pytestmark = pytest.mark.integration


def command(cid: str, ctype: str, sub: str, at: str, **fields: object) -> tuple[bytes, bytes]:
    body = {"id": cid, "type": ctype, "subscription": sub, "at": at, **fields}
    return sub.encode(), orjson.dumps(body)


def run_commands(engine: Engine, ends: dict[int, int]):  # type: ignore[no-untyped-def]
    loop, ingestor = engine.commands()
    positions = loop.positions
    topic = engine.settings.topics.commands

    def done() -> bool:
        stored = {p: positions.position(topic, p) for p in ends}
        return all(stored[p] is not None and stored[p] + 1 >= end  # type: ignore[operator]
                   for p, end in ends.items() if end)

    until(done, lambda: loop.poll_once(100))
    return ingestor


def test_commands_apply_once_and_refusals_are_dead_lettered(engine: Engine) -> None:
    t = "2026-11-01T00:00:00+00:00"
    stream = [
        command("c1", "subscribe", "sub-a", t, plan="basic", account="acme"),
        command("c2", "add_seats", "sub-a", "2026-11-16T00:00:00+00:00", count=2),
        command("c2", "add_seats", "sub-a", "2026-11-16T00:00:00+00:00", count=2),  # replay
        command("c3", "change_plan", "sub-a", "2026-11-16T00:00:00+00:00", plan="basic"),
        command("c4", "buy_pack", "sub-a", "2026-11-16T00:00:00+00:00", pack="nope"),
        command("c5", "change_plan", "sub-nobody", t, plan="scale"),
        (b"sub-a", b'{"id": "c6", "type": "explode", "subscription": "sub-a", "at": "x"}'),
        (b"sub-a", b"{not json"),
        command("c7", "change_plan", "sub-a", "2026-11-16T00:00:00+00:00", plan="scale"),
    ]
    ingestor = run_commands(engine, publish(engine, stream, engine.settings.topics.commands))
    # Replayed once more, later: no second effect and no second dead letter.
    run_commands(engine, publish(engine, stream[:6], engine.settings.topics.commands))

    sub = engine.app.load_as_stored("sub-a")
    assert sub.plan_id == "scale" and sub.seats is None  # the starter plans sell no seats
    s = ingestor.stats
    assert (s.applied, s.unchanged, s.duplicates) == (2, 1, 1)
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq, 5)]
    assert sorted(x["code"] for x in letters) == sorted(
        ["seats_not_for_sale", "unknown_pack", "unknown_subscription", "unknown_command",
         "malformed_json"])


def test_clock_advance_rolls_every_subscription_and_never_goes_back(engine: Engine) -> None:
    from domain.shared.errors import CommandRefused

    start = datetime(2026, 11, 1, tzinfo=UTC)
    engine.app.subscribe_many([(f"s{i}", "acct", "basic") for i in range(5)], start)
    recorder = engine.app.recorder
    changed, events = engine.app.advance_clock(datetime(2027, 1, 1, 1, tzinfo=UTC),
                                               recorder.subscription_ids())  # type: ignore[attr-defined]
    # Two rolls (Dec 1, Jan 1) and the first closing per subscription (Dec 1 + 1 h grace);
    # the second closing is due at Jan 1 01:00, which is the clock's time: due, so included.
    assert changed == 5 and events == 5 * 4
    sub = engine.app.load_as_stored("s3")
    assert sub.cycle_start == datetime(2027, 1, 1, tzinfo=UTC)
    assert engine.app.clock().now == datetime(2027, 1, 1, 1, tzinfo=UTC)  # type: ignore[union-attr]
    with pytest.raises(CommandRefused) as refused:
        engine.app.advance_clock(start, [])
    assert refused.value.code == "clock_backwards"
    rolled = [e for e in engine.app.events.get("s3") if type(e).__name__ == "CycleRolled"]
    assert [Decimal(e.charges[0]["amount"]) for e in rolled] == [Decimal("190.00")] * 2


def test_the_clock_spread_over_processes_rolls_the_same(engine: Engine) -> None:
    from infra.ops.parallel import process_runner

    start = datetime(2026, 11, 1, tzinfo=UTC)
    engine.app.subscribe_many([(f"p{i}", "acct", "basic") for i in range(40)], start)
    ids = engine.app.recorder.subscription_ids()  # type: ignore[attr-defined]
    runner = process_runner(engine.database_url, engine.settings, processes=2, batch=7)
    changed, events = engine.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC), ids,
                                               runner=runner)
    assert (changed, events) == (40, 80)  # a roll and a closing each
    assert 1 <= len(runner.peak_rss_mib) <= 2 and all(m > 10 for m in runner.peak_rss_mib.values())
    engine.app._cache.clear()
    assert {engine.app.get(s).cycle_start for s in ids} == {datetime(2026, 12, 1, tzinfo=UTC)}
    assert engine.app.clock().now == datetime(2026, 12, 1, 2, tzinfo=UTC)  # type: ignore[union-attr]
