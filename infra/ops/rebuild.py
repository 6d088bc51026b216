"""`billing rebuild`: read models rebuilt into fresh (shadow) tables, from the event store or
from billing.events at offset 0, compared with the live tables, and swapped in atomically only
when asked, and only when they are identical (or the swap is forced).

The comparison and the swap happen at one moment: the live tables locked against their
projectors' writes and the rebuilt ones caught up with the store, so every event the live tables
hold is in the rebuilt ones too. Subscriptions the live projectors had not caught up with are
left out of the comparison (they are not a difference); a swap gives them the rebuilt rows and
versions, and the projectors skip those events when they reach them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from consumers.projector import Database
from consumers.wire import wire_message
from infra.config import Settings
from infra.ops.parallel import map_in_processes
from infra.render.progress import ProgressLine
from projections import schema
from projections import tracking as projection_versions
from projections.invoices import store as invoices
from projections.quota import store as quota_store
from projections.quota.model import SubscriptionQuota, apply_all

TABLES = {
    "quota": ("quota", "usage_daily", "usage_by_member", "usage_by_group",
              "unit_credit_balances", "quota_unmetered"),
    "invoices": ("invoices", "invoice_lines", "invoice_drafts", "subscription_changes",
                 "recommendation_inputs"),
}
SHADOW = "billing_rebuild"
OWNERS = {"invoices": "number", "invoice_lines": "number"}  # shown for rows that differ;
# the other tables' rows are shown by subscription_id


@dataclass
class Comparison:
    table: str
    live: int
    rebuilt: int
    missing: int  # live rows the rebuild does not have
    extra: int  # rebuilt rows the live table does not have
    examples: list[str] = field(default_factory=list)  # a few owners of differing rows


@dataclass
class RebuildReport:
    events: int = 0
    seconds: float = 0.0  # everything: fresh tables, replay, comparison, swap
    replay_seconds: float = 0.0
    comparisons: list[Comparison] = field(default_factory=list)
    # Per projection, the subscriptions the live tables had not caught up with: not compared.
    behind: dict[str, int] = field(default_factory=dict)
    swapped: bool = False
    refused: bool = False  # a swap was asked for, and not done: the tables differ

    @property
    def differences(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.missing or c.extra]

    @property
    def identical(self) -> bool:
        return not self.differences


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
        for ddl in schema.REBUILT_TABLES:
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
    from infra.wiring.engine import open_billing

    url, settings, projections, k, n = job
    app = open_billing(url, settings)
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
        progress = ProgressLine("rebuild", self.processes, "parts replayed", every=0.5)
        parts, self.peak_rss_mib = map_in_processes(_replay_part, jobs,
                                                    finished=lambda _: progress.advance(1))
        progress.finish()
        return sum(parts)


def replay_parallel(url: str, settings: Settings, projections: list[str],
                    processes: int) -> ParallelReplay:
    return ParallelReplay(url, settings, projections, processes)


def catch_up(app: Any, shadow: Database, projections: list[str], after: int,
             batch: int = 5_000) -> int:
    """Apply the store's events after notification `after` to the shadow tables, as the live
    projectors apply theirs (events a replay already applied are skipped by version); returns
    the last notification read."""
    conn = shadow.conn
    while True:
        notifications = app.recorder.select_notifications(start=after, limit=batch,
                                                          inclusive_of_start=False)
        if not notifications:
            return after
        messages = [wire_message(app, n) for n in notifications]
        with conn.transaction(), conn.cursor() as cur:
            if "quota" in projections:
                states = quota_store.load(cur, sorted({m["subscription"] for m in messages}))
                apply_all(states, messages)
                quota_store.write(cur, states.values())
            if "invoices" in projections:
                invoices.apply_messages(cur, messages)
        after = notifications[-1].id


def _versions_of(name: str) -> str:
    return "quota" if name == "quota" else invoices.PROJECTION


def _lock(conn: psycopg.Connection[Any], projections: list[str]) -> None:
    """Lock the live tables of `projections` against their projectors' writes (not against
    readers), in the order the projectors write them, versions last, so that neither waits for
    the other in turn."""
    tables = [f"public.{t}" for name in projections for t in TABLES[name]]
    conn.execute(f"LOCK TABLE {', '.join(tables)}, public.projection_versions "
                 "IN EXCLUSIVE MODE")


@contextmanager
def _paused(url: str, projections: list[str]) -> Iterator[None]:
    with psycopg.connect(url) as conn, conn.transaction():
        _lock(conn, projections)
        yield


def _mark_behind(conn: psycopg.Connection[Any], projections: list[str]) -> dict[str, int]:
    """Note (in temporary table `rebuild_behind`) the subscriptions whose live version is
    behind the rebuilt one; how many, per projection."""
    conn.execute("CREATE TEMPORARY TABLE rebuild_behind (projection text, subscription_id text, "
                 "PRIMARY KEY (projection, subscription_id)) ON COMMIT DROP")
    conn.execute(f"INSERT INTO rebuild_behind SELECT s.projection, s.subscription_id FROM "
                 f"{SHADOW}.projection_versions s LEFT JOIN public.projection_versions p "
                 f"USING (projection, subscription_id) WHERE s.projection = ANY(%s) AND "
                 f"(p.version IS NULL OR p.version < s.version)",
                 ([_versions_of(name) for name in projections],))
    counts = dict(conn.execute("SELECT projection, count(*) FROM rebuild_behind GROUP BY 1"))
    return {name: int(counts.get(_versions_of(name), 0)) for name in projections}


def _rows(schema: str, table: str, name: str) -> tuple[str, list[str]]:
    """A query for the rows of `table` in `schema`, but those of subscriptions behind."""
    behind = "SELECT subscription_id FROM rebuild_behind WHERE projection = %s"
    if table == "projection_versions":
        return (f"SELECT subscription_id, version FROM {schema}.projection_versions WHERE "
                f"projection = %s AND subscription_id NOT IN ({behind})",
                [_versions_of(name)] * 2)
    if table == "invoice_lines":
        return (f"SELECT * FROM {schema}.invoice_lines WHERE number NOT IN (SELECT number FROM "
                f"{schema}.invoices WHERE subscription_id IN ({behind}))", [_versions_of(name)])
    return (f"SELECT * FROM {schema}.{table} WHERE subscription_id NOT IN ({behind})",
            [_versions_of(name)])


def _compare_table(conn: psycopg.Connection[Any], table: str, name: str) -> Comparison:
    (live, live_args), (rebuilt, rebuilt_args) = (_rows(schema, table, name)
                                                  for schema in ("public", SHADOW))
    owner = OWNERS.get(table, "subscription_id")

    def differing(query: str, args: list[str]) -> tuple[int, list[str]]:
        row = conn.execute(f"SELECT count(*), (array_agg(DISTINCT {owner}::text))[1:5] "
                           f"FROM ({query}) x", args).fetchone()
        assert row is not None
        return int(row[0]), list(row[1] or [])

    missing, gone = differing(f"{live} EXCEPT ALL {rebuilt}", live_args + rebuilt_args)
    extra, new = differing(f"{rebuilt} EXCEPT ALL {live}", rebuilt_args + live_args)
    if table == "projection_versions":
        table = f"{table}[{_versions_of(name)}]"
        totals = [_count(conn, f"{schema}.projection_versions WHERE projection = %s",
                         [_versions_of(name)]) for schema in ("public", SHADOW)]
    else:
        totals = [_count(conn, f"{schema}.{table}", []) for schema in ("public", SHADOW)]
    return Comparison(table, totals[0], totals[1], missing, extra, sorted({*gone, *new})[:5])


def _count(conn: psycopg.Connection[Any], rows: str, args: list[str]) -> int:
    row = conn.execute(f"SELECT count(*) FROM {rows}", args).fetchone()
    return int(row[0]) if row else 0


def compare(conn: psycopg.Connection[Any], projections: list[str]
            ) -> tuple[dict[str, int], list[Comparison]]:
    """The subscriptions behind in the live tables, per projection, and the comparison of all
    the other rows, table by table."""
    behind = _mark_behind(conn, projections)
    return behind, [_compare_table(conn, table, name) for name in projections
                    for table in (*TABLES[name], "projection_versions")]


def swap(conn: psycopg.Connection[Any], projections: list[str]) -> None:
    """Replace the live rows with the rebuilt ones, in the caller's transaction (which has
    locked the live tables): readers see either."""
    for table in (t for name in projections for t in TABLES[name]):
        conn.execute(f"DELETE FROM public.{table}")
        conn.execute(f"INSERT INTO public.{table} SELECT * FROM {SHADOW}.{table}")
    for name in projections:
        conn.execute("DELETE FROM public.projection_versions WHERE projection = %s",
                     (_versions_of(name),))
        conn.execute(f"INSERT INTO public.projection_versions SELECT * FROM "
                     f"{SHADOW}.projection_versions WHERE projection = %s", (_versions_of(name),))


def drop_shadow(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")


def _compare_and_swap(app: Any, url: str, shadow: Database, projections: list[str],
                      after: int, report: RebuildReport, *, do_swap: bool,
                      force: bool) -> None:
    """Catch the shadow tables up with the store while the live tables are locked, then compare
    (and swap) in one snapshot taken under that lock. A swap keeps the lock to its end; a
    comparison alone lets the projectors go on once its snapshot is taken."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            if do_swap:
                _lock(conn, projections)
                catch_up(app, shadow, projections, after)
            else:
                with _paused(url, projections):
                    catch_up(app, shadow, projections, after)
                    conn.execute("SELECT 1")  # the snapshot compared, before they go on
            report.behind, report.comparisons = compare(conn, projections)
            if do_swap and (report.identical or force):
                swap(conn, projections)
                report.swapped = True
    report.refused = do_swap and not report.swapped


def rebuild(app: Any, url: str, projections: list[str], *, do_swap: bool, force: bool = False,
            replay: Callable[[Database], int] | None = None) -> RebuildReport:
    """Rebuild `projections` into fresh tables and compare them with the live ones. With
    `do_swap`, swap them in if they are identical, or if `force`d (otherwise `refused`)."""
    report = RebuildReport()
    t0 = time.perf_counter()
    replayed = app.recorder.max_notification_id() or 0  # every replay holds the events to here
    shadow = create_shadow(url)
    try:
        t_replay = time.perf_counter()
        report.events = replay(shadow) if replay else replay_store(app, shadow, projections)
        report.replay_seconds = time.perf_counter() - t_replay
        # Most of what the store got meanwhile, before the live tables are locked for the rest.
        reached = catch_up(app, shadow, projections, replayed)
        _compare_and_swap(app, url, shadow, projections, reached, report, do_swap=do_swap,
                          force=force)
        report.seconds = time.perf_counter() - t0
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
    from consumers.positions import ReadModelPositions
    from consumers.projector import InvoiceProjector, QuotaProjector
    from infra.kafka import clients as kafka
    def run(shadow: Database) -> int:
        loops = []
        for name in projections:
            handler: Any = (QuotaProjector if name == "quota" else InvoiceProjector)(
                shadow, engine.dead_letters(f"rebuild-{name}"))
            positions = ReadModelPositions(shadow, "quota" if name == "quota" else
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
    return projection_versions.streams_behind(shadow.conn, _versions_of(name),
                                              "public.billing_events", "public.parked_events")
