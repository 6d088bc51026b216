"""Event store wiring: the eventsourcing PostgreSQL recorder extended with the usage ledger.

The ledger (`usage_dedup`) and the Kafka position (eventsourcing `Tracking`, single row per
`topic:partition`) are written inside the same transaction as the new events, so an input either
has its whole effect once or none at all.

It overrides private hooks of eventsourcing's PostgreSQL recorders (`_insert_stored_events`,
`_insert_events`, and calls `_lock_table`, `_insert_tracking`, edits `sql_create_statements`),
on the exact version pinned in pyproject.toml: tests/unit/test_pinned_internals.py fails when
the version or any of these names changes.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

import orjson
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresFactory,
    PostgresProcessRecorder,
)
from psycopg import Cursor, errors
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from domain.app.billing_app import BillingApplication
from domain.app.ports import CommandOutcome, UsageKey
from domain.catalog.model import Catalog
from infra.eventstore.binary_arrays import ByteaArray, Int4Array, Int8Array, TextArray

log = logging.getLogger(__name__)
SUBSCRIBED_TOPIC = "domain.subscription:Subscription.Subscribed"
# The hash partition of a stream (masked: the hash is a signed bigint).
PART = "(hashtextextended(originator_id, 0) & 65535) %% %s = %s"


def event_arrays(stored_events: Sequence[StoredEvent]) -> tuple[Any, ...]:
    """Ids, versions, topics and states as binary array parameters
    (infra.eventstore.binary_arrays)."""
    return (TextArray.of([str(e.originator_id) for e in stored_events]),
            Int8Array.of([e.originator_version for e in stored_events]),
            TextArray.of([e.topic for e in stored_events]),
            ByteaArray.of([bytes(e.state) for e in stored_events]))


def _insert_arrays_sql(schema: str, table: str, returning: str = "") -> Composed:
    return SQL("INSERT INTO {0}.{1} (originator_id, originator_version, topic, state) "
               "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[])"
               + returning).format(Identifier(schema), Identifier(table))


class SnapshotRecorder(PostgresAggregateRecorder):
    """The snapshots table, written as binary arrays like the events. The library sends an
    array of a composite type as text, escaping every byte of every state in Python: 133 ms of
    CPU for 1,000 snapshots of 2 KB."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self._insert_arrays = _insert_arrays_sql(self.datastore.schema, self.events_table_name)

    def _insert_stored_events(self, curs: Cursor[DictRow],
                              stored_events: Sequence[StoredEvent], **_: Any) -> None:
        curs.execute(self._insert_arrays, event_arrays(stored_events))


class BillingFactory(PostgresFactory):
    """The library's PostgreSQL infrastructure with this engine's snapshot recorder."""

    aggregate_recorder_class = SnapshotRecorder


class BillingRecorder(PostgresProcessRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "billing_events",
                 tracking_table_name: str = "billing_tracking") -> None:
        super().__init__(datastore, events_table_name=events_table_name,
                         tracking_table_name=tracking_table_name)
        schema = Identifier(self.datastore.schema)
        # Workers starting together each create the tables: serialize that (concurrent DDL on
        # the same tables and functions can deadlock in PostgreSQL's catalog).
        self.sql_create_statements.insert(
            0, SQL("SELECT pg_advisory_xact_lock(hashtext('billing-event-store-schema'))").format())
        self.sql_create_statements.extend([
            SQL("CREATE TABLE IF NOT EXISTS {0}.usage_dedup ("
                "subscription_id text NOT NULL, usage_id text NOT NULL, "
                "PRIMARY KEY (subscription_id, usage_id))").format(schema),
            # When the usage behind an id can no longer be accepted (its cycle's end plus the
            # grace window): the clock prunes the id after it. NULL (commands, ids from before
            # this column): kept.
            SQL("ALTER TABLE {0}.usage_dedup ADD COLUMN IF NOT EXISTS until timestamptz"
                ).format(schema),
            # The only way the worker role removes ledger rows (it has no DELETE on the table):
            # ids whose window closed, by the clock's time and by the wall clock's, so that a
            # worker login cannot open an id to a replay while its usage could still count.
            SQL("CREATE OR REPLACE FUNCTION {0}.billing_prune_usage(subs text[], "
                "before timestamptz) RETURNS bigint LANGUAGE sql SECURITY DEFINER "
                "SET search_path = {0}, pg_temp AS $$ WITH gone AS (DELETE FROM "
                "{0}.usage_dedup WHERE subscription_id = ANY(subs) AND until < "
                "least(before, now()) RETURNING 1) SELECT count(*) FROM gone $$").format(schema),
            SQL("REVOKE ALL ON FUNCTION {0}.billing_prune_usage(text[], timestamptz) FROM PUBLIC"
                ).format(schema),
            # What became of each command (GET /v1/commands/ID), written with its id.
            SQL("CREATE TABLE IF NOT EXISTS {0}.command_outcomes ("
                "subscription_id text NOT NULL, command_id text NOT NULL, type text NOT NULL, "
                "account text, result text NOT NULL, code text, message text, "
                "events int NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (subscription_id, command_id))").format(schema),
            SQL("CREATE INDEX IF NOT EXISTS command_outcomes_id ON {0}.command_outcomes "
                "(command_id)").format(schema),
            # When each event was recorded (its `timestamp` is business time).
            SQL("ALTER TABLE {0}.{1} ADD COLUMN IF NOT EXISTS recorded_at timestamptz "
                "NOT NULL DEFAULT now()").format(schema, Identifier(self.events_table_name)),
            # Tamper evidence (docs/audit.md): a hash per event chained per subscription, and
            # an anchor per write chaining every batch across subscriptions.
            SQL("CREATE TABLE IF NOT EXISTS {0}.event_anchors ("
                "id bigserial PRIMARY KEY, events int NOT NULL, root bytea NOT NULL, "
                "prev_hash bytea NOT NULL, hash bytea NOT NULL, "
                "recorded_at timestamptz NOT NULL DEFAULT now())").format(schema),
            SQL("CREATE TABLE IF NOT EXISTS {0}.event_hashes ("
                "originator_id text NOT NULL, originator_version bigint NOT NULL, "
                "content_hash bytea NOT NULL, hash bytea NOT NULL, anchor_id bigint NOT NULL, "
                "seq int NOT NULL, PRIMARY KEY (originator_id, originator_version))"
                ).format(schema),
            # Input positions move forward only, and only through this function: the worker
            # role gets EXECUTE on it, no INSERT or UPDATE on the table (infra/ops/security.py).
            SQL("CREATE OR REPLACE FUNCTION {0}.billing_move_position(stream text, upto bigint)"
                " RETURNS SETOF bigint LANGUAGE sql SECURITY DEFINER SET search_path = {0}, "
                "pg_temp AS $$ INSERT INTO {0}.{1} AS t VALUES (stream, upto) ON CONFLICT "
                "(application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id "
                "WHERE t.notification_id < EXCLUDED.notification_id RETURNING notification_id $$"
                ).format(schema, Identifier(self.tracking_table_name)),
            SQL("REVOKE ALL ON FUNCTION {0}.billing_move_position(text, bigint) FROM PUBLIC"
                ).format(schema),
            SQL("CREATE OR REPLACE FUNCTION {0}.billing_refuse_position_move() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'input position % may only move "
                "forward (% -> %)', OLD.application_name, OLD.notification_id, "
                "NEW.notification_id USING ERRCODE = 'check_violation'; END $$").format(schema),
            SQL("CREATE OR REPLACE TRIGGER billing_tracking_forward_only BEFORE UPDATE ON {0}.{1} "
                "FOR EACH ROW WHEN (NEW.notification_id < OLD.notification_id OR "
                "NEW.application_name IS DISTINCT FROM OLD.application_name) "
                "EXECUTE FUNCTION {0}.billing_refuse_position_move()"
                ).format(schema, Identifier(self.tracking_table_name)),
        ])
        self.insert_tracking_statement = SQL(
            "SELECT * FROM {0}.billing_move_position(%(application_name)s, %(notification_id)s)"
        ).format(schema)
        self._chain_heads = ChainHeads()
        self._writing = threading.local()
        self._insert_arrays = _insert_arrays_sql(self.datastore.schema, self.events_table_name,
                                                 " RETURNING notification_id")
        self._select_prev_hashes = SQL(
            "SELECT h.originator_id, h.hash FROM {0}.event_hashes h JOIN unnest(%b::text[], "
            "%b::bigint[]) AS k(i, v) ON h.originator_id = k.i AND h.originator_version = k.v"
        ).format(schema)
        self._insert_anchor = SQL(
            "INSERT INTO {0}.event_anchors (events, root, prev_hash, hash) "
            "SELECT %(n)s, %(root)s, p.h, sha256(p.h || %(root)s) FROM (SELECT coalesce("
            "(SELECT hash FROM {0}.event_anchors ORDER BY id DESC LIMIT 1), %(zero)s) AS h) p"
        ).format(schema)
        # The anchor id as a scalar subquery: evaluated once per statement, not once per row
        # (a fifth of this insert's time).
        self._insert_hashes = SQL(
            "INSERT INTO {0}.event_hashes SELECT i, v, c, h, (SELECT currval("
            "pg_get_serial_sequence('{0}.event_anchors', 'id'))), s FROM unnest(%b::text[], "
            "%b::bigint[], %b::bytea[], %b::bytea[], %b::int[]) AS x(i, v, c, h, s)"
        ).format(schema)
        log = SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                  "FROM {0}.{1} WHERE notification_id BETWEEN %s AND %s").format(
            schema, Identifier(self.events_table_name))
        self._select_log = log + SQL(" ORDER BY notification_id LIMIT %s")
        self._select_log_topics = log + SQL(" AND topic = ANY(%s) ORDER BY notification_id "
                                            "LIMIT %s")
        self._select_log_part = log + SQL(f" AND {PART} ORDER BY notification_id LIMIT %s")
        next_id = SQL("SELECT min(notification_id) FROM {0}.{1} WHERE notification_id "
                      "BETWEEN %s AND %s").format(schema, Identifier(self.events_table_name))
        self._next_id = next_id
        self._next_id_part = next_id + SQL(f" AND {PART}")
        self._insert_usage = SQL(
            "INSERT INTO {0}.usage_dedup (subscription_id, usage_id) "
            "SELECT k->>0, k->>1 FROM json_array_elements(%s::json) AS k"
        ).format(schema)
        # Subscriptions and ids as binary text arrays, and for each key the index of its
        # `until` among the batch's few distinct ones: half the server's time of the JSON form
        # (json_array_elements), which was most of its time per usage event at 1,000
        # subscriptions (pg_stat_statements, docs/scaling.md).
        self._insert_usage_until = SQL(
            "INSERT INTO {0}.usage_dedup (subscription_id, usage_id, until) "
            "SELECT k.s, k.u, (%s::timestamptz[])[k.w] FROM unnest(%b::text[], %b::text[], "
            "%b::int[]) AS k(s, u, w)"
        ).format(schema)
        self._prune_usage = SQL("SELECT {0}.billing_prune_usage(%s, %s)").format(schema)
        self._insert_outcomes = SQL(
            "INSERT INTO {0}.command_outcomes (subscription_id, command_id, type, account, "
            "result, code, message, events) SELECT * FROM unnest(%s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[])"
        ).format(schema)
        self._select_usage = SQL(
            "SELECT d.subscription_id, d.usage_id FROM {0}.usage_dedup d "
            "JOIN (SELECT k->>0 AS s, k->>1 AS u FROM json_array_elements(%s::json) AS k) AS k "
            "ON d.subscription_id = k.s AND d.usage_id = k.u"
        ).format(schema)

    def _insert_stored_events(self, curs: Cursor[DictRow],
                              stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """The events, then (under the same table lock, in the same transaction) their chained
        hashes and the batch's anchor. The events go in as four binary arrays rather than the
        library's array of a composite type, whose text dumping (escaping every byte of every
        state in Python) dominated the write path."""
        self._lock_table(curs)
        # No NOTIFY (the library's wake-up for listeners): nothing listens, and any login,
        # a tenant's too, could LISTEN and learn when every write happens.
        if not stored_events:
            return
        curs.execute(self._insert_arrays, event_arrays(stored_events), binary=True)
        with curs.connection.cursor() as own:
            firsts: dict[str, int] = {}
            for e in stored_events:
                firsts.setdefault(str(e.originator_id), e.originator_version)
            last = self._chain_heads.known({i: v - 1 for i, v in firsts.items() if v > 1})
            prev_keys = [(i, v - 1) for i, v in firsts.items() if v > 1 and i not in last]
            # Run (and fetched) even with nothing to ask: fetching here is also what makes
            # the pipeline send the events just queued. Without it, the sync at the end hung
            # with 100,000 events in one insert (the server waiting for the rest of the
            # message, the client for results).
            # Never prepared: these three follow the insert that a version conflict fails, in
            # the same pipeline. When psycopg's automatic preparation of a statement fell on
            # such an aborted pipeline, it took the statement as prepared and its next use
            # failed with "prepared statement ... does not exist" (seen once, in the
            # concurrency test).
            own.execute(self._select_prev_hashes,
                        (TextArray.of([k[0] for k in prev_keys]),
                         Int8Array.of([k[1] for k in prev_keys])), binary=True, prepare=False)
            last.update((r["originator_id"], bytes(r["hash"])) for r in own.fetchall())
            rows = chain_hashes(stored_events, last)
            self._writing.heads = {oid: (version, chained)
                                   for oid, version, _, chained, _ in rows}
            root = hashlib.sha256(b"".join(r[3] for r in rows)).digest()
            own.execute(self._insert_anchor, {"n": len(rows), "root": root, "zero": ZERO_HASH},
                        prepare=False)
            own.execute(self._insert_hashes, (
                TextArray.of([r[0] for r in rows]), Int8Array.of([r[1] for r in rows]),
                ByteaArray.of([r[2] for r in rows]), ByteaArray.of([r[3] for r in rows]),
                Int4Array.of([r[4] for r in rows])), binary=True, prepare=False)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        self._writing.heads = {}
        ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        self._chain_heads.committed(self._writing.heads)  # only once the write has committed
        return ids

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for tracking in kwargs.get("more_tracking") or ():  # other partitions of the same poll
            self._insert_tracking(curs, tracking=tracking)
        keys: Sequence[UsageKey] = kwargs.get("usage_keys") or ()
        if keys:
            # A plain INSERT: a key applied concurrently fails the whole transaction.
            until: Sequence[datetime] = kwargs.get("usage_until") or ()
            if until:
                curs.execute(self._insert_usage_until, _ledger_arrays(keys, until),
                             prepare=True)
            else:
                curs.execute(self._insert_usage, (_pairs_json(keys),), prepare=True)
        outcomes: Sequence[CommandOutcome] = kwargs.get("command_outcomes") or ()
        if outcomes:
            curs.execute(self._insert_outcomes, [
                [getattr(o, name) for o in outcomes]
                for name in ("subscription", "command_id", "type", "account", "result", "code",
                             "message", "events")])

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
                             part: tuple[int, int] | None = None) -> Sequence[Notification]:
        """The library's query, reading a bounded window of ids at a time. Unbounded
        (`notification_id >= start ORDER BY ... LIMIT n`) PostgreSQL planned it, with the stale
        row estimates a bulk insert leaves, as a scan of every later row plus an on-disk sort:
        each batch of a relay or rebuild that was behind cost as much as reading the rest of
        the log. Only the five columns used are read (not `*`), as binary tuples.

        `part=(k, n)`: only the streams in the k-th of n hash partitions of their ids (a
        parallel rebuild gives each process one; every event of a subscription is in its
        subscription's part). Not combined with `topics`."""
        first = (start or 0) if inclusive_of_start else (start or 0) + 1
        last = stop if stop is not None else 2**63 - 1
        if part is not None and topics:
            raise ValueError("a partition and a topic filter are not read together")
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            while True:
                window_end = min(last, first + 2 * limit - 1)
                params: tuple[Any, ...]
                if part is not None:
                    query, params = self._select_log_part, (first, window_end, part[1],
                                                            part[0], limit)
                elif topics:
                    query, params = self._select_log_topics, (first, window_end, list(topics),
                                                              limit)
                else:
                    query, params = self._select_log, (first, window_end, limit)
                cur.execute(query, params, prepare=True, binary=True)
                rows = cur.fetchall()
                if rows or window_end >= last:
                    break
                # An empty window: a gap of rolled-back ids (or no wanted topic). Jump to the
                # next id, if any.
                if part is not None:
                    cur.execute(self._next_id_part, (window_end + 1, last, part[1], part[0]),
                                prepare=True)
                else:
                    cur.execute(self._next_id, (window_end + 1, last), prepare=True)
                following = cur.fetchone()
                if following is None or following[0] is None:
                    break
                first = following[0]
            return [Notification(id=i, originator_id=o, originator_version=v, topic=t,
                                 state=bytes(s)) for i, o, v, t, s in rows]

    def subscription_ids(self) -> list[str]:
        """Every subscription, from the first event of each stream."""
        statement = SQL(
            "SELECT originator_id FROM {0}.{1} WHERE originator_version = 1 AND topic = %s "
            "ORDER BY originator_id"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (SUBSCRIBED_TOPIC,))
            return [r["originator_id"] for r in curs.fetchall()]

    def select_streams(self, ids: Sequence[str], snapshots_table: str
                       ) -> dict[str, tuple[StoredEvent | None, list[StoredEvent]]]:
        """Many aggregates in two queries: each one's newest snapshot and the events after it
        (loading one by one costs a round trip per aggregate)."""
        if not ids:
            return {}
        schema = Identifier(self.datastore.schema)
        snapshots_sql = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state "
            "FROM {0}.{1} WHERE originator_id = ANY(%s) ORDER BY originator_id, "
            "originator_version DESC").format(schema, Identifier(snapshots_table))
        # `= ANY` keeps the primary-key index in play (a join with unnest() let the planner
        # scan the whole table for every batch); events before a snapshot are skipped below.
        events_sql = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema, Identifier(self.events_table_name))
        out: dict[str, tuple[StoredEvent | None, list[StoredEvent]]] = {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(snapshots_sql, (list(ids),), binary=True)
            snaps = {r["originator_id"]: StoredEvent(r["originator_id"],
                                                     r["originator_version"], r["topic"],
                                                     bytes(r["state"]))
                     for r in curs.fetchall()}
            curs.execute(events_sql, (list(ids),), binary=True)
            for r in curs.fetchall():
                oid = r["originator_id"]
                snap = snaps.get(oid)
                if snap is not None and r["originator_version"] <= snap.originator_version:
                    continue
                out.setdefault(oid, (snap, []))[1].append(StoredEvent(
                    oid, r["originator_version"], r["topic"], bytes(r["state"])))
        for oid, snap in snaps.items():
            out.setdefault(oid, (snap, []))
        return out

    def max_versions(self, ids: Sequence[str]) -> dict[str, int]:
        """The latest version of each stream (to tell whether a cached aggregate is current).
        One backward index probe per stream: `max(...) GROUP BY` read every version of every
        stream asked for, so its cost grew with the streams' history."""
        if not ids:
            return {}
        statement = SQL(
            "SELECT k.i, (SELECT e.originator_version FROM {0}.{1} e WHERE e.originator_id = k.i "
            "ORDER BY e.originator_version DESC LIMIT 1) FROM unnest(%s::text[]) AS k(i)"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, (list(ids),), prepare=True, binary=True)
            return {i: v for i, v in curs.fetchall() if v is not None}

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A PostgreSQL advisory lock held on a connection of its own for the section: other
        processes wait; the server releases it if this process dies."""
        with self.datastore.get_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))

    def prune_usage(self, subscription_ids: Sequence[str], before: datetime) -> int:
        """Forget the usage ids of these subscriptions whose usage can no longer be accepted
        by `before` (the caller has advanced them to it: a replayed id is then refused as too
        late by the subscription itself, not by the ledger)."""
        if not subscription_ids:
            return 0
        try:
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(self._prune_usage, (list(subscription_ids), before))
                row = curs.fetchone()
                return 0 if row is None else int(next(iter(row.values())))
        except (errors.InsufficientPrivilege, errors.UndefinedFunction) as e:
            # Housekeeping, never a reason to stop the clock: a role set up before this
            # function existed lacks EXECUTE on it until `billing roles setup` runs again.
            log.warning("usage ledger not pruned: %s (run `billing roles setup`)",
                        str(e).splitlines()[0])
            return 0

    def seen_usage(self, keys: Sequence[UsageKey]) -> set[UsageKey]:
        if not keys:
            return set()
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_usage, (_pairs_json(keys),), prepare=True)
            return {(r["subscription_id"], r["usage_id"]) for r in curs.fetchall()}


ZERO_HASH = bytes(32)


def content_hash(topic: str, state: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\x00" + state).digest()


def event_hash(prev: bytes, originator_id: str, version: int, content: bytes) -> bytes:
    return hashlib.sha256(prev + f"{originator_id}\x00{version}\x00".encode() + content).digest()


class ChainHeads:
    """The last hash this process committed on each stream. Events are immutable, so a head
    (version v, hash h) stays true for good: the next write of that stream at v + 1 chains on
    h without reading it back (a write based on a stale version fails on the version's
    uniqueness anyway). Bounded: the least recently written go first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._heads: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, wanted: dict[str, int]) -> dict[str, bytes]:
        """The hashes of the wanted (stream, version)s held here."""
        with self._lock:
            heads = self._heads
            return {oid: head[1] for oid, version in wanted.items()
                    if (head := heads.get(oid)) is not None and head[0] == version}

    def committed(self, heads: dict[str, tuple[int, bytes]]) -> None:
        with self._lock:
            for oid, head in heads.items():
                self._heads[oid] = head
                self._heads.move_to_end(oid)
            while len(self._heads) > self.capacity:
                self._heads.popitem(last=False)


def chain_hashes(events: Sequence[StoredEvent],
                 last: dict[str, bytes]) -> list[tuple[str, int, bytes, bytes, int]]:
    """(id, version, content hash, chained hash, position in batch) for each event."""
    rows = []
    previous = dict(last)
    for seq, e in enumerate(events):
        oid = str(e.originator_id)
        prev = previous.get(oid, ZERO_HASH) if e.originator_version > 1 else ZERO_HASH
        content = content_hash(e.topic, bytes(e.state))
        chained = event_hash(prev, oid, e.originator_version, content)
        previous[oid] = chained
        rows.append((oid, e.originator_version, content, chained, seq))
    return rows


def _ledger_arrays(keys: Sequence[UsageKey], until: Sequence[datetime]) -> tuple[Any, ...]:
    """The statement's parameters: the distinct `until`s, then the subscriptions, the ids and
    each key's `until` as a 1-based index (a batch's keys share their cycle's `until` object,
    so identity finds most of them at once)."""
    if len(until) != len(keys):
        raise ValueError(f"{len(keys)} usage keys with {len(until)} times")
    distinct: list[datetime] = []
    index: dict[datetime, int] = {}
    last: datetime | None = None
    at = 0
    positions = []
    for when in until:
        if when is not last:
            found = index.get(when)
            if found is None:
                distinct.append(when)
                found = index[when] = len(distinct)
            last, at = when, found
        positions.append(at)
    return (distinct, TextArray.of([k[0] for k in keys]), TextArray.of([k[1] for k in keys]),
            Int4Array.of(positions))


def _pairs_json(keys: Sequence[UsageKey]) -> str:
    # One JSON parameter instead of two text arrays: psycopg's array dumper escapes every
    # element in Python, which dominated the ingest profile.
    return orjson.dumps(keys).decode()


def eventsourcing_env(database_url: str, pool_size: int = 5) -> dict[str, str]:
    url = urlparse(database_url)
    return {
        "PERSISTENCE_MODULE": "infra.eventstore.recorder:BillingFactory",
        "APPLICATION_RECORDER_TOPIC": "infra.eventstore.recorder:BillingRecorder",
        "ORIGINATOR_ID_TYPE": "text",
        "TRANSCODER_TOPIC": "infra.eventstore.transcoder:OrjsonTranscoder",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_CONN_MAX_AGE": "",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",  # they break commit order of the notification log
    }


def tune_gc() -> None:
    """Fewer cyclic garbage collections in this process. A worker holds up to 200,000
    aggregates of nested dicts in its cache, and with the default thresholds (a young
    collection every 700 allocations) the collector walking them took about a sixth of the CPU
    of loading 100,000 subscriptions (17.7 / 16.4 CPU-s down to 15.2 / 13.2 with these). The
    billing objects form few cycles, so the memory held back is small."""
    gc.set_threshold(50_000, 20, 100)


def open_application(database_url: str, catalog: Catalog,
                     migrate: bool = True) -> BillingApplication:
    tune_gc()  # every worker process opens its application here
    env = eventsourcing_env(database_url)
    if not migrate:
        env["CREATE_TABLE"] = "n"  # a least-privileged role: the owner created the tables
    return BillingApplication(catalog, env=env)
