"""Benchmark (a design's step 1, docs/scaling.md "Next: a current-state row per subscription"):
what a cold load of a subscription could cost from a compact row of its current state, against
decoding and replaying its events as loads do now. In memory, no PostgreSQL.

    python bench/state_row.py [--subscriptions 5000] [--events-each 2] [--no-record]

The row is the aggregate's attributes as orjson writes them, the plan terms by reference and
the Decimals and datetimes revived by field name: a prototype of the codec, checked here to give
back exactly the state it was made from (for these subscriptions; a real codec needs the
scenario tests' subscriptions too). The events are encoded with the engine's own transcoder.
The best of five rounds is reported (the machine's speed drifts)."""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from common import memory_app, record
from eventsourcing.persistence import Mapper

from domain.app.record_usage import prepare_usage_batch
from domain.contracts.usage import parse_usage
from domain.subscription.aggregate import Subscription
from infra.eventstore.transcoder import OrjsonTranscoder

DATETIMES = ("_created_on", "_modified_on", "started_at", "anchor", "cycle_start", "cycle_end",
             "trial_end", "commitment_end", "cancel_at")
DECIMAL_MAPS = ("used", "extra", "daily_used")
TERMS: dict[int, Any] = {}


def encode(sub: Subscription) -> bytes:
    state = {k: v for k, v in vars(sub).items() if k != "_pending_events"}
    terms = state.pop("terms")
    TERMS[id(terms)] = terms
    state["terms"] = id(terms)
    return orjson.dumps(state, default=_decimal)


def _decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def decode(row: bytes) -> Subscription:
    state = orjson.loads(row)
    state["terms"] = TERMS[state["terms"]]
    for name in DATETIMES:
        if state.get(name) is not None:
            state[name] = datetime.fromisoformat(state[name])
    for name in DECIMAL_MAPS:
        if state.get(name):
            state[name] = {k: Decimal(v) for k, v in state[name].items()}
    sub: Subscription = object.__new__(Subscription)
    sub.__dict__.update(state)
    sub._pending_events = []  # type: ignore[attr-defined]
    return sub


def best(rounds: int, work: Callable[[], object], count: int) -> float:
    """µs per item, the best of `rounds`."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=5_000)
    parser.add_argument("--events-each", type=int, default=2,
                        help="usage events per subscription, in one batch (one event each)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    n = args.subscriptions
    app = memory_app(n, start)
    for round_ in range(args.events_each):
        batch = prepare_usage_batch(app, [parse_usage({
            "id": f"u{round_}-{i}", "subscription": f"sub-{i:07d}", "metric": "tokens",
            "quantity": 1 + i % 7, "member": f"m-{i % 5}",
            "at": (start + timedelta(hours=1 + round_)).isoformat()}) for i in range(n)],
            optimistic=True)
        app.save_batch(batch.aggregates, None)
    transcoder = OrjsonTranscoder()
    library: Any = app.mapper.transcoder
    transcoder.types, transcoder.names = library.types, library.names
    mapper = Mapper(transcoder=transcoder)
    subs = [app.get(f"sub-{i:07d}") for i in range(n)]
    streams = [[mapper.to_stored_event(app.mapper.to_domain_event(e))
                for e in app.recorder.select_events(s.id)] for s in subs]
    rows = [encode(s) for s in subs]
    for sub, row in zip(subs, rows, strict=True):
        if vars(decode(row)) != {**vars(sub), "_pending_events": []}:
            raise SystemExit(f"{sub.id}: the row does not give back its state")

    def replay() -> None:
        for stream in streams:
            aggregate: Any = None
            for stored in stream:
                aggregate = mapper.to_domain_event(stored).mutate(aggregate)

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the workers run (infra.eventstore.recorder.tune_gc)
    replayed = best(5, replay, n)
    decoded = best(5, lambda: [decode(r) for r in rows], n)
    encoded = best(5, lambda: [encode(s) for s in subs], n)
    events = sum(len(s) for s in streams) / n
    stored = sum(len(e.state) for s in streams for e in s) / n
    record("a subscription from its events or from a state row, in memory", [
        f"- {n:,} subscriptions of {events:.0f} events each ({stored:,.0f} bytes stored): "
        f"decode and replay the events **{replayed:.1f} µs** per subscription; decode a "
        f"state row ({sum(map(len, rows)) / n:,.0f} bytes, plan terms by reference) and build "
        f"the object **{decoded:.1f} µs** ({replayed / decoded:.1f} times less); encode "
        f"the row {encoded:.1f} µs",
    ], not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
