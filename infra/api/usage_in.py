"""`POST /v1/usage`: usage over HTTP, onto the same topic and contract as over Kafka.

One event (a JSON object) or a batch (an array), in the usage contract (docs/contracts.md) or
as CloudEvents (`application/cloudevents+json`, `application/cloudevents-batch+json`, mapped
as OpenMeter does: `subject` is the subscription, `type` the metric, `time` the moment, `data`
holds `quantity` and optionally `member`, `workspace` and `properties`).

Each event is checked before anything is published: the input checks (size, depth), the usage
contract (`parse_usage`, the codes of the dead-letter topic), and that its subscription exists
and belongs to the key's account (else `unknown_subscription`, as the ingester would say).
An id the ledger already holds, or a second time in the same request, is answered `duplicate`
and not published again. Accepted events are published on `billing.usage`, keyed and
partitioned as the engine's producers do, and acknowledged by the broker before the answer.
What depends on the subscription's state at ingest (the metric on its plan, members, a period
already closed) is still decided by the ingester, and refused there to the dead-letter topic
with the same codes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from consumers import input as record_input
from domain.contracts.usage import parse_usage
from domain.shared.errors import BillingError
from infra.api.access import Caller, Context
from infra.api.context import ApiContext
from infra.api.errors import ApiError, JsonResponse
from infra.api.keys import Principal
from infra.schemas import usage as usage_schema

router = APIRouter(tags=["usage"])

MAX_EVENTS = 10_000
ACCOUNTS_KEPT = 200_000
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
# The published usage schema (infra/schemas.py), without its document keys ($schema, $id).
EVENT_SCHEMA = {k: v for k, v in usage_schema().items() if not k.startswith("$")}
REQUEST_BODY = {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [EVENT_SCHEMA,
                                              {"type": "array", "items": EVENT_SCHEMA,
                                               "maxItems": MAX_EVENTS}]}},
    CLOUDEVENT: {"schema": {"type": "object"}},
    CLOUDEVENT_BATCH: {"schema": {"type": "array", "items": {"type": "object"}}}}}


def from_cloudevent(event: object) -> object:
    """A CloudEvent (structured mode, JSON) as a usage event; what does not fit is refused by
    the usage contract afterwards, with its code."""
    if not isinstance(event, dict):
        return event
    if event.get("specversion") != "1.0":
        raise BillingError("a CloudEvent needs \"specversion\": \"1.0\"", "invalid_cloudevent")
    data = event.get("data")
    if not isinstance(data, dict):
        raise BillingError("a CloudEvent's data must be an object holding quantity",
                           "invalid_cloudevent")
    usage = {"id": event.get("id"), "subscription": event.get("subject"),
             "metric": event.get("type"), "quantity": data.get("quantity"),
             "at": event.get("time"), "source": event.get("source")}
    for extra in ("member", "workspace", "properties"):
        if extra in data:
            usage[extra] = data[extra]
    return usage


def check_and_publish(ctx: ApiContext, who: Principal, raw_items: list[object],
                      cloudevents: bool) -> dict[str, Any]:
    max_bytes = ctx.engine.settings.max_message_bytes
    answers: list[dict[str, Any]] = []
    candidates: list[tuple[int, Any, bytes]] = []  # (index, item, as published)
    for index, raw in enumerate(raw_items):
        try:
            usage = from_cloudevent(raw) if cloudevents else raw
            item = parse_usage(usage)
            message = orjson.dumps(usage)
            if len(message) > max_bytes:
                raise BillingError(f"larger than {max_bytes} bytes", "too_large")
        except BillingError as e:
            answers.append({"index": index, "id": _id_of(raw), "status": "refused",
                            "code": e.code, "error": str(e)[:500]})
            continue
        answers.append({"index": index, "id": item.id, "status": "accepted"})
        candidates.append((index, item, message))
    owners = _accounts(ctx, sorted({item.subscription for _, item, _ in candidates}))
    seen = _already_applied(ctx, [(item.subscription, item.id) for _, item, _ in candidates])
    messages: list[tuple[bytes, bytes]] = []
    in_request: set[tuple[str, str]] = set()
    for index, item, message in candidates:
        key = (item.subscription, item.id)
        if item.subscription not in owners or not who.may_see(owners[item.subscription]):
            answers[index].update(status="refused", code="unknown_subscription",
                                  error=f"no subscription {item.subscription!r}")
        elif key in seen or key in in_request:
            answers[index]["status"] = "duplicate"
        else:
            in_request.add(key)
            messages.append((item.subscription.encode(), message))
    if messages:
        ctx.publish(ctx.engine.settings.topics.usage, messages)
    counts = {status: sum(1 for a in answers if a["status"] == status)
              for status in ("accepted", "duplicate", "refused")}
    return {**counts, "items": answers}


def _id_of(raw: object) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value[:200] if isinstance(value, str) else None


def _accounts(ctx: ApiContext, subscriptions: list[str]) -> dict[str, str]:
    """Each existing subscription's account: from its first event, then remembered (a
    subscription's account never changes)."""
    known = ctx.accounts
    missing = [s for s in subscriptions if s not in known]
    if missing:
        with ctx.pool.connection() as conn:
            rows = conn.execute(
                "SELECT originator_id, convert_from(state, 'UTF8')::jsonb ->> 'account' "
                "FROM billing_events WHERE originator_id = ANY(%s) AND originator_version = 1",
                (missing,)).fetchall()
        if len(known) + len(rows) > ACCOUNTS_KEPT:
            known.clear()
        known.update(rows)
    return {s: known[s] for s in subscriptions if s in known}


def _already_applied(ctx: ApiContext, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    with ctx.pool.connection() as conn:  # the pairs as one JSON text: arrays cost 10x more
        rows = conn.execute(
            "SELECT d.subscription_id, d.usage_id FROM usage_dedup d JOIN (SELECT k->>0 AS s, "
            "k->>1 AS u FROM json_array_elements(%s::json) AS k) AS k ON d.subscription_id = "
            "k.s AND d.usage_id = k.u", (orjson.dumps(keys).decode(),)).fetchall()
    return {(s, u) for s, u in rows}


@router.post("/v1/usage", summary="Usage events, one or a batch (also CloudEvents)",
             openapi_extra={"requestBody": REQUEST_BODY},
             responses={200: {"description": "a batch: each event accepted, duplicate or "
                                             "refused with its code"},
                        202: {"description": "one event, accepted (or a duplicate)"},
                        422: {"description": "one event, refused with its code"}})
async def post_usage(request: Request, who: Caller, ctx: Context) -> JsonResponse:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media not in ("application/json", CLOUDEVENT, CLOUDEVENT_BATCH):
        raise ApiError(415, "unsupported_media_type",
                       f"send application/json, {CLOUDEVENT} or {CLOUDEVENT_BATCH}")
    try:  # the dead-letter topic's codes: malformed_json, too_deep (a batch's array counts
        # as a level), duplicate_key (any key given twice: which value would count is unclear)
        decoded = record_input.decode_json(await request.body())
    except BillingError as e:
        raise ApiError(422, e.code, f"the body: {e}") from None
    batch = isinstance(decoded, list)
    if (batch and media == CLOUDEVENT) or (not batch and media == CLOUDEVENT_BATCH):
        raise ApiError(422, "invalid_request", f"{media} takes "
                       f"{'one event' if media == CLOUDEVENT else 'an array of events'}")
    items = decoded if batch else [decoded]
    if not items or len(items) > MAX_EVENTS:
        raise ApiError(422, "invalid_batch", f"a batch holds 1 to {MAX_EVENTS} events")
    result = await run_in_threadpool(check_and_publish, ctx, who, items,
                                     media != "application/json")
    if batch:
        return JsonResponse(result)
    item = result["items"][0]
    if item["status"] == "refused":
        return JsonResponse({"error": item["error"], "code": item["code"], "item": item},
                            status_code=422)
    return JsonResponse(item, status_code=202)
