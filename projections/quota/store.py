"""SQL for the quota read model, its per-subscription versions and its input positions.

Rows, versions and the Kafka position are always written in one transaction by the caller.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg

from projections import tracking as projection_versions
from projections.quota.model import QuotaRow, SubscriptionQuota

PROJECTION = "quota"

SCHEMA = """
CREATE TABLE IF NOT EXISTS quota (
    subscription_id text NOT NULL,
    metric text NOT NULL,
    account text NOT NULL,
    plan_id text NOT NULL,
    included numeric NOT NULL,
    packs numeric NOT NULL,
    used numeric NOT NULL,
    remaining numeric NOT NULL,
    limit_kind text NOT NULL,
    exhausted boolean NOT NULL,
    cycle_start timestamptz NOT NULL,
    cycle_end timestamptz NOT NULL,
    daily_cap numeric,
    PRIMARY KEY (subscription_id, metric)
) WITH (fillfactor = 70);
CREATE TABLE IF NOT EXISTS usage_daily (
    subscription_id text NOT NULL,
    metric text NOT NULL,
    cycle_start timestamptz NOT NULL,
    day date NOT NULL,
    quantity numeric NOT NULL,
    PRIMARY KEY (subscription_id, metric, cycle_start, day)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS usage_by_member (
    subscription_id text NOT NULL,
    metric text NOT NULL,
    cycle_start timestamptz NOT NULL,
    member text NOT NULL,
    quantity numeric NOT NULL,
    PRIMARY KEY (subscription_id, metric, cycle_start, member)
);
-- Added after the table was first created: a grouped charge's dimension, unit credits.
ALTER TABLE quota ADD COLUMN IF NOT EXISTS group_by text;
ALTER TABLE quota ADD COLUMN IF NOT EXISTS credits numeric NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS usage_by_group (
    subscription_id text NOT NULL,
    metric text NOT NULL,
    cycle_start timestamptz NOT NULL,
    grp text NOT NULL,
    quantity numeric NOT NULL,
    PRIMARY KEY (subscription_id, metric, cycle_start, grp)
);
CREATE TABLE IF NOT EXISTS unit_credit_balances (
    subscription_id text NOT NULL,
    metric text NOT NULL,
    balance numeric NOT NULL,
    PRIMARY KEY (subscription_id, metric)
);
CREATE TABLE IF NOT EXISTS quota_unmetered (
    subscription_id text PRIMARY KEY,
    account text NOT NULL,
    cycle_start timestamptz NOT NULL,
    cycle_end timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_account ON quota (account);
CREATE TABLE IF NOT EXISTS projection_versions (
    projection text NOT NULL,
    subscription_id text NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (projection, subscription_id)
) WITH (fillfactor = 70);
CREATE TABLE IF NOT EXISTS projection_positions (
    projection text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);
"""

COLUMNS = ("subscription_id", "metric", "account", "plan_id", "included", "packs", "used",
           "remaining", "limit_kind", "exhausted", "cycle_start", "cycle_end", "daily_cap",
           "group_by", "credits")


class PositionConflict(RuntimeError):
    """Another process recorded this position (or a later one) first."""


class StateCache:
    """The states a projector last committed, so that a batch reads from the table only the
    subscriptions it has not seen. A cached state that another writer (a rebalance, a rebuild)
    has moved since is found out when the batch writes its version (`VersionConflict`); the
    projector then redoes the batch reading the table. Bounded: the least recently written go
    first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, SubscriptionQuota] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def take(self, subscription_id: str) -> SubscriptionQuota | None:
        """Out of the cache while a batch changes it: a batch that fails does not put it back."""
        return self._states.pop(subscription_id, None)

    def keep(self, states: Iterable[SubscriptionQuota]) -> None:
        """After the batch that wrote them committed."""
        for state in states:
            self._states[state.subscription_id] = state
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)


def load(cur: psycopg.Cursor[Any], subscription_ids: Sequence[str],
         cache: StateCache | None = None) -> dict[str, SubscriptionQuota]:
    """The states of a batch: the cached ones as they are (`write` refuses any that another
    writer has moved since, and the batch is then redone), the others read from the table."""
    states: dict[str, SubscriptionQuota] = {}
    unread: list[str] = []
    for sid in subscription_ids:
        cached = cache.take(sid) if cache is not None else None
        if cached is not None:
            states[sid] = cached
        else:
            unread.append(sid)
    if not unread:
        return states
    versions = projection_versions.read(cur, PROJECTION, unread)
    for sid in unread:
        version = versions.get(sid, 0)
        states[sid] = SubscriptionQuota(sid, version=version, stored_version=version)
    cur.execute("SELECT subscription_id, metric, balance FROM unit_credit_balances "
                "WHERE subscription_id = ANY(%s)", (unread,))
    for sid, metric, balance in cur.fetchall():
        states[sid].credits[metric] = states[sid].stored_credits[metric] = balance
    cur.execute("SELECT subscription_id, account, cycle_start, cycle_end FROM quota_unmetered "
                "WHERE subscription_id = ANY(%s)", (unread,))
    for sid, account, start, end in cur.fetchall():
        states[sid].unmetered = states[sid].unmetered_stored = (account, start, end)
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM quota WHERE subscription_id = ANY(%s)",
                (unread,))
    for r in cur.fetchall():
        row = QuotaRow(r[0], r[1], r[2], r[3], included=r[4], packs=r[5], used=r[6],
                       limit_kind=r[8], cycle_start=r[10], cycle_end=r[11], daily_cap=r[12],
                       group_by=r[13], credits=r[14])
        state = states[row.subscription_id]
        state.metrics()[row.metric] = row
        state.stored[row.metric] = row.values()
    return states


# The rows go in as one JSON document that PostgreSQL parses: psycopg dumps array parameters
# element by element in Python, which was a third of the projector's CPU.
_UPSERT = (
    f"INSERT INTO quota ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
    "FROM json_populate_recordset(NULL::quota, %s::json) "
    "ON CONFLICT (subscription_id, metric) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])
)


# Usage changes only `used` (and with it `remaining` and `exhausted`): those rows are updated
# by key with just these columns, which costs PostgreSQL about half the full upsert.
_UPDATE_USED = (
    "UPDATE quota AS q SET used = v.used, remaining = v.remaining, exhausted = v.exhausted "
    "FROM json_to_recordset(%s::json) AS v(subscription_id text, metric text, used numeric, "
    "remaining numeric, exhausted boolean) "
    "WHERE q.subscription_id = v.subscription_id AND q.metric = v.metric"
)
_USED = 4  # position of `used` in QuotaRow.values()


def write(cur: psycopg.Cursor[Any], states: Iterable[SubscriptionQuota]) -> None:
    """The rows that changed, then the versions (refused with `VersionConflict` if another
    writer has moved one, which rolls the batch back): a usage batch only rewrites
    unindexed columns, so PostgreSQL updates the rows in place (HOT) instead of deleting and
    reinserting them. Subscriptions whose set of metrics was replaced (subscribe, roll, plan
    change) lose their old rows first."""
    states = list(states)
    if not states:
        return
    replaced = [s.subscription_id for s in states if s.replaced]
    if replaced:
        cur.execute("DELETE FROM quota WHERE subscription_id = ANY(%s)", (replaced,))
    rows: list[QuotaRow] = []
    used_only: list[QuotaRow] = []
    for s in states:
        if s.replaced:
            s.stored = {}
        for metric, row in (s.rows or {}).items():
            values = row.values()
            stored = s.stored.get(metric)
            if stored != values:
                if stored is not None and stored[:_USED] == values[:_USED] \
                        and stored[_USED + 1:] == values[_USED + 1:]:
                    used_only.append(row)
                else:
                    rows.append(row)
                s.stored[metric] = values
    if used_only:
        cur.execute(_UPDATE_USED, (orjson.dumps([{
            "subscription_id": r.subscription_id, "metric": r.metric, "used": r.used,
            "remaining": r.remaining, "exhausted": r.exhausted,
        } for r in used_only], default=_decimal_text).decode(),), prepare=True)
        if cur.rowcount != len(used_only):  # not where the versions say: write them whole
            rows.extend(used_only)
    if rows:
        cur.execute(_UPSERT, (orjson.dumps([{
            "subscription_id": r.subscription_id, "metric": r.metric, "account": r.account,
            "plan_id": r.plan_id, "included": r.included, "packs": r.packs, "used": r.used,
            "remaining": r.remaining, "limit_kind": r.limit_kind, "exhausted": r.exhausted,
            "cycle_start": r.cycle_start, "cycle_end": r.cycle_end, "daily_cap": r.daily_cap,
            "group_by": r.group_by, "credits": r.credits,
        } for r in rows], default=_decimal_text).decode(),))
    _add_usage_history(cur, states)
    _write_credits(cur, states)
    _write_unmetered(cur, states)
    # Last, as the versions always were: a rebuild locks `quota` before it touches the versions,
    # and taking them in the other order could deadlock with it. A conflict found here still
    # rolls back everything above.
    projection_versions.advance(cur, PROJECTION, {
        s.subscription_id: (s.stored_version, s.version)
        for s in states if s.version != s.stored_version})
    for s in states:
        s.replaced = False
        s.stored_version = s.version


def _write_credits(cur: psycopg.Cursor[Any], states: list[SubscriptionQuota]) -> None:
    changed = [(s.subscription_id, m, b) for s in states for m, b in s.credits.items()
               if s.stored_credits.get(m) != b]
    if changed:
        cur.execute(
            "INSERT INTO unit_credit_balances SELECT * FROM unnest(%s::text[], %s::text[], "
            "%s::numeric[]) ON CONFLICT (subscription_id, metric) DO UPDATE SET "
            "balance = EXCLUDED.balance", tuple(list(c) for c in zip(*changed, strict=True)))
        for s in states:
            s.stored_credits.update(s.credits)


def _write_unmetered(cur: psycopg.Cursor[Any], states: list[SubscriptionQuota]) -> None:
    """The account and cycle of subscriptions whose plan meters nothing (no rows hold them)."""
    kept = [(s.subscription_id, *s.unmetered) for s in states
            if s.unmetered is not None and s.unmetered != s.unmetered_stored]
    gone = [s.subscription_id for s in states if s.unmetered is None and s.unmetered_stored]
    if kept:
        cur.execute(
            "INSERT INTO quota_unmetered SELECT * FROM unnest(%s::text[], %s::text[], "
            "%s::timestamptz[], %s::timestamptz[]) ON CONFLICT (subscription_id) DO UPDATE "
            "SET account = EXCLUDED.account, cycle_start = EXCLUDED.cycle_start, "
            "cycle_end = EXCLUDED.cycle_end", tuple(list(c) for c in zip(*kept, strict=True)))
    if gone:
        cur.execute("DELETE FROM quota_unmetered WHERE subscription_id = ANY(%s)", (gone,))
    for s in states:
        s.unmetered_stored = s.unmetered


def _decimal_text(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # a JSON string: PostgreSQL reads it into numeric exactly
    raise TypeError(f"cannot write {type(value).__name__} to the quota table")


def _add_usage_history(cur: psycopg.Cursor[Any], states: list[SubscriptionQuota]) -> None:
    daily = [(s.subscription_id, m, c, d, q)
             for s in states for (m, c, d), q in s.daily.items()]
    if daily:  # one statement for the batch (keys are unique: summed per key above)
        cur.execute(
            "INSERT INTO usage_daily SELECT * FROM json_populate_recordset(NULL::usage_daily, "
            "%s::json) ON CONFLICT (subscription_id, metric, cycle_start, day) DO UPDATE SET "
            "quantity = usage_daily.quantity + EXCLUDED.quantity",
            (orjson.dumps([{"subscription_id": sid, "metric": m, "cycle_start": c, "day": d,
                            "quantity": q} for sid, m, c, d, q in daily],
                          default=_decimal_text).decode(),))
    for table, key in (("usage_by_member", "member"), ("usage_by_group", "grp")):
        increments = [(s.subscription_id, m, c, who, q) for s in states
                      for (m, c, who), q in (s.by_member if key == "member"
                                             else s.by_group).items()]
        if increments:
            cur.execute(
                f"INSERT INTO {table} SELECT * FROM unnest(%b::text[], %b::text[], "
                f"%b::timestamptz[], %b::text[], %b::numeric[]) ON CONFLICT "
                f"(subscription_id, metric, cycle_start, {key}) DO UPDATE SET "
                f"quantity = {table}.quantity + EXCLUDED.quantity",
                tuple(list(column) for column in zip(*increments, strict=True)), binary=True)
    for s in states:
        s.daily.clear()
        s.by_member.clear()
        s.by_group.clear()


def record_positions(cur: psycopg.Cursor[Any], topic: str, positions: Mapping[int, int],
                     projection: str = PROJECTION) -> None:
    """Each partition's new position, in one statement; refused if any is not ahead."""
    cur.execute(
        "INSERT INTO projection_positions AS p (projection, topic, partition, position) "
        "SELECT %s, %s, * FROM unnest(%s::int[], %s::bigint[]) "
        "ON CONFLICT (projection, topic, partition) DO UPDATE "
        "SET position = EXCLUDED.position WHERE p.position < EXCLUDED.position",
        (projection, topic, list(positions), list(positions.values())),
    )
    if cur.rowcount != len(positions):
        raise PositionConflict(f"{projection} {topic}: a partition is already at or past "
                               f"{dict(positions)}")


def position(conn: psycopg.Connection[Any], topic: str, partition: int,
             projection: str = PROJECTION) -> int | None:
    row = conn.execute(
        "SELECT position FROM projection_positions "
        "WHERE projection = %s AND topic = %s AND partition = %s",
        (projection, topic, partition),
    ).fetchone()
    conn.commit()
    return None if row is None else int(row[0])


def reset(cur: psycopg.Cursor[Any], positions_too: bool) -> None:
    cur.execute("DELETE FROM quota")
    cur.execute("DELETE FROM usage_daily")
    cur.execute("DELETE FROM usage_by_member")
    cur.execute("DELETE FROM usage_by_group")
    cur.execute("DELETE FROM unit_credit_balances")
    cur.execute("DELETE FROM quota_unmetered")
    cur.execute("DELETE FROM projection_versions WHERE projection = %s", (PROJECTION,))
    if positions_too:
        cur.execute("DELETE FROM projection_positions WHERE projection = %s", (PROJECTION,))


def usage_history(conn: psycopg.Connection[Any], subscription_id: str, since: datetime
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(metric, day, quantity) per UTC day, (metric, member, quantity) and, for grouped
    charges, (metric, group, quantity), for the cycle starting at `since`."""
    days = conn.execute("SELECT metric, day, quantity FROM usage_daily WHERE subscription_id = %s"
                        " AND cycle_start = %s ORDER BY metric, day",
                        (subscription_id, since)).fetchall()
    members = conn.execute("SELECT metric, member, quantity FROM usage_by_member WHERE "
                           "subscription_id = %s AND cycle_start = %s ORDER BY metric, "
                           "quantity DESC, member", (subscription_id, since)).fetchall()
    groups = conn.execute("SELECT metric, grp, quantity FROM usage_by_group WHERE "
                          "subscription_id = %s AND cycle_start = %s ORDER BY metric, "
                          "quantity DESC, grp", (subscription_id, since)).fetchall()
    conn.commit()
    return days, members, groups


def group_used(conn: psycopg.Connection[Any], subscription_id: str, metric: str,
               cycle_start: datetime, group: str) -> Decimal:
    """What one group of a grouped charge has used in the cycle starting at `cycle_start`."""
    row = conn.execute("SELECT quantity FROM usage_by_group WHERE subscription_id = %s AND "
                       "metric = %s AND cycle_start = %s AND grp = %s",
                       (subscription_id, metric, cycle_start, group)).fetchone()
    conn.commit()
    return Decimal(0) if row is None else Decimal(row[0])


def read(conn: psycopg.Connection[Any], subscription_id: str | None = None,
         limit: int | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS)} FROM quota"
    params: list[Any] = []
    if subscription_id is not None:
        sql += " WHERE subscription_id = %s"
        params.append(subscription_id)
    sql += " ORDER BY subscription_id, metric"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    rows = conn.execute(sql, params).fetchall()
    conn.commit()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]
