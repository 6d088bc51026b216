"""Auditor tools over the event store: verify the hash chains, export history, replay state."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from eventsourcing.persistence import Notification

from consumers.wire import event_message
from infra.eventstore.recorder import ZERO_HASH, content_hash, event_hash


@dataclass
class Finding:
    subscription: str  # "*" for an anchor finding
    version: int | None  # None for an anchor finding
    # edited, deleted, inserted, reordered, rewritten, chain_broken, anchor_mismatch,
    # anchor_diverged, anchor_missing, anchor_record_forged, snapshot_mismatch
    kind: str
    detail: str
    anchor: int | None = None


@dataclass
class Verification:
    events: int = 0
    streams: int = 0
    anchors: int = 0
    final_anchor: str = ""
    findings: list[Finding] = field(default_factory=list)
    external_anchors: int = 0  # anchors checked against the copy kept outside PostgreSQL
    unexported_anchors: int = 0  # anchors written after the last one of that copy
    snapshots: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings


def verify(conn: psycopg.Connection[Any], events_table: str = "billing_events") -> Verification:
    """Recompute every stream's hash chain and every batch anchor from the stored events.

    Reports, naming the stream and version: an event whose content changed (edited), an event
    missing between recorded hashes (deleted), an event with no recorded hash (inserted outside
    the engine), an event whose content is another version's (reordered), and anchors whose
    root or chain no longer matches."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return _verify(conn, events_table)
    # One snapshot for every query: a write committing between the hashes and the anchors
    # read would look like tampering.
    isolation, read_only = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        return _verify(conn, events_table)
    finally:
        conn.rollback()
        conn.isolation_level, conn.read_only = isolation, read_only


def _verify(conn: psycopg.Connection[Any], events_table: str) -> Verification:
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
    breaks: list[int] = []  # versions whose content is intact but do not chain
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
            breaks.append(version)
        prev = bytes(stored_hash)
        expected_version = version + 1
    _name_breaks(sid, breaks, result)


def _name_breaks(sid: str, breaks: list[int], result: Verification) -> None:
    """A lone break at version n, whose own content and hashes agree, means version n-1 was
    rewritten with its hashes recomputed (n was chained on the hash n-1 had): n-1 is named.
    Breaks at n and n+1 mean n's recorded hash was changed: both are named, as chained."""
    lone = {n for n in breaks if n - 1 not in breaks and n + 1 not in breaks and n > 1}
    for n in breaks:
        if n in lone:
            result.findings.append(Finding(
                sid, n - 1, "rewritten",
                f"rewritten with its hashes recomputed: version {n} was chained on another "
                "hash than the one it holds now"))
        else:
            result.findings.append(Finding(sid, n, "chain_broken",
                                           "does not follow the recorded previous event"))


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
            result.findings.append(Finding(
                "*", None, "anchor_mismatch",
                f"its events' hashes changed; it covers {covered(conn, anchor_id)}", anchor_id))
        if bytes(prev_hash) != prev or hashlib.sha256(prev + bytes(root)).digest() != \
                bytes(anchor_hash):
            result.findings.append(Finding("*", None, "anchor_mismatch",
                                           "the anchor chain is broken here", anchor_id))
        prev = bytes(anchor_hash)
    result.final_anchor = prev.hex()


def covered(conn: psycopg.Connection[Any], anchor_id: int, shown: int = 10) -> str:
    """The events an anchor covers, as `subscription vN`, the first `shown` of them."""
    rows = conn.execute("SELECT originator_id, originator_version FROM event_hashes "
                        "WHERE anchor_id = %s ORDER BY seq", (anchor_id,)).fetchall()
    names = [f"{sid} v{version}" for sid, version in rows[:shown]]
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return (", ".join(names) + more) if names else "no events"


def verify_external(conn: psycopg.Connection[Any], records: list[dict[str, Any]],
                    key: bytes | None, result: Verification) -> None:
    """Check the anchors in the database against the copy kept outside it (infra/ops/anchors.py):
    the first anchor that differs is named with the events it covers; a rewrite of events,
    hashes and anchors that is consistent inside the database shows here."""
    from infra.ops.anchors import signed_properly

    stored = {int(a): (bytes(r).hex(), bytes(h).hex()) for a, r, h in conn.execute(
        "SELECT id, root, hash FROM event_anchors").fetchall()}
    diverged = 0
    for record in records:
        anchor = int(record["anchor"])
        result.external_anchors += 1
        if key is not None and not signed_properly(record, key):
            result.findings.append(Finding("*", None, "anchor_record_forged",
                                           "the kept copy's record does not carry a valid "
                                           "HMAC under the audit key", anchor))
            continue
        here = stored.get(anchor)
        if here is None:
            result.findings.append(Finding("*", None, "anchor_missing",
                                           "an anchor of the kept copy is not in the database",
                                           anchor))
        elif here != (record["root"], record["hash"]):
            diverged += 1
            if diverged == 1:
                result.findings.append(Finding(
                    "*", None, "anchor_diverged",
                    f"the first anchor that differs from the kept copy: events rewritten "
                    f"inside it, hashes recomputed; it now covers {covered(conn, anchor)}",
                    anchor))
    if diverged > 1:
        result.findings.append(Finding("*", None, "anchor_diverged",
                                       f"{diverged - 1} later anchor(s) differ too (the chain "
                                       "was recomputed after the first)"))
    last = max((int(r["anchor"]) for r in records), default=0)
    result.unexported_anchors = sum(1 for a in stored if a > last)
    conn.commit()


def verify_snapshots(app: Any, conn: psycopg.Connection[Any], result: Verification) -> None:
    """Each snapshot against the events it summarises: the subscription replayed from its
    events alone up to the snapshot's version must give the same state. Loads start from
    snapshots, so an edited one would change what every reader sees."""
    rows = conn.execute("SELECT originator_id, originator_version, state FROM billing_snapshots "
                        "ORDER BY originator_id, originator_version").fetchall()
    conn.commit()
    by_stream: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for sid, version, state in rows:
        by_stream[str(sid)].append((int(version), bytes(state)))
    for sid, snapshots in by_stream.items():
        events = iter(app.events.get(sid))
        aggregate: Any = None
        for version, state in snapshots:
            result.snapshots += 1
            while aggregate is None or aggregate.version < version:
                event = next(events, None)
                if event is None:
                    break
                aggregate = event.mutate(aggregate)
            if aggregate is None or aggregate.version != version:
                result.findings.append(Finding(sid, version, "snapshot_mismatch",
                                               "a snapshot of a version with no events"))
                continue
            if _snapshot_state(app, state) != _snapshot_state(app, _take(app, aggregate)):
                result.findings.append(Finding(
                    sid, version, "snapshot_mismatch",
                    "the snapshot differs from the state its events replay to (loads would "
                    "start from it)"))


def _take(app: Any, aggregate: Any) -> bytes:
    snapshot = type(aggregate).Snapshot.take(aggregate)
    return bytes(app.snapshots.mapper.to_stored_event(snapshot).state)


def _snapshot_state(app: Any, state: bytes) -> Any:
    decoded = orjson.loads(state)
    decoded.pop("timestamp", None)  # when it was taken, not what it holds
    return decoded


def replay_from_events(app: Any, subscription: str, version: int | None = None) -> Any:
    """A subscription from its events alone, never from a snapshot: what auditors' tools show
    must not depend on a row they do not verify by default."""
    aggregate: Any = None
    for event in app.events.get(subscription, lte=version):
        aggregate = event.mutate(aggregate)
    return aggregate


# ------------------------------------------------------------------------------ history --

def history(app: Any, conn: psycopg.Connection[Any], *, subscription: str | None = None,
            account: str | None = None, after_version: int = 0,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Every event (of one subscription, of an account's subscriptions, or of everything) with
    version, type, business time, recorded time and data, in recorded order. One
    subscription's history comes in pages: the `limit` events after version `after_version`."""
    where, params = "", []
    if subscription is not None:
        where, params = ("WHERE originator_id = %s AND originator_version > %s",
                         [subscription, after_version])
    elif account is not None:
        where = ("WHERE originator_id IN (SELECT originator_id FROM billing_events WHERE "
                 "originator_version = 1 AND convert_from(state, 'UTF8')::jsonb ->> 'account' "
                 "= %s)")
        params = [account]
    rows = conn.execute(
        f"SELECT originator_id, originator_version, topic, state, recorded_at, notification_id "
        f"FROM billing_events {where} ORDER BY notification_id"
        + ("" if limit is None else f" LIMIT {int(limit)}"), params).fetchall()
    conn.commit()
    out = []
    for oid, version, topic, state, recorded_at, position in rows:
        message = event_message(app, Notification(id=position, originator_id=oid,
                                                  originator_version=version, topic=topic,
                                                  state=bytes(state)))
        out.append({**message, "recorded_at": recorded_at.isoformat()})
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
        "billing_day": sub.billing_day,
        "coupon": sub.coupon_now(),
        "credits": {"usable_at_cycle_end": str(sub.credit_balance(sub.cycle_end)),
                    "grants": sub.credit_grants_now(),
                    "auto_top_up": getattr(sub, "auto_top_up", None)},
        "unit_credits": sub.unit_grants_now(),
        "custom_prices": sub.terms.get("overrides"),
        "pause_at": _iso(sub.pause_scheduled_at()),
        "terminated_at": _iso(getattr(sub, "terminated_at", None)),
        "refund_due": sub.refund_due_now(),
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# ------------------------------------------------------------------------------ explain --

RULES = {
    "plan": "plan fee for the period, charged in advance (terms copied from the catalog)",
    "seats": "extra seats: count x price per period (per month x months, or per week on a "
             "weekly plan); mid-period: x (end - t)/(end - start)",
    "addon": "add-on: monthly price x months of the period; mid-period: prorated",
    "user_plan": "user plan: monthly price x months; mid-period: prorated",
    "pack": "pack: full price at purchase (a pack that lasts: its units are a unit-credit "
            "grant, drawn across cycles until it expires)",
    "overage": "overage past included + packs + unit credits drawn (UnitsDrawn) of the "
               "measured amount (a sum, or the "
               "allowance's aggregation: events, peak, distinct values, last reading, level "
               "by time held), priced by the allowance's charge model (per unit, graduated or "
               "volume tiers with flat fees, started packages, a percentage of each event's "
               "amount within per-event bounds)",
    "proration_credit": "credit for the unused rest of the period: -price x (end - t)/(end - s)",
    "proration_charge": "charge for the rest of the period: price x (end - t)/(end - start)",
    "credit": "credit note: the invoice line negated",
    "discount": "coupon: percent_off x (the plan fee lines, or every line of the invoice), or "
                "amount_off capped at it; on invoices that charge a period's plan fee",
    "true_up": "minimum spend of an allowance per period, less its usage charges; prorated "
               "by (end - start) / (a full period) when the cycle was cut short",
}


def explain_invoice(app: Any, document: dict[str, Any]) -> dict[str, Any]:
    """Each line with the event that produced it, the catalog version in force and the rule;
    and the invoice recomputed from those events, which must equal it to the cent."""
    from domain.billing.discounts import discount_lines
    from domain.billing.invoice_document import build_invoice

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
    issued = [v for v, e in events.items() if type(e).__qualname__.endswith("InvoiceIssued")
              and e.document["number"] == document["number"]]
    if issued:  # the coupon as it stood when the invoice was issued
        coupon = app.repository.get(sid, version=issued[0] - 1).coupon_now()
        recompute += discount_lines(coupon, recompute)
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
