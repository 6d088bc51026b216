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


# ------------------------------------------------------------------------------ history --

ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def history(app: Any, conn: psycopg.Connection[Any], *, subscription: str | None = None,
            account: str | None = None) -> list[dict[str, Any]]:
    """Every event (of one subscription, of an account's subscriptions, or of everything) with
    version, type, business time, recorded time and data, in recorded order."""
    from eventsourcing.persistence import StoredEvent

    where, params = "", []
    if subscription is not None:
        where, params = "WHERE originator_id = %s", [subscription]
    elif account is not None:
        where = ("WHERE originator_id IN (SELECT originator_id FROM billing_events WHERE "
                 "originator_version = 1 AND convert_from(state, 'UTF8')::jsonb ->> 'account' "
                 "= %s)")
        params = [account]
    rows = conn.execute(
        f"SELECT originator_id, originator_version, topic, state, recorded_at, notification_id "
        f"FROM billing_events {where} ORDER BY notification_id", params).fetchall()
    conn.commit()
    out = []
    for oid, version, topic, state, recorded_at, position in rows:
        event = app.mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state)))
        out.append({
            "subscription": oid, "version": version,
            "type": type(event).__qualname__.rsplit(".", 1)[-1],
            "type_version": getattr(type(event), "class_version", 1),
            "time": event.timestamp.isoformat(), "recorded_at": recorded_at.isoformat(),
            "position": position,
            "data": {k: v for k, v in vars(event).items() if k not in ENVELOPE},
        })
    return out


# -------------------------------------------------------------------------------- state --

def version_as_of(app: Any, subscription: str, at: Any) -> int:
    """The last version recorded before the first event timed after `at` (events are replayed
    in recorded order)."""
    version = 0
    for event in app.events.get(subscription):
        if event.timestamp > at:
            break
        version = event.originator_version
    return version


def state_summary(sub: Any) -> dict[str, Any]:
    used = {m: str(q) for m, q in sorted(sub.used.items())}
    return {
        "subscription": sub.id, "version": sub.version, "account": sub.account,
        "status": sub.status, "plan": sub.plan_id, "period": sub.terms["period"],
        "price": sub.terms["price"], "currency": sub.terms["currency"],
        "catalog_version": sub.terms.get("catalog_version"),
        "cycle_start": sub.cycle_start.isoformat(), "cycle_end": sub.cycle_end.isoformat(),
        "allowances": {m: {"included": a["included"], "used": used.get(m, "0"),
                           "packs": str(sub.extra.get(m, 0)), "limit": a["limit"]}
                       for m, a in sorted(sub.allowances.items())},
        "seats": sub.seats, "members": sorted(sub.members),
        "user_plans": {m: p for m, p in sorted(sub.members.items()) if p},
        "workspaces": dict(sorted(sub.workspaces.items())),
        "addons": sorted(sub.addons), "features_active": list(sub.features_active),
        "scheduled": {"plan": sub.scheduled_plan, "period": sub.scheduled_period,
                      "cancel_at": sub.cancel_at.isoformat() if sub.cancel_at else None},
        "trial_end": sub.trial_end.isoformat() if sub.trial_end else None,
        "agreement_end": sub.commitment_end.isoformat() if sub.commitment_end else None,
        "customer": dict(sub.customer),
        "draft_lines": len(sub.uninvoiced),
        "invoices": {n: i["status"] for n, i in sorted(sub.invoices.items())},
        "payment_state": sub.payment_state,
    }


# ------------------------------------------------------------------------------ explain --

RULES = {
    "plan": "plan fee for the period, charged in advance (terms copied from the catalog)",
    "seats": "extra seats: count x price per period; mid-period: x (end - t)/(end - start)",
    "addon": "add-on: monthly price x months of the period; mid-period: prorated",
    "user_plan": "user plan: monthly price x months; mid-period: prorated",
    "pack": "pack: full price at purchase",
    "overage": "overage past included + packs, priced by the allowance's (graduated) tiers",
    "proration_credit": "credit for the unused rest of the period: -price x (end - t)/(end - s)",
    "proration_charge": "charge for the rest of the period: price x (end - t)/(end - start)",
    "credit": "credit note: the invoice line negated",
}


def explain_invoice(app: Any, document: dict[str, Any]) -> dict[str, Any]:
    """Each line with the event that produced it, the catalog version in force and the rule;
    and the invoice recomputed from those events, which must equal it to the cent."""
    from domain.invoicing import build_invoice

    sid = document["subscription"]
    events = {e.originator_version: e for e in app.events.get(sid)}
    lines = []
    recompute = []
    for line in document["lines"]:
        version = line.get("source_version")
        event = events.get(version) if version is not None else None
        terms_version = None
        if version is not None:
            terms_version = app.repository.get(sid, version=version).terms.get("catalog_version")
        lines.append({**line, "event": None if event is None else {
            "subscription": sid, "version": version,
            "type": type(event).__qualname__.rsplit(".", 1)[-1],
            "time": event.timestamp.isoformat()},
            "catalog_version": terms_version, "rule": RULES.get(line["kind"], line["kind"])})
    for version in sorted({x.get("source_version") for x in document["lines"]} - {None}):
        charges = getattr(events[version], "charges", [])
        recompute += [{**c, "event_version": version} for c in charges]
    again = build_invoice(
        number=document["number"], subscription=sid, account=document["account"],
        customer={**document["buyer"]}, issuer={**document["seller"]},
        currency=document["currency"], lines=recompute,
        issued_at=_parse(document["issued_at"]), kind=document["kind"],
        references=document.get("references"))
    same = all(again[k] == document[k] for k in ("subtotal", "tax", "total", "tax_breakdown")) \
        and [x["amount"] for x in again["lines"]] == [x["amount"] for x in document["lines"]]
    return {"number": document["number"], "lines": lines,
            "recomputed": {k: again[k] for k in ("subtotal", "tax", "total")},
            "reproduced": same}


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)
