"""Auditor tools over the event store: verify the hash chains, export history, replay state."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from infra.eventstore import ZERO_HASH, content_hash, event_hash


@dataclass
class Finding:
    subscription: str
    version: int
    kind: str  # edited, deleted, inserted, reordered, chain_broken, anchor_mismatch
    detail: str


@dataclass
class Verification:
    events: int = 0
    streams: int = 0
    anchors: int = 0
    final_anchor: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


def verify(conn: psycopg.Connection[Any], events_table: str = "billing_events") -> Verification:
    """Recompute every stream's hash chain and every batch anchor from the stored events.

    Reports, naming the stream and version: an event whose content changed (edited), an event
    missing between recorded hashes (deleted), an event with no recorded hash (inserted outside
    the engine), an event whose content is another version's (reordered), and anchors whose
    root or chain no longer matches."""
    result = Verification()
    rows = conn.execute(
        f"SELECT coalesce(e.originator_id::text, h.originator_id), "
        f"coalesce(e.originator_version, h.originator_version), e.topic, e.state, "
        f"h.content_hash, h.hash FROM {events_table} e FULL OUTER JOIN event_hashes h "
        f"ON h.originator_id = e.originator_id::text "
        f"AND h.originator_version = e.originator_version ORDER BY 1, 2"
    ).fetchall()
    streams: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        streams[row[0]].append(row)
    result.streams = len(streams)
    for sid, stream in streams.items():
        _verify_stream(sid, stream, result)
    _verify_anchors(conn, result)
    conn.commit()
    return result


def _verify_stream(sid: str, stream: list[tuple[Any, ...]], result: Verification) -> None:
    recorded_contents = {bytes(r[4]): r[1] for r in stream if r[4] is not None}
    prev = ZERO_HASH
    expected_version = 1
    for _, version, topic, state, stored_content, stored_hash in stream:
        if topic is None:
            result.findings.append(Finding(sid, version, "deleted",
                                           "a recorded event is missing from the store"))
            prev = bytes(stored_hash)
            expected_version = version + 1
            continue
        result.events += 1
        content = content_hash(topic, bytes(state))
        if stored_hash is None:
            result.findings.append(Finding(sid, version, "inserted",
                                           "an event the engine never recorded"))
            continue
        if version != expected_version:
            result.findings.append(Finding(sid, version, "chain_broken",
                                           f"version {expected_version} expected"))
        if content != bytes(stored_content):
            other = recorded_contents.get(content)
            if other is not None and other != version:
                result.findings.append(Finding(sid, version, "reordered",
                                               f"holds the content recorded as version {other}"))
            else:
                result.findings.append(Finding(sid, version, "edited",
                                               "content differs from what was recorded"))
        elif event_hash(prev, sid, version, content) != bytes(stored_hash):
            result.findings.append(Finding(sid, version, "chain_broken",
                                           "does not follow the recorded previous event"))
        prev = bytes(stored_hash)
        expected_version = version + 1


def _verify_anchors(conn: psycopg.Connection[Any], result: Verification) -> None:
    hashes: dict[int, list[bytes]] = defaultdict(list)
    for anchor_id, h in conn.execute(
            "SELECT anchor_id, hash FROM event_hashes ORDER BY anchor_id, seq").fetchall():
        hashes[anchor_id].append(bytes(h))
    prev = ZERO_HASH
    for anchor_id, events, root, prev_hash, anchor_hash in conn.execute(
            "SELECT id, events, root, prev_hash, hash FROM event_anchors ORDER BY id"
    ).fetchall():
        result.anchors += 1
        members = hashes.get(anchor_id, [])
        if hashlib.sha256(b"".join(members)).digest() != bytes(root) or len(members) != events:
            result.findings.append(Finding("*", anchor_id, "anchor_mismatch",
                                           f"anchor {anchor_id}: its events' hashes changed"))
        if bytes(prev_hash) != prev or hashlib.sha256(prev + bytes(root)).digest() != \
                bytes(anchor_hash):
            result.findings.append(Finding("*", anchor_id, "anchor_mismatch",
                                           f"anchor {anchor_id}: the anchor chain is broken"))
        prev = bytes(anchor_hash)
    result.final_anchor = prev.hex()
