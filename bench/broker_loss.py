"""Benchmark: what a broker that lost its topics costs at the next start (the embedded Tansu
broker after every restart): the positions reset, the whole event store published again by the
relay, and the projections and the invoicer reading it through, skipping what they applied.
Next to a raw read of the notification log in the same run.

    python bench/broker_loss.py [--subscriptions 5000] [--batches 40] [--no-record]

BILLING_BROKER=apache-kafka runs it on Apache Kafka.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import fill_store, peak_rss_mib, raw_log_read, record

from infra.config import Settings
from infra.stack.apache_kafka import ApacheKafkaBroker
from infra.stack.embedded import EmbeddedBroker, start_stack
from infra.wiring.engine import Engine


def read_through(engine: Engine, loop: Any, position_sql: str, published: int) -> float:
    """Seconds until a reader's positions cover the `published` records of the events topic."""
    t0 = time.perf_counter()
    with psycopg.connect(engine.database_url, autocommit=True) as conn:
        while (conn.execute(position_sql, (engine.settings.topics.events,)).fetchone()
               or (0,))[0] < published:
            loop.poll_once(100)
    return time.perf_counter() - t0


QUOTA = ("SELECT coalesce(sum(position + 1), 0) FROM projection_positions "
         "WHERE topic = %s AND projection = 'quota'")
INVOICES = ("SELECT coalesce(sum(position + 1), 0) FROM projection_positions "
            "WHERE topic = %s AND projection = 'invoices'")
INVOICER = ("SELECT coalesce(sum(notification_id + 1), 0) FROM billing_tracking "
            "WHERE application_name LIKE 'invoicer:' || %s || ':%%'")


def relay_everything(engine: Engine) -> tuple[int, float]:
    relay = engine.relay()
    t0 = time.perf_counter()
    while relay.run_once():
        pass
    return relay.published, time.perf_counter() - t0


def catch_up(engine: Engine, published: int) -> dict[str, float]:
    readers: dict[str, tuple[Callable[[], Any], str]] = {
        "quota projection": (engine.projector, QUOTA),
        "invoice projection": (engine.invoice_projector, INVOICES),
        "invoicer": (engine.invoicer, INVOICER),
    }
    return {name: read_through(engine, make()[0], sql, published)
            for name, (make, sql) in readers.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=5_000)
    parser.add_argument("--batches", type=int, default=40, help="usage events per subscription")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    with start_stack(settings) as stack, tempfile.TemporaryDirectory() as spare:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        try:
            fill_store(engine.app, args.subscriptions, args.batches,
                       datetime(2026, 11, 1, tzinfo=UTC))
            published, _ = relay_everything(engine)
            catch_up(engine, published)  # the state before the broker is lost
            events, t_raw = raw_log_read(engine.app.recorder)
        finally:
            engine.close()
        broker: EmbeddedBroker | ApacheKafkaBroker = EmbeddedBroker(Path(spare) / "broker.log")
        if settings.broker == "apache-kafka":
            broker = ApacheKafkaBroker(Path(spare), settings.data_dir / "apache-kafka")
        bootstrap = broker.start()
        try:
            t0 = time.perf_counter()
            engine = Engine.open(settings, stack.database_url, bootstrap)  # resets positions
            t_open = time.perf_counter() - t0
            try:
                republished, t_relay = relay_everything(engine)
                readers = catch_up(engine, republished)
            finally:
                engine.close()
        finally:
            broker.stop()
    raw_rate = events / t_raw
    lines = [
        f"- broker: {settings.broker}; store: {events:,} events ({args.subscriptions:,} "
        f"subscriptions x {args.batches} usage events + subscriptions, invoices, catalog)",
        f"- raw notification-log read: **{raw_rate:,.0f} events/s** ({t_raw:.2f}s)",
        f"- start on the new broker (topics created, identities compared, positions reset): "
        f"{t_open:.2f}s",
        f"- relay, the whole store published again: **{republished / t_relay:,.0f} events/s** "
        f"({t_relay:.2f}s; ratio to the raw read {republished / t_relay / raw_rate:.2f})",
        *(f"- {name} reading it through, skipping what it applied: "
          f"**{republished / seconds:,.0f} events/s** ({seconds:.2f}s)"
          for name, seconds in readers.items()),
        f"- recovery, one reader after the other (they run side by side in `billing run`): "
        f"{t_open + t_relay + sum(readers.values()):.1f}s; peak RSS "
        f"{peak_rss_mib():,.0f} MiB",
    ]
    record("broker loss", lines, not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
