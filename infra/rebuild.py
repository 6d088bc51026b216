"""`billing rebuild`: read models rebuilt into fresh (shadow) tables, from the event store or
from billing.events at offset 0, compared with the live tables, and swapped in atomically only
when asked."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from consumers.projector import Database
from infra.codec import wire_message
from infra.config import Settings
from infra.parallel import map_in_processes
from projections import invoices, quota_store, recommendations
from projections import versions as projection_versions
from projections.quota import SubscriptionQuota, apply_all

TABLES = {
    "quota": ("quota", "usage_daily", "usage_by_member"),
    "invoices": ("invoices", "invoice_lines", "invoice_drafts", "subscription_changes",
                 "recommendation_inputs"),
}
SHADOW = "billing_rebuild"
CHANGES_DDL = """CREATE TABLE IF NOT EXISTS subscription_changes (
    subscription_id text NOT NULL, version bigint NOT NULL, at timestamptz NOT NULL,
    kind text NOT NULL, plan_id text, monthly_price numeric NOT NULL, currency text,
    PRIMARY KEY (subscription_id, version))"""


@dataclass
class Comparison:
    table: str
    live: int
    rebuilt: int
    missing: int  # live rows the rebuild does not have
    extra: int  # rebuilt rows the live table does not have


@dataclass
class RebuildReport:
    events: int = 0
    seconds: float = 0.0  # everything: fresh tables, replay, comparison
    replay_seconds: float = 0.0
    comparisons: list[Comparison] = field(default_factory=list)
    swapped: bool = False

    @property
    def identical(self) -> bool:
        return all(c.missing == 0 and c.extra == 0 for c in self.comparisons)


def progress(done: int, total: int, out: Any = sys.stderr) -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\r  [{'#' * filled}{' ' * (width - filled)}] {done:,}/{total:,} events")
    if done >= total:
        out.write("\n")
    out.flush()


def create_shadow(url: str) -> Database:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
        conn.execute(f"CREATE SCHEMA {SHADOW}")
    shadow = Database(url, schema=SHADOW)
    with shadow.conn.transaction():
        for ddl in (quota_store.SCHEMA, invoices.SCHEMA, recommendations.SCHEMA, CHANGES_DDL):
            shadow.conn.execute(ddl)
    return shadow


def replay_store(app: Any, shadow: Database, projections: list[str],
                 report_progress: Callable[[int, int], None] = progress,
                 batch: int = 5_000, part: tuple[int, int] | None = None) -> int:
    """Replay the store into the shadow tables in one transaction; with `part=(k, n)` only
    the subscriptions of the k-th of n hash partitions (see `replay_parallel`)."""
    recorder = app.recorder
    total = recorder.max_notification_id() or 0
    states: dict[str, SubscriptionQuota] = {}
    invoice_versions: dict[str, int] = {}
    start, done = 1, 0
    conn = shadow.conn
    with conn.transaction(), conn.cursor() as cur:
        while True:
            notifications = recorder.select_notifications(start=start, limit=batch, part=part)
            if not notifications:
                break
            messages = [wire_message(app, n) for n in notifications]
            if "quota" in projections:
                apply_all(states, messages)
            if "invoices" in projections:
                invoices.apply_messages(cur, messages, invoice_versions)
            done += len(notifications)
            start = notifications[-1].id + 1
            report_progress(done, total)
        if "quota" in projections:
            quota_store.write(cur, states.values())
        if "invoices" in projections:
            projection_versions.write(cur, invoices.PROJECTION, invoice_versions)
    return done


def _replay_part(job: tuple[str, Settings, list[str], int, int]) -> int:
    from infra.engine import load_catalog
    from infra.eventstore import open_application

    url, settings, projections, k, n = job
    app = open_application(url, load_catalog(settings))
    shadow = Database(url, schema=SHADOW)
    try:
        return replay_store(app, shadow, projections, lambda done, total: None, part=(k, n))
    finally:
        shadow.close()
        app.close()


class ParallelReplay:
    """Replay the store over `processes` processes, each the subscriptions of one hash
    partition of their ids, in its own transaction on the shadow tables. Every row of these
    read models belongs to one subscription, so the parts never write the same row. If one
    part fails the rebuild fails, and shadow tables are never swapped in unfinished. After a
    run, `peak_rss_mib` holds the peak resident memory of each process, by process id."""

    def __init__(self, url: str, settings: Settings, projections: list[str],
                 processes: int) -> None:
        self.url, self.settings, self.projections = url, settings, projections
        self.processes = processes
        self.peak_rss_mib: dict[int, float] = {}

    def __call__(self, shadow: Database) -> int:
        jobs = [(self.url, self.settings, self.projections, k, self.processes)
                for k in range(self.processes)]
        parts, self.peak_rss_mib = map_in_processes(_replay_part, jobs)
        return sum(parts)


def replay_parallel(url: str, settings: Settings, projections: list[str],
                    processes: int) -> ParallelReplay:
    return ParallelReplay(url, settings, projections, processes)


def compare(url: str, projections: list[str]) -> list[Comparison]:
    out = []
    with psycopg.connect(url) as conn:
        for name in projections:
            for table in TABLES[name]:
                counts = [conn.execute(f"SELECT count(*) FROM {s}.{table}").fetchone()
                          for s in ("public", SHADOW)]
                missing = conn.execute(f"SELECT count(*) FROM (SELECT * FROM public.{table} "
                                       f"EXCEPT ALL SELECT * FROM {SHADOW}.{table}) x").fetchone()
                extra = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {SHADOW}.{table} "
                                     f"EXCEPT ALL SELECT * FROM public.{table}) x").fetchone()
                out.append(Comparison(table, int(counts[0][0]), int(counts[1][0]),  # type: ignore[index]
                                      int(missing[0]), int(extra[0])))  # type: ignore[index]
        for name in projections:
            versions = "quota" if name == "quota" else invoices.PROJECTION
            row = conn.execute(
                f"SELECT count(*) FROM (SELECT subscription_id, version FROM "
                f"public.projection_versions WHERE projection = %s EXCEPT SELECT "
                f"subscription_id, version FROM {SHADOW}.projection_versions WHERE "
                f"projection = %s) x", (versions, versions)).fetchone()
            out.append(Comparison(f"projection_versions[{versions}]", 0, 0,
                                  int(row[0]) if row else 0, 0))
    return out


def swap(url: str, projections: list[str]) -> None:
    """Replace the live rows with the rebuilt ones in one transaction (readers see either)."""
    with psycopg.connect(url) as conn, conn.transaction():
        tables = [t for name in projections for t in TABLES[name]]
        conn.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
        for table in tables:
            conn.execute(f"DELETE FROM public.{table}")
            conn.execute(f"INSERT INTO public.{table} SELECT * FROM {SHADOW}.{table}")
        for name in projections:
            versions = "quota" if name == "quota" else invoices.PROJECTION
            conn.execute("DELETE FROM public.projection_versions WHERE projection = %s",
                         (versions,))
            conn.execute(f"INSERT INTO public.projection_versions SELECT * FROM "
                         f"{SHADOW}.projection_versions WHERE projection = %s", (versions,))


def drop_shadow(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")


def rebuild(app: Any, url: str, projections: list[str], *, do_swap: bool,
            replay: Callable[[Database], int] | None = None) -> RebuildReport:
    report = RebuildReport()
    t0 = time.perf_counter()
    shadow = create_shadow(url)
    try:
        t_replay = time.perf_counter()
        report.events = replay(shadow) if replay else replay_store(app, shadow, projections)
        report.replay_seconds = time.perf_counter() - t_replay
        report.comparisons = compare(url, projections)
        report.seconds = time.perf_counter() - t0
        if do_swap:
            swap(url, projections)
            report.swapped = True
    finally:
        shadow.close()
        drop_shadow(url)
    return report


def kafka_replay(engine: Any, projections: list[str],
                 report_progress: Callable[[int, int], None] = progress,
                 timeout: float = 600) -> Callable[[Database], int]:
    """Replay billing.events from offset 0 into the shadow tables with the live projectors' code
    (their positions live in the shadow schema, empty, so they start at 0)."""
    from consumers.loop import TrackedConsumer
    from consumers.projector import InvoiceProjector, QuotaPositions, QuotaProjector
    from infra import kafka

    def run(shadow: Database) -> int:
        loops = []
        for name in projections:
            handler: Any = (QuotaProjector if name == "quota" else InvoiceProjector)(
                shadow, engine.dead_letters(f"rebuild-{name}"))
            positions = QuotaPositions(shadow, "quota" if name == "quota" else
                                       invoices.PROJECTION)
            client = kafka.consumer(engine.kafka_bootstrap, engine.settings,
                                    client_id=f"billing-rebuild-{name}")
            loops.append(TrackedConsumer(client, engine.settings.topics.events, positions,
                                         handler.handle, name=f"rebuild-{name}"))
        total = engine.app.recorder.max_notification_id() or 0
        deadline = time.monotonic() + timeout
        try:
            while True:
                for loop in loops:
                    loop.poll_once(100)
                done = min(loop.records for loop in loops)
                report_progress(min(done, total), total)
                if all(_shadow_lag(shadow, p) == 0 for p in projections):
                    report_progress(total, total)
                    return done
                if time.monotonic() > deadline:
                    raise TimeoutError("the rebuild from billing.events did not catch up")
        finally:
            for loop in loops:
                loop.close()

    return run


def _shadow_lag(shadow: Database, name: str) -> int:
    projection = "quota" if name == "quota" else invoices.PROJECTION
    row = shadow.conn.execute(
        "SELECT count(*) FROM (SELECT originator_id, max(originator_version) AS v FROM "
        "public.billing_events GROUP BY 1) e LEFT JOIN projection_versions p ON "
        "p.projection = %s AND p.subscription_id = e.originator_id "
        "WHERE p.version IS DISTINCT FROM e.v", (projection,)).fetchone()
    shadow.conn.commit()
    return int(row[0]) if row else 0
