"""Which broker's topics the stored input positions belong to, and what to do when the broker
lost them.

Every worker keeps its Kafka positions in PostgreSQL (consumers/positions.py). They mean
something only on the topics they were taken on: a broker that lost its data (the embedded
broker keeps it in memory; a Kafka volume recreated; a topic deleted and created again) has
empty topics, and positions past their end would skip the first records published to them.

So the engine records, per topic, the cluster id and the topic id (Kafka's UUID for one
creation of a topic) it last worked on (`kafka_topic_identities`). At start, after creating
missing topics, it compares: where a topic is not the one recorded, the positions taken on it
are forgotten, in one transaction:

- on the usage and command topics: the ingesters' positions, so they read the new topic from
  its start (usage ids and command ids already applied are refused as duplicates);
- on the events topic: the relay's position, so the relay publishes the whole event store
  again, and the invoicer's and projections' positions, so they read it from its start; they
  skip what they applied by subscription version (`projection_versions`, the subscription's
  invoiced-through version), so nothing is counted twice;
- on the dead-letter topic: the record of which letters were replayed (their offsets name
  letters of the lost topic).

A committed event is never lost: the event store is the source of truth and the relay
publishes from it. What the old broker held and no worker had applied yet (usage published
just before the broker's crash) is gone with it; producers that cannot lose an accepted record
use a broker that keeps its data (docs/deployment.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg

from consumers.positions import tracking_prefix
from infra.config import Settings
from infra.kafka.clients import admin

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS kafka_topic_identities (
    topic text PRIMARY KEY,
    identity text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
)"""

NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"


def current(bootstrap: str, topics: list[str], options: Mapping[str, Any]) -> dict[str, str]:
    """Each topic's identity on the broker now: `cluster id/topic id` (the topic id is left
    out where the broker gives none). A topic the broker answers about with an error (not
    there yet, leader moving) is left out: no identity is better than a wrong one."""
    client = admin(bootstrap, dict(options))
    try:
        cluster = client.describe_cluster()["cluster_id"]
        found = {t["name"]: t.get("topic_id") for t in client.describe_topics(topics)
                 if not t.get("error_code")}
    finally:
        client.close()
    return {topic: f"{cluster}/{tid}" if tid and tid != NO_TOPIC_ID else str(cluster)
            for topic, tid in found.items()}


class BrokerChanged(RuntimeError):
    """The broker's topics are not the ones the stored positions were taken on, and this
    process may not reset them (it does not own the tables)."""


def changed_topics(conn: psycopg.Connection[Any], now: Mapping[str, str]) -> dict[str, str]:
    """Topics whose recorded identity differs from `now`: {topic: recorded identity}."""
    rows = conn.execute("SELECT topic, identity FROM kafka_topic_identities "
                        "WHERE topic = ANY(%s)", (list(now),)).fetchall()
    return {topic: identity for topic, identity in rows if now[topic] != identity}


def adopt(conn: psycopg.Connection[Any], settings: Settings,
          now: Mapping[str, str]) -> list[str]:
    """Record `now` as the topics' identities; where one differs from the recorded one, forget
    the positions taken on the old topic first. A topic seen for the first time is simply
    recorded. One transaction, serialized with other starting processes. Returns the topics
    whose positions were reset."""
    topics = settings.topics
    with conn.transaction():
        # Two owners starting at once, the first time: one creates the table, the other waits.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing-topic-identities'))")
        conn.execute(DDL)
        changed = changed_topics(conn, now)
        for topic in changed:
            _forget_positions(conn, topic, is_dlq=topic == topics.dlq)
            log.warning("topic %s is not the one the stored positions were taken on (was %s, "
                        "now %s): its positions are reset%s", topic, changed[topic], now[topic],
                        "; the relay publishes the event store again"
                        if topic == topics.events else "")
        for topic, identity in now.items():
            conn.execute(
                "INSERT INTO kafka_topic_identities (topic, identity) VALUES (%s, %s) "
                "ON CONFLICT (topic) DO UPDATE SET identity = EXCLUDED.identity, seen_at = now()",
                (topic, identity))
    return sorted(changed)


def check(conn: psycopg.Connection[Any], now: Mapping[str, str]) -> None:
    """For a process that does not own the tables: refuse to start on topics the positions do
    not belong to."""
    try:
        changed = changed_topics(conn, now)
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return
    conn.rollback()
    if changed:
        raise BrokerChanged(
            f"the broker's topics are not the ones the stored positions were taken on "
            f"({', '.join(sorted(changed))}): start the engine once as the tables' owner "
            f"(BILLING_MIGRATE=1), which resets those positions and publishes the event store "
            f"again (docs/deployment.md)")


def _forget_positions(conn: psycopg.Connection[Any], topic: str, is_dlq: bool) -> None:
    from infra.kafka.relay import relay_position_name

    conn.execute(
        "DELETE FROM billing_tracking WHERE application_name = %s "
        "OR starts_with(application_name, %s) OR starts_with(application_name, %s)",
        (relay_position_name(topic), tracking_prefix(topic), tracking_prefix(topic, "invoicer")))
    if _exists(conn, "projection_positions"):
        conn.execute("DELETE FROM projection_positions WHERE topic = %s", (topic,))
    if is_dlq and _exists(conn, "dlq_replays"):
        conn.execute("DELETE FROM dlq_replays")


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]  # type: ignore[index,no-any-return]
