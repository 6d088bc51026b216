"""Shared steps of the integration tests: build usage, publish it, drive the workers."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from consumers.loop import partitions_of
from infra.kafka import clients as kafka
from infra.wiring.engine import Engine, Monitor
from projections.quota import store as quota_store

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@contextmanager
def engine_on_catalog(settings: Any, database_url: str, kafka_bootstrap: str, folder: Path,
                      catalog_text: str) -> Iterator[Engine]:
    """An engine billing with a catalog written for the test (in `folder`)."""
    catalog = folder / "catalog.toml"
    catalog.write_text(catalog_text)
    opened = Engine.open(dataclasses.replace(settings, catalog_path=catalog), database_url,
                         kafka_bootstrap)
    try:
        yield opened
    finally:
        opened.close()


def usage(uid: str, sub: str, metric: str = "tokens", quantity: Any = 10,
          at: str = "2026-11-02T10:00:00+00:00", **extra: Any) -> tuple[bytes, bytes]:
    body = {"id": uid, "subscription": sub, "metric": metric, "quantity": quantity, "at": at}
    body.update(extra)
    return sub.encode(), orjson.dumps(body)


def publish(engine: Engine, messages: Iterable[tuple[bytes | None, bytes]],
            topic: str | None = None) -> dict[int, int]:
    return kafka.publish(engine.producer(), topic or engine.settings.topics.usage, messages)


def subscribe(engine: Engine, *subs: str, plan: str = "basic") -> None:
    engine.app.subscribe_many([(s, f"acct-{s}", plan) for s in subs], T0)


def until(condition: Callable[[], bool], step: Callable[[], Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        step()


def tokens_ingested_over(settings: Any, database_url: str, bootstrap: str, sub: str,
                         events: int = 20, quantity: int = 5) -> str:
    """Open the engine on `bootstrap` with `settings` (its Kafka security options), subscribe
    `sub`, publish and ingest `events` usage events of `quantity` tokens: the tokens used, as
    stored."""
    engine = Engine.open(settings, database_url, bootstrap)
    try:
        subscribe(engine, sub, plan="scale")
        ingest_all(engine, publish(engine, [usage(f"u{i}", sub, "tokens", quantity)
                                            for i in range(events)]))
        return str(engine.app.load_as_stored(sub).used["tokens"])
    finally:
        engine.close()


def ingest_all(engine: Engine, ends: dict[int, int], loop: Any = None) -> Any:
    """Run an ingestion loop in this thread until `ends` are ingested; returns the ingestor."""
    if loop is None:
        loop, ingestor = engine.ingestion()
    else:
        ingestor = None
    monitor = Monitor(engine)
    until(lambda: monitor.ingested(ends), lambda: loop.poll_once(100))
    loop.settle()  # the last batch's commit is known (and counted in the stats)
    return ingestor


def relay_all(engine: Engine) -> Any:
    relay = engine.relay()
    while relay.run_once():
        pass
    return relay


def project_all(engine: Engine, loop: Any = None) -> Any:
    if loop is None:
        loop, _ = engine.projector()
    monitor = Monitor(engine)
    until(lambda: monitor.projection_lag() == 0, lambda: loop.poll_once(100))
    return loop


def read_topic(engine: Engine, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Every record of a topic, from offset 0, once at least `expected` have arrived."""
    client = kafka.consumer(engine.kafka_bootstrap, engine.settings, client_id="test-reader")
    try:
        parts = partitions_of(client, topic)
        client.assign(parts)
        client.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in client.poll(timeout_ms=200).values():
                records.extend(batch)
        # A short drain, so that "more than expected" is seen too.
        for batch in client.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        client.close()


def quota_used(database_url: str) -> dict[tuple[str, str], Decimal]:
    """Non-zero usage per (subscription, metric) in the quota read model."""
    with psycopg.connect(database_url) as conn:
        return {(r["subscription_id"], r["metric"]): r["used"] for r in quota_store.read(conn)
                if r["used"]}


def quota_rows(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        return quota_store.read(conn)


def store_totals(engine: Engine) -> dict[tuple[str, str], Decimal]:
    """Usage totals per (subscription, metric) in the open cycle, from the event store."""
    totals: dict[tuple[str, str], Decimal] = {}
    ids = engine.app.recorder.subscription_ids()  # type: ignore[attr-defined]
    for sid in ids:
        sub = engine.app.load_as_stored(sid)
        for metric, used in sub.used.items():
            totals[(sid, metric)] = used
    return totals


def invoice_everything(engine: Engine, loops: int = 1) -> None:
    """Relay, run the invoicer(s) until no trigger is left, relay their events, project."""
    relay_all(engine)
    members = [engine.invoicer() for _ in range(loops)]
    stop = threading.Event()
    threads = [threading.Thread(target=loop.run, args=(stop,)) for loop, _ in members]
    for t in threads:
        t.start()
    try:
        until(lambda: invoicers_caught_up(engine), lambda: stop.wait(0.1), timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    relay_all(engine)
    loop, _ = engine.invoice_projector()
    until(lambda: invoices_projected(engine), lambda: loop.poll_once(100), timeout=60)


def invoicers_caught_up(engine: Engine) -> bool:
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM billing_events e WHERE e.topic LIKE %s AND NOT EXISTS ("
            " SELECT 1 FROM billing_events i WHERE i.originator_id = e.originator_id"
            " AND i.topic LIKE %s AND i.originator_version > e.originator_version)",
            ("%UsagePeriodClosed", "%InvoiceIssued")).fetchone()
    return row == (0,)


def invoices_projected(engine: Engine) -> bool:
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT originator_id, max(originator_version) v "
            "FROM billing_events GROUP BY 1) e LEFT JOIN projection_versions p "
            "ON p.projection = 'invoices' AND p.subscription_id = e.originator_id "
            "WHERE p.version IS DISTINCT FROM e.v").fetchone()
    return row == (0,)
