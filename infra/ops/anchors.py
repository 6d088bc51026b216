"""Anchors that leave PostgreSQL. Every write adds an anchor chaining the hashes of its events
to the previous anchor (infra/eventstore/recorder.py), so an anchor's hash commits to the whole
history before it. A database superuser can still rewrite events, hashes and anchors consistently;
what they cannot rewrite is a copy kept elsewhere. The exporter (role `audit` of
`billing run`) copies each anchor as it is written to an append-only JSON-lines file and to
the `billing.audit` topic, each record with an HMAC under BILLING_AUDIT_KEY (a key the
database never holds) when one is set. `billing verify` then checks the database against
that copy and names the first anchor that diverges and the events it covers."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from infra.wiring.polling import Progress, run_polling

log = logging.getLogger(__name__)

FIELDS = ("anchor", "events", "root", "hash", "recorded_at")


def sign(record: dict[str, Any], key: bytes) -> str:
    body = orjson.dumps({k: record[k] for k in FIELDS}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def signed_properly(record: dict[str, Any], key: bytes) -> bool:
    return hmac.compare_digest(str(record.get("mac", "")), sign(record, key))


def read_file(path: Path) -> list[dict[str, Any]]:
    """The records of an anchors file, in order; a torn last line (a crash while appending)
    is left out."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return records


def read_topic(bootstrap: str, settings: Any, quiet_seconds: float = 1.5
               ) -> list[dict[str, Any]]:
    """Every record of the audit topic, from offset 0, once per anchor, in anchor order."""
    from infra.kafka import clients as kafka
    records = {}
    for r in kafka.read_from_start(bootstrap, settings, settings.topics.audit,
                                   "billing-anchor-reader", quiet_seconds):
        record = orjson.loads(r.value)
        records[int(record["anchor"])] = record
    return [records[k] for k in sorted(records)]


class AnchorExporter:
    def __init__(self, database_url: str, path: Path, producer: Any | None, topic: str,
                 key: bytes | None, batch: int = 5000) -> None:
        self.database_url = database_url
        self.path = path
        self.producer = producer
        self.topic = topic
        self.key = key
        self.batch = batch
        self.published = 0
        self.progress = Progress()
        self._position: int | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def position(self) -> int:
        """The last anchor in the file: the file is the exporter's own record of progress."""
        if self._position is None:
            records = read_file(self.path)
            self._position = int(records[-1]["anchor"]) if records else 0
        return self._position

    def run_once(self) -> int:
        rows = self._db().execute(
            "SELECT id, events, root, hash, recorded_at FROM event_anchors WHERE id > %s "
            "ORDER BY id LIMIT %s", (self.position(), self.batch)).fetchall()
        if not rows:
            return 0
        records = [self._record(row) for row in rows]
        lines = [orjson.dumps(r) for r in records]
        if self.producer is not None:
            futures = [self.producer.send(self.topic, key=b"anchors", value=line)
                       for line in lines]
            self.producer.flush()
            for future in futures:
                future.get(timeout=30)
        self._append(lines)
        self._position = int(records[-1]["anchor"])
        self.published += len(records)
        return len(records)

    def _record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        anchor, events, root, digest, recorded_at = row
        record: dict[str, Any] = {"anchor": int(anchor), "events": int(events),
                                  "root": bytes(root).hex(), "hash": bytes(digest).hex(),
                                  "recorded_at": recorded_at.isoformat()}
        if self.key is not None:
            record["mac"] = sign(record, self.key)
        return record

    def _append(self, lines: Iterable[bytes]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)

    def health(self, stall_seconds: float) -> dict[str, Any]:
        return self.progress.health(stall_seconds, f"anchors->{self.path}", self._position,
                                    None)

    def run(self, stop: threading.Event, idle_sleep: float = 0.5) -> None:
        run_polling(stop, self.run_once, self.progress, self._forget, "anchor export",
                    idle_sleep)

    def _forget(self) -> None:
        self._position = None
        if self._conn is not None:
            self._conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
