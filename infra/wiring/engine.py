"""The composition root: every part of the engine is wired here and only here, so tests and the
CLI can start exactly the parts they need against any stack."""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumers.commands import CommandIngestor
from consumers.invoicer import Invoicer
from consumers.loop import TrackedConsumer
from consumers.positions import EventStorePositions, ReadModelPositions
from consumers.projector import Database, InvoiceProjector, QuotaProjector
from consumers.usage import UsageIngestor
from consumers.write_behind import WriteBehind
from domain.app.billing_app import BillingApplication
from domain.catalog.model import Catalog
from infra.config import Settings
from infra.eventstore.recorder import open_application
from infra.kafka import clients as kafka
from infra.kafka import dead_letters as dlq
from infra.kafka import topic_identity
from infra.kafka.dead_letters import DeadLetters
from infra.kafka.relay import Relay, relay_lag
from infra.ops import health
from infra.ops.anchors import AnchorExporter
from projections import schema
from projections import tracking as projection_versions
from projections.invoices import store as invoices
from projections.quota.store import StateCache

log = logging.getLogger(__name__)


def load_catalog(settings: Settings) -> Catalog:
    if settings.catalog_path is not None:
        return Catalog.from_file(settings.catalog_path)
    text = importlib.resources.files("infra").joinpath("catalogs/starter.toml").read_text("utf-8")
    return Catalog.from_toml(text)


def publish_catalog(app: BillingApplication, catalog: Catalog | None = None) -> bool:
    """Record a catalog version in the store (the wall clock is the composition root's to
    read); a concurrent first publication by another process is simply found next time."""
    from datetime import UTC, datetime

    from eventsourcing.persistence import IntegrityError

    try:
        return app.publish_catalog(datetime.now(UTC), catalog)
    except IntegrityError:
        return app.publish_catalog(datetime.now(UTC), catalog)


def open_billing(database_url: str, settings: Settings,
                 catalog: Catalog | None = None) -> BillingApplication:
    """The application every writer and reader uses: billing with the deployment's catalog
    as recorded in the store (its version in force), not with whatever this process's
    BILLING_CATALOG says. On a store with nothing recorded, the configured catalog is
    recorded and chosen (the first start)."""
    configured = catalog or load_catalog(settings)
    explicit = catalog is not None or settings.catalog_path is not None
    app = open_application(database_url, configured, settings.migrate)
    app.cache_limit = settings.cache_subscriptions
    try:
        recorded = app.deployment_catalog(configured, explicit)
        if recorded.source_sha256 != configured.source_sha256:
            if explicit:
                log.warning("billing with catalog %s version %s, the version in force as "
                            "recorded in the store; BILLING_CATALOG has version %s (a version "
                            "takes effect through `billing catalog publish FILE`)",
                            recorded.id, recorded.version, configured.version)
            app.catalog = recorded
        else:  # records it on the first start (and a store's missing deployment pointer)
            publish_catalog(app)
    except Exception:
        app.close()
        raise
    return app


def follow_topic_identities(conn: Any, settings: Settings, kafka_bootstrap: str,
                            adopt: bool = True) -> dict[str, str]:
    """Positions belong to the topics they were taken on: where the broker's topics are new
    (it lost them), reset those positions (as the tables' owner, with `adopt`) or refuse to
    start. Returns the topics' identities now."""
    topics = settings.topics.all()
    now = topic_identity.current(kafka_bootstrap, topics, settings.kafka_options)
    if adopt and settings.migrate:
        topic_identity.adopt(conn, settings, now)
    else:
        topic_identity.check(conn, now)
    return now


@dataclass
class Engine:
    settings: Settings
    database_url: str
    kafka_bootstrap: str
    app: BillingApplication
    db: Database
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    # The topics' identities this engine started on (infra/ops/stack_watch.py compares).
    topic_identities: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, database_url: str, kafka_bootstrap: str,
             catalog: Catalog | None = None, adopt_topics: bool = True) -> Engine:
        """`adopt_topics`: where the broker lost its topics, reset the positions taken on
        them (False: refuse to open, for tools that only read, like a rebuild)."""
        kafka.ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions,
                            settings.kafka_options)
        app = open_billing(database_url, settings, catalog)
        db = Database(database_url)
        if settings.migrate:
            schema.create_schema(db.conn, dlq.REPLAYS_DDL, health.HEARTBEATS_DDL)
            db.conn.commit()
        identities = follow_topic_identities(db.conn, settings, kafka_bootstrap, adopt_topics)
        engine = cls(settings, database_url, kafka_bootstrap, app, db,
                     topic_identities=identities)
        engine._closers.extend([app.close, db.close])
        return engine

    def subprocess_env(self, database_url: str | None = None, **extra: str) -> dict[str, str]:
        """The environment for a `billing` subprocess (a worker, a CLI command) working on this
        engine's database, broker and topics."""
        return {**os.environ, "BILLING_STACK": "external",
                "BILLING_DATABASE_URL": database_url or self.database_url,
                "BILLING_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "BILLING_TOPIC_PREFIX": self.settings.topics.usage.removesuffix("billing.usage"),
                "BILLING_PARTITIONS": str(self.settings.partitions), **extra}

    # --- parts ----------------------------------------------------------------------------

    def producer(self, **overrides: Any) -> Any:
        p = kafka.producer(self.kafka_bootstrap, self.settings, **overrides)
        self._closers.append(lambda: p.close(timeout=5))
        return p

    def dead_letters(self, consumer_name: str) -> DeadLetters:
        return DeadLetters(self.producer(), self.settings.topics.dlq, consumer_name)

    def worker_app(self) -> BillingApplication:
        """Each writing worker gets its own application (and aggregate cache): workers run in
        threads, and two writers meet only through optimistic concurrency in the store."""
        app = open_application(self.database_url, self.app.catalog, self.settings.migrate)
        app.cache_limit = self.settings.cache_subscriptions
        self._closers.append(app.close)
        return app

    def ingestion(self, group: bool = False) -> tuple[TrackedConsumer, UsageIngestor]:
        app = self.worker_app()
        writer = WriteBehind(app, "usage-ingest-writer") if self.settings.write_behind else None
        ingestor = UsageIngestor(app, self.dead_letters("usage-ingest"), writer,
                                 lookahead_at=self.settings.max_poll_records,
                                 optimistic=self.settings.optimistic_ingest,
                                 max_message_bytes=self.settings.max_message_bytes)
        group_id = f"billing-ingest.{self.settings.topics.usage}" if group else None
        client = self._tracked_client(group_id, "billing-usage-ingest")
        loop = TrackedConsumer(client, self.settings.topics.usage, EventStorePositions(app),
                               ingestor.handle, group=group, name="usage-ingest",
                               poll_handler=ingestor.handle_poll,
                               flush=ingestor.flush if writer else None,
                               quarantine=ingestor.quarantine)
        self._closers.append(loop.close)
        return loop, ingestor

    def commands(self, group: bool = False) -> tuple[TrackedConsumer, CommandIngestor]:
        app = self.worker_app()
        ingestor = CommandIngestor(app, self.dead_letters("command-ingest"),
                                   self.settings.max_message_bytes)
        group_id = f"billing-commands.{self.settings.topics.commands}" if group else None
        client = self._tracked_client(group_id, "billing-command-ingest")
        loop = TrackedConsumer(client, self.settings.topics.commands, EventStorePositions(app),
                               ingestor.handle, group=group, name="command-ingest",
                               quarantine=ingestor.quarantine)
        self._closers.append(loop.close)
        return loop, ingestor

    def _tracked_client(self, group_id: str | None, client_id: str) -> Any:
        """A position-tracked worker's consumer. It never moves by itself to a log's start or
        end when its position is not in the log (`auto_offset_reset="none"`): the loop seeks
        to the stored positions, and a position past the log is for it to report
        (consumers/loop.py)."""
        return kafka.consumer(self.kafka_bootstrap, self.settings, group_id=group_id,
                              client_id=client_id, auto_offset_reset="none")

    def anchor_exporter(self) -> AnchorExporter:
        producer = self.producer()
        exporter = AnchorExporter(self.database_url,
                                  self.settings.anchors_file(self.database_url), producer,
                                  self.settings.topics.audit, self.settings.audit_key)
        self._closers.append(exporter.close)
        return exporter

    def relay(self) -> Relay:
        # The relay publishes one batch at a time and waits for it
        # (infra.kafka.clients.RecordBatches), which keeps per-partition order.
        return Relay(self.app, self.producer(), self.settings.topics.events)

    def projector(self, group: bool = False) -> tuple[TrackedConsumer, QuotaProjector]:
        db = Database(self.database_url)
        self._closers.append(db.close)
        # Its subscriptions' quota states, bounded like the writers' subscriptions.
        projector = QuotaProjector(db, self.dead_letters("quota-projector"),
                                   StateCache(self.settings.cache_subscriptions))
        group_id = f"billing-quota.{self.settings.topics.events}" if group else None
        client = self._tracked_client(group_id, "billing-quota-projector")
        loop = TrackedConsumer(client, self.settings.topics.events, ReadModelPositions(db),
                               projector.handle, group=group, name="quota-projector",
                               poll_handler=projector.handle_poll,
                               quarantine=projector.quarantine)
        self._closers.append(loop.close)
        return loop, projector

    def invoicer(self, group: bool = False) -> tuple[TrackedConsumer, Invoicer]:
        app = self.worker_app()
        invoicer = Invoicer(app, self.dead_letters("invoicer"))
        group_id = f"billing-invoicer.{self.settings.topics.events}" if group else None
        client = self._tracked_client(group_id, "billing-invoicer")
        loop = TrackedConsumer(client, self.settings.topics.events,
                               EventStorePositions(app, "invoicer"),
                               invoicer.handle, group=group, name="invoicer",
                               quarantine=invoicer.quarantine)
        self._closers.append(loop.close)
        return loop, invoicer

    def invoice_projector(self, group: bool = False) -> tuple[TrackedConsumer, InvoiceProjector]:
        db = Database(self.database_url)
        self._closers.append(db.close)
        projector = InvoiceProjector(db, self.dead_letters("invoice-projector"))
        group_id = f"billing-invoices.{self.settings.topics.events}" if group else None
        client = self._tracked_client(group_id, "billing-invoice-projector")
        loop = TrackedConsumer(client, self.settings.topics.events,
                               ReadModelPositions(db, invoices.PROJECTION), projector.handle,
                               group=group, name="invoice-projector",
                               poll_handler=projector.handle_poll,
                               quarantine=projector.quarantine)
        self._closers.append(loop.close)
        return loop, projector

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()


ROLES = ("ingest", "commands", "relay", "project", "invoicer", "invoices", "audit")


def supervised(name: str, part: Any, stop: threading.Event) -> None:
    """Run a worker loop until stopped, restarting it after any failure the loop itself did not
    absorb (the broker unreachable for longer than the client timeouts, a database restart):
    a worker thread never dies silently. Consumers go back to their stored positions."""
    failures = 0
    while not stop.is_set():
        try:
            part.run(stop)
            return
        except Exception:
            failures += 1
            log.exception("%s failed (%d); restarting from its stored position", name, failures)
            stop.wait(min(0.2 * failures, 5.0))
            with contextlib.suppress(Exception):
                if isinstance(part, TrackedConsumer):
                    part.seek_to_stored(sorted(part.assigned, key=lambda tp: tp.partition))


@dataclass
class Workers:
    """Ingestion, relay and projection, each in its own thread; stop() lets each finish the
    batch in hand (every batch commits atomically, so an abandoned one is simply redone)."""

    ingest: TrackedConsumer | None = None
    ingestor: UsageIngestor | None = None
    command_loop: TrackedConsumer | None = None
    commander: CommandIngestor | None = None
    relay: Relay | None = None
    project: TrackedConsumer | None = None
    projector: QuotaProjector | None = None
    invoice_loop: TrackedConsumer | None = None
    invoicer: Invoicer | None = None
    invoice_projection: TrackedConsumer | None = None
    invoice_projector: InvoiceProjector | None = None
    anchors: AnchorExporter | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def of(cls, engine: Engine, group: bool = False, roles: tuple[str, ...] = ROLES) -> Workers:
        workers = cls()
        if "ingest" in roles:
            workers.ingest, workers.ingestor = engine.ingestion(group)
        if "commands" in roles:
            workers.command_loop, workers.commander = engine.commands(group)
        if "relay" in roles:
            workers.relay = engine.relay()
        if "project" in roles:
            workers.project, workers.projector = engine.projector(group)
        if "invoicer" in roles:
            workers.invoice_loop, workers.invoicer = engine.invoicer(group)
        if "invoices" in roles:
            workers.invoice_projection, workers.invoice_projector = \
                engine.invoice_projector(group)
        if "audit" in roles:
            workers.anchors = engine.anchor_exporter()
        return workers

    def parts(self) -> list[tuple[str, Any]]:
        """(role, loop) of each worker this process runs."""
        return [(name, part) for name, part in (
            ("ingest", self.ingest), ("commands", self.command_loop), ("relay", self.relay),
            ("project", self.project), ("invoicer", self.invoice_loop),
            ("invoices", self.invoice_projection), ("audit", self.anchors))
            if part is not None]

    def caches(self) -> dict[str, BillingApplication]:
        """The application (and so the subscription cache) of each writing role."""
        return {role: owner.app for role, owner in (
            ("ingest", self.ingestor), ("commands", self.commander), ("invoicer", self.invoicer))
            if owner is not None}

    def start(self) -> None:
        for name, part in self.parts():
            t = threading.Thread(target=supervised, args=(name, part, self.stop_event),
                                 name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def alive(self) -> dict[str, bool]:
        return {t.name: t.is_alive() for t in self.threads}

    def details(self, stall_seconds: float = 30.0) -> dict[str, dict[str, Any]]:
        """What each role's heartbeat carries: its counts and its health (per partition:
        position, lag, seconds since progress; stalled partitions; failing time)."""
        details: dict[str, dict[str, Any]] = {}
        for name, part in self.parts():
            counts = ({"published": part.published}
                      if isinstance(part, Relay | AnchorExporter) else
                      {"records": part.records, "batches": part.batches})
            try:
                details[name] = {**counts, **part.health(stall_seconds)}
            except Exception as e:  # the relay's lag needs the database
                details[name] = {**counts, "healthy": False,
                                 "last_error": f"health: {type(e).__name__}: {e}"[:500]}
        return details

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)

    def report(self) -> str:
        parts = []
        if self.ingestor:
            s = self.ingestor.stats
            parts.append(f"ingested {s.accepted:,} usage, {s.duplicates:,} duplicates, "
                         f"{s.dead_lettered:,} dead-lettered")
        if self.commander:
            c = self.commander.stats
            parts.append(f"commands {c.applied:,} applied, {c.unchanged:,} unchanged, "
                         f"{c.duplicates:,} duplicates, {c.refused:,} refused")
        if self.relay:
            parts.append(f"relayed {self.relay.published:,}")
        if self.projector:
            parts.append(f"projected {self.projector.applied:,}")
        if self.invoicer:
            parts.append(f"invoices issued {self.invoicer.issued:,}")
        return "; ".join(parts)

    def wait_caught_up(self, monitor: Monitor, usage_end: dict[int, int],
                       timeout: float = 120) -> None:
        """Until usage up to `usage_end` (partition -> end offset, as acknowledged to the
        publisher) is ingested, relayed and projected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if monitor.caught_up(usage_end):
                return
            time.sleep(0.05)
        raise TimeoutError(f"workers did not catch up in {timeout}s: {monitor.describe()}")


class Monitor:
    """Progress of the pipeline, read from PostgreSQL with a connection of its own.

    Broker end offsets are not used (Tansu under-reports them): ingestion is compared with the
    publisher's acknowledged offsets, and the relay and projector with the event store itself."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.db = Database(engine.database_url)
        engine._closers.append(self.db.close)

    def ingested(self, usage_end: dict[int, int], topic: str | None = None) -> bool:
        """Every offset below `usage_end` (partition -> end) applied; `topic` defaults to the
        usage topic (the command topic's positions are kept the same way)."""
        usage = EventStorePositions(self.engine.app)
        topic = topic or self.engine.settings.topics.usage
        for partition, end in usage_end.items():
            pos = usage.position(topic, partition)
            if end and (pos is None or pos + 1 < end):
                return False
        return True

    def relay_lag(self) -> int:
        return relay_lag(self.db.conn, self.engine.settings.topics.events)

    def projection_lag(self, projection: str = "quota") -> int:
        """Streams whose read-model rows are behind their latest event in the store."""
        return projection_versions.streams_behind(self.db.conn, projection)

    def invoicing_lag(self) -> int:
        """Closed periods with charges to invoice that no invoice covers yet."""
        conn = self.db.conn
        row = conn.execute(
            "SELECT count(*) FROM billing_events e WHERE e.topic LIKE '%%UsagePeriodClosed' "
            "AND EXISTS (SELECT 1 FROM invoice_drafts d WHERE d.subscription_id = "
            "e.originator_id AND d.event_version <= e.originator_version)"
        ).fetchone()
        conn.commit()
        return int(row[0]) if row else 0

    def invoices_done(self) -> bool:
        return (self.relay_lag() == 0 and self.projection_lag("invoices") == 0
                and self.invoicing_lag() == 0)

    def caught_up(self, usage_end: dict[int, int]) -> bool:
        return (self.ingested(usage_end) and self.relay_lag() == 0
                and self.projection_lag() == 0)

    def describe(self) -> str:
        return f"relay lag {self.relay_lag()} events, projection lag {self.projection_lag()} subs"
