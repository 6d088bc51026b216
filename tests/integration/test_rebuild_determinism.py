"""Every read-model row is a function of the events alone: one history applied in any batching
(one event per batch, all in one, random splits, subscriptions interleaved as Kafka partitions
would hand them over) gives the same rows as the live projectors and as `billing rebuild`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from consumers.wire import wire_message
from domain.contracts.commands import parse_command
from infra.ops import rebuild
from infra.wiring.engine import Engine
from projections.invoices import store as invoices
from projections.quota import store as quota_store
from projections.quota.model import apply_all
from tests.integration.helpers import (
    ingest_all,
    invoice_everything,
    project_all,
    publish,
    relay_all,
    until,
    usage,
)
from tests.integration.helpers import invoices_projected as projected_invoices

pytestmark = pytest.mark.integration
TABLES = [t for tables in rebuild.TABLES.values() for t in tables] + ["projection_versions"]
Rows = dict[str, list[str]]
Batches = Callable[[list[dict[str, Any]]], Iterator[list[dict[str, Any]]]]


def history(engine: Engine) -> None:
    """Two months of three subscriptions: plan changes both ways, usage, a profile, invoices
    issued by the clock, payments (one for another subscription's invoice), a void and a
    credit note."""
    app = engine.app

    def run(cid: str, ctype: str, sub: str, at: str, **fields: object) -> None:
        app.handle(parse_command({"id": cid, "type": ctype, "subscription": sub, "at": at,
                                  **fields}))

    def use(month: int, days: range) -> None:
        ingest_all(engine, publish(engine, [
            usage(f"u{month}-{day}-{sub}", sub, "conversations", 4000 + day,
                  at=f"{2026 if month > 1 else 2027}-{month:02d}-{day:02d}T10:00:00+00:00",
                  member=f"m{day % 3}")
            for day in days for sub in ("sub-a", "sub-b", "sub-c")]))

    def advance(to: datetime) -> None:
        app.advance_clock(to, app.recorder.subscription_ids())  # type: ignore[attr-defined]
        invoice_everything(engine)

    for sub, plan, country in (("sub-a", "basic", "NO"), ("sub-b", "scale", "DE"),
                               ("sub-c", "basic", "US")):
        run(f"s-{sub}", "subscribe", sub, "2026-11-01T00:00:00+00:00", plan=plan,
            customer={"name": sub, "country": country})
    run("profile", "update_profile", "sub-c", "2026-11-02T00:00:00+00:00",
        integrations=["shopify"])
    use(11, range(2, 14))
    run("up", "change_plan", "sub-a", "2026-11-16T00:00:00+00:00", plan="scale")
    run("down", "change_plan", "sub-b", "2026-11-20T00:00:00+00:00", plan="basic")
    use(11, range(17, 29))
    advance(datetime(2026, 12, 1, 2, tzinfo=UTC))
    with psycopg.connect(engine.database_url) as conn:
        issued = {sub: number for number, sub in conn.execute(
            "SELECT number, subscription_id FROM invoices WHERE kind = 'invoice' "
            "ORDER BY issued_at DESC, number DESC")}
    at = "2026-12-03T00:00:00+00:00"
    run("paid", "record_payment", "sub-a", at, reference=issued["sub-a"],
        outcome="succeeded", amount="1.00")
    run("failed", "record_payment", "sub-b", at, reference=issued["sub-b"],
        outcome="failed", reason="insufficient_funds", amount="1.00")
    # A payment recorded on one subscription for another's invoice changes neither.
    run("elsewhere", "record_payment", "sub-c", at, reference=issued["sub-b"],
        outcome="succeeded", amount="1.00")
    run("void", "void_invoice", "sub-c", at, number=issued["sub-c"])
    engine.app.issue_credit_note("sub-b", issued["sub-b"], datetime(2026, 12, 4, tzinfo=UTC))
    use(12, range(5, 20))
    run("up2", "change_plan", "sub-c", "2026-12-10T00:00:00+00:00", plan="scale")
    advance(datetime(2027, 1, 1, 2, tzinfo=UTC))
    use(1, range(2, 6))
    advance(datetime(2027, 2, 1, 2, tzinfo=UTC))
    run("up3", "change_plan", "sub-b", "2027-02-10T00:00:00+00:00", plan="enterprise")
    relay_all(engine)
    project_all(engine)
    loop, _ = engine.invoice_projector()
    until(lambda: projected_invoices(engine), lambda: loop.poll_once(100))


def store_messages(engine: Engine) -> list[dict[str, Any]]:
    app = engine.app
    return [wire_message(app, n) for n in app.recorder.select_notifications(start=1,
                                                                           limit=1_000_000)]


def dump(conn: psycopg.Connection[Any]) -> Rows:
    rows = {t: [r[0] for r in conn.execute(f"SELECT row_to_json(x)::text FROM {t} x "
                                           "ORDER BY 1")] for t in TABLES}
    conn.commit()
    return rows


def live_rows(engine: Engine) -> Rows:
    with psycopg.connect(engine.database_url) as conn:
        return dump(conn)


def projected(url: str, batches: Iterator[list[dict[str, Any]]]) -> Rows:
    """The read models built in fresh tables as the projectors build them: each batch in one
    transaction, the quota states kept between batches as the quota projector keeps them."""
    shadow = rebuild.create_shadow(url)
    cache = quota_store.StateCache()
    try:
        for batch in batches:
            with shadow.conn.transaction(), shadow.conn.cursor() as cur:
                states = quota_store.load(cur, sorted({m["subscription"] for m in batch}),
                                          cache)
                apply_all(states, batch)
                quota_store.write(cur, states.values())
                invoices.apply_messages(cur, batch)
            cache.keep(states.values())
        return dump(shadow.conn)
    finally:
        shadow.close()
        rebuild.drop_shadow(url)


def replayed(engine: Engine, batch: int) -> Rows:
    """What `billing rebuild` builds from the store, `batch` events at a time."""
    url = engine.database_url
    shadow = rebuild.create_shadow(url)
    try:
        rebuild.replay_store(engine.app, shadow, list(rebuild.TABLES),
                             lambda done, total: None, batch=batch)
        return dump(shadow.conn)
    finally:
        shadow.close()
        rebuild.drop_shadow(url)


def all_at_once(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    yield messages


def one_by_one(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for message in messages:
        yield [message]


def random_splits(seed: int) -> Batches:
    def split(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(messages)), rng.randint(1, len(messages) // 4)))
        for start, end in zip([0, *cuts], [*cuts, len(messages)], strict=True):
            yield messages[start:end]
    return split


def as_partitions(seed: int) -> Batches:
    """Each subscription's events in order, but the subscriptions' streams interleaved
    otherwise, as a consumer of several partitions receives them, then split at random."""
    def interleave(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        rng = random.Random(seed)
        streams: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            streams.setdefault(message["subscription"], []).append(message)
        queues, order = [list(reversed(s)) for s in streams.values()], []
        while queues:
            queue = rng.choice(queues)
            order += [queue.pop() for _ in range(min(len(queue), rng.randint(1, 10)))]
            queues = [q for q in queues if q]
        return random_splits(seed)(order)
    return interleave


def differences(expected: Rows, actual: Rows) -> dict[str, tuple[list[str], list[str]]]:
    """Per table: (rows only in expected, rows only in actual)."""
    out = {}
    for table in TABLES:
        gone = sorted(set(expected[table]) - set(actual[table]))
        new = sorted(set(actual[table]) - set(expected[table]))
        if gone or new or len(expected[table]) != len(actual[table]):
            out[table] = (gone, new)
    return out


def test_the_read_models_are_the_same_whatever_the_batching(engine: Engine) -> None:
    history(engine)
    messages = store_messages(engine)
    types = {m["type"] for m in messages}
    assert {"InvoiceIssued", "PlanUpgraded", "CycleRolled", "PaymentSucceeded",
            "PaymentFailed", "InvoiceVoided", "CreditNoteIssued", "UsageRecorded",
            "UsagePeriodClosed", "ProfileUpdated"} <= types, types
    url = engine.database_url
    reference = projected(url, one_by_one(messages))
    # (this history has no grouped charge, unit credits or plan without metrics: their tables
    # stay empty here; tests/integration/test_aggregations_pipeline.py fills the first two,
    # tests/unit/test_quota_projection.py covers the third)
    assert all(reference[t] for t in TABLES if t not in (
        "invoice_drafts", "usage_by_group", "unit_credit_balances", "quota_unmetered")), \
        [t for t in TABLES if not reference[t]]
    assert reference["invoice_drafts"]  # the last month's charges, not invoiced yet

    batchings: Sequence[tuple[str, Batches]] = [
        ("all at once", all_at_once),
        *((f"random splits {seed}", random_splits(seed)) for seed in range(3)),
        *((f"as partitions {seed}", as_partitions(seed)) for seed in range(3)),
    ]
    found = {name: differences(reference, projected(url, batching(messages)))
             for name, batching in batchings}
    found.update({f"rebuild, {n} events a batch": differences(reference, replayed(engine, n))
                  for n in (1, 7, 5_000)})
    found["live projectors"] = differences(reference, live_rows(engine))
    assert not any(found.values()), "\n".join(
        f"{name}, {table}: only one by one {gone}; only here {new}"
        for name, diff in found.items() for table, (gone, new) in diff.items())


def test_a_rebuild_of_that_history_is_identical_to_the_live_tables(engine: Engine) -> None:
    history(engine)
    report = rebuild.rebuild(engine.app, engine.database_url, list(rebuild.TABLES),
                             do_swap=False, replay=lambda shadow: rebuild.replay_store(
                                 engine.app, shadow, list(rebuild.TABLES),
                                 lambda done, total: None))
    assert report.identical, [c for c in report.comparisons if c.missing or c.extra]
