"""`GET /v1/subscriptions/{id}/entitlements/{name}?requested=N`: may this subscription use N
more units of a metric (or use a feature) now? Metrics are answered from the quota read model
in one query, with how far that model is behind the event store; features from the
subscription as stored (plan, add-ons)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from domain.contracts.usage import MAX_TEXT
from infra.api.access import context_of, known_principal, principal_of
from infra.api.context import ApiContext
from infra.api.errors import ApiError, JsonResponse, error_body, not_found
from infra.api.keys import Principal
from projections.quota.entitlements import Freshness, decide, feature

log = logging.getLogger(__name__)
router = APIRouter(tags=["entitlements"])

READING = """q.subscription_id, q.metric, q.account, q.plan_id, q.included, q.packs, q.used,
       q.limit_kind, q.cycle_start, q.cycle_end, q.daily_cap, q.group_by, q.credits,
       coalesce((SELECT d.quantity FROM usage_daily d WHERE d.subscription_id = q.subscription_id
                 AND d.metric = q.metric AND d.cycle_start = q.cycle_start AND d.day = {day}),
                0) AS used_today,
       coalesce(v.version, 0) AS projected_version,
       (SELECT max(e.originator_version) FROM billing_events e
         WHERE e.originator_id = q.subscription_id) AS stored_version,
       (SELECT e.recorded_at FROM billing_events e WHERE e.originator_id = q.subscription_id
         AND e.originator_version = v.version) AS as_of"""
VERSIONS = """LEFT JOIN projection_versions v ON v.projection = 'quota'
     AND v.subscription_id = q.subscription_id"""
METRIC_SQL = f"""SELECT {READING.format(day="%(day)s")}
FROM quota q {VERSIONS}
WHERE q.subscription_id = %(sub)s AND q.metric = %(metric)s"""
# The same readings for many keys at once (the cache's refresh), each row ending with its day.
READINGS_SQL = f"""SELECT {READING.format(day="k.day")}, k.day
FROM unnest(%(subs)s::text[], %(metrics)s::text[], %(days)s::date[]) AS k(sub, metric, day)
JOIN quota q ON q.subscription_id = k.sub AND q.metric = k.metric {VERSIONS}"""
FRESHNESS_SQL = """
SELECT coalesce((SELECT version FROM projection_versions WHERE projection = 'quota'
                 AND subscription_id = %(sub)s), 0),
       (SELECT max(originator_version) FROM billing_events WHERE originator_id = %(sub)s)
"""

MAX_REQUESTED = Decimal("1e18")


def requested_quantity(text: str) -> Decimal:
    if len(text) > 40:
        raise ApiError(422, "invalid_quantity", "requested: at most 40 characters")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApiError(422, "invalid_quantity", f"requested: not a number: {text!r}") from None
    if not value.is_finite() or value < 0 or value > MAX_REQUESTED:
        raise ApiError(422, "invalid_quantity",
                       "requested: a number from 0 up to 10^18") from None
    return value


# The OpenAPI description of the route, whose parameters the handler reads itself.
PARAMETERS = [
    {"name": "subscription", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "a metric of the plan, or a feature"},
    {"name": "requested", "in": "query", "required": False,
     "schema": {"type": "string", "default": "0", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
     "description": "units about to be used (metrics; default 0)"},
    {"name": "member", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "features: also those this member's user plans bring"},
    {"name": "group", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "grouped charges (required for them): the value of the charge's "
                    "`group_by` dimension asked about, e.g. a workspace; empty for usage "
                    "without it"}]
METRIC_COLUMNS = ("subscription_id", "metric", "account", "plan_id", "included", "packs",
                  "used", "limit_kind", "cycle_start", "cycle_end", "daily_cap", "group_by",
                  "credits", "used_today",
                  "projected_version", "stored_version", "as_of")
PROJECTED, STORED = METRIC_COLUMNS.index("projected_version"), METRIC_COLUMNS.index(
    "stored_version")
ACCOUNT = METRIC_COLUMNS.index("account")
RENDERED_KEPT = 100_000


async def check(ctx: ApiContext, authorization: str, subscription: str, name: str,
                requested: str, member: str | None = None,
                group: str | None = None) -> dict[str, Any]:
    """The answer to one entitlement question, for the route and for the fast path."""
    who = await principal_of(ctx, authorization)
    quantity = requested_quantity(requested)
    now = ctx.clock.cached()
    if now is None:
        now = await run_in_threadpool(ctx.clock.now)
    if group is not None:
        return await _check_group(ctx, who, subscription, name, quantity, now, group)
    key = (subscription, name, now.astimezone(UTC).date())
    cache = ctx.entitlements
    kept = cache.get(key, PROJECTED)
    if kept is not None:
        row, checked_at = kept
    else:
        row, checked_at = None, datetime.now(UTC)
        cache.asking(subscription)
        try:
            assert ctx.apool is not None
            async with ctx.apool.connection() as conn:
                cur = await conn.execute(METRIC_SQL, {"sub": subscription, "metric": name,
                                                      "day": key[2]})
                row = await cur.fetchone()
        finally:
            cache.answered(key, row, (row[STORED] or 0) if row is not None else 0,
                           checked_at)
    if row is not None:
        return _decided(ctx, who, subscription, row, checked_at, quantity, now)
    return await run_in_threadpool(_feature_or_unknown, ctx, who, subscription, name, member)


def refresh_kept(ctx: ApiContext) -> None:
    """Read again, in one query, the kept readings about to expire or shown to be behind
    (`EntitlementCache.due`); the cache's follower calls this ten times a second."""
    cache = ctx.entitlements
    due = cache.due(PROJECTED)
    if not due:
        return
    for key in due:
        cache.asking(key[0])
    taken_at, found = datetime.now(UTC), {}
    try:
        with ctx.pool.connection() as conn:
            for *row, day in conn.execute(READINGS_SQL, {
                    "subs": [k[0] for k in due], "metrics": [k[1] for k in due],
                    "days": [k[2] for k in due]}):
                found[(row[0], row[1], day)] = tuple(row)
    finally:
        for key in due:
            row = found.get(key)
            cache.answered(key, row, (row[STORED] or 0) if row is not None else 0, taken_at)


# A rendered answer: (the reading it came from, the newest version seen then, the body).
Rendered = dict[tuple[str, str, Any, str], tuple[tuple[Any, ...], int, bytes]]


def kept_body(ctx: ApiContext, rendered: Rendered, authorization: str, subscription: str,
              name: str, requested: str) -> bytes | None:
    """The body of `check`'s answer from memory alone (a key seen in the last seconds, a kept
    reading, the clock read in the last second), or None where `check` must do I/O or
    refuse: uvicorn's protocol answers these before the app (infra/api/uvicorn_internals.py).
    A body is rendered again only when its reading or the newest version seen changed: the
    rendering was a fifth of an answer's CPU, and upstream services ask the same question
    many times between two changes."""
    now = ctx.clock.cached()
    try:
        who = known_principal(ctx, authorization)[1]
        if who is None or now is None:
            return None
        cache = ctx.entitlements
        day = now.astimezone(UTC).date()
        kept = cache.get((subscription, name, day), PROJECTED, count=False)
        if kept is None or not who.may_see(kept[0][ACCOUNT]):
            return None
        newest = cache.newest(subscription)
        asked = (subscription, name, day, requested)
        earlier = rendered.get(asked)
        if earlier is not None and earlier[0] is kept[0] and earlier[1] == newest:
            body = earlier[2]
        else:
            body = orjson.dumps(_decided(ctx, who, subscription, *kept,
                                         requested_quantity(requested), now), default=str)
            if len(rendered) >= RENDERED_KEPT:
                rendered.clear()
            rendered[asked] = (kept[0], newest, body)
    except ApiError:
        return None
    cache.hits += 1
    return body


async def _check_group(ctx: ApiContext, who: Principal, subscription: str, name: str,
                       quantity: Decimal, now: datetime, group: str) -> dict[str, Any]:
    """A grouped charge's question about one group: its own `included` against its own use
    (read each time: groups are many, and not kept)."""
    if len(group) > MAX_TEXT or "\x00" in group:
        raise ApiError(422, "invalid_group", f"group: at most {MAX_TEXT} characters, no NUL")
    checked_at = datetime.now(UTC)
    assert ctx.apool is not None
    async with ctx.apool.connection() as conn:
        cur = await conn.execute(METRIC_SQL, {"sub": subscription, "metric": name,
                                              "day": now.astimezone(UTC).date()})
        row = await cur.fetchone()
        if row is None:  # not projected yet, a feature, or unknown: answered as without group
            return await run_in_threadpool(_feature_or_unknown, ctx, who, subscription, name)
        reading = dict(zip(METRIC_COLUMNS, row, strict=True))
        if not who.may_see(reading["account"]):
            raise not_found(f"subscription {subscription!r}")
        if reading["group_by"] is None:
            raise ApiError(422, "not_grouped", f"{name} is not a grouped charge: ask "
                                               f"without ?group=")
        cur = await conn.execute(GROUP_SQL, {"sub": subscription, "metric": name,
                                             "cycle": reading["cycle_start"], "group": group})
        used = await cur.fetchone()
    return _decided(ctx, who, subscription, row, checked_at, quantity, now,
                    (group, Decimal(0) if used is None else used[0]))


GROUP_SQL = """SELECT quantity FROM usage_by_group WHERE subscription_id = %(sub)s
AND metric = %(metric)s AND cycle_start = %(cycle)s AND grp = %(group)s"""


def _decided(ctx: ApiContext, who: Principal, subscription: str, row: tuple[Any, ...],
             checked_at: datetime, quantity: Decimal, now: datetime,
             group: tuple[str, Decimal] | None = None) -> dict[str, Any]:
    reading: dict[str, Any] = dict(zip(METRIC_COLUMNS, row, strict=True))
    if not who.may_see(reading["account"]):
        raise not_found(f"subscription {subscription!r}")
    grouped_by = reading["group_by"]
    if grouped_by is not None and group is None:
        raise ApiError(422, "group_required",
                       f"{reading['metric']} is priced per {grouped_by}, each with its own "
                       f"allowance: ask with ?group=<{grouped_by}>")
    if group is not None:
        reading["used"] = group[1]
    freshness = Freshness(reading["projected_version"],
                          max(reading["stored_version"] or 0,
                              ctx.entitlements.newest(subscription)),
                          reading["as_of"], checked_at)
    answer = decide(reading, reading["used_today"], quantity, now, freshness)
    if group is not None:
        answer.update(group_by=grouped_by, group=group[0])
    return answer


@router.get("/v1/subscriptions/{subscription}/entitlements/{name}",
            summary="May this subscription use `requested` more units of a metric, or a "
                    "feature, now?",
            openapi_extra={"parameters": PARAMETERS, "security": [{"HTTPBearer": []}]})
async def entitlement(request: Request) -> JsonResponse:
    """Served by `EntitlementFastPath` in front of the framework; this route documents it
    (and answers where the app runs without the fast path)."""
    return JsonResponse(await check(
        context_of(request), request.headers.get("authorization", ""),
        request.path_params["subscription"], request.path_params["name"],
        request.query_params.get("requested", "0"), request.query_params.get("member"),
        request.query_params.get("group")))


def is_check(scope: Any) -> bool:
    """GET /v1/subscriptions/S/entitlements/N."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    parts = scope["path"].split("/")
    return (len(parts) == 6 and parts[1] == "v1" and parts[2] == "subscriptions"
            and parts[4] == "entitlements" and bool(parts[3]) and bool(parts[5]))


class EntitlementFastPath:
    """GET /v1/subscriptions/S/entitlements/N answered before the framework: FastAPI's
    routing, dependency solving and middleware stack cost about 0.35 ms of CPU per request,
    more than the query (measured in-process; bench/api.py has the figures), and 2,000 checks
    a second must leave CPU to the workers on the same machine. Everything else goes on."""

    def __init__(self, app: Any, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx
        self._rendered: Rendered = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if is_check(scope):
            parts = scope["path"].split("/")
            await self._answer(scope, parts[3], parts[5], send)
            return
        await self.app(scope, receive, send)

    def answer_kept(self, subscription: str, name: str, requested: str,
                    authorization: str) -> bytes | None:
        """For uvicorn's protocol (infra/api/uvicorn_internals.py): a 200 body from memory."""
        return kept_body(self.ctx, self._rendered, authorization, subscription, name,
                         requested)

    async def _answer(self, scope: Any, subscription: str, name: str, send: Any) -> None:
        authorization = ""
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
        requested, member, group = "0", None, None
        if scope["query_string"]:
            from urllib.parse import parse_qsl

            query = dict(parse_qsl(scope["query_string"].decode("latin-1"),
                                   keep_blank_values=True))
            requested, member = query.get("requested") or "0", query.get("member")
            group = query.get("group")
        headers: list[tuple[bytes, bytes]] = []
        try:
            body, status = await check(self.ctx, authorization, subscription, name,
                                       requested, member, group), 200
        except ApiError as e:
            body, status = error_body(e.code, e.message), e.status
            if status == 401:
                headers.append((b"www-authenticate", b"Bearer"))
        except Exception:
            log.exception("entitlement check failed")
            body, status = error_body("internal", "the check failed; see the API's log"), 500
        payload = orjson.dumps(body, default=str)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": payload})


def _feature_or_unknown(ctx: ApiContext, who: Any, subscription: str, name: str,
                        member: str | None = None) -> dict[str, Any]:
    sub = ctx.own_subscription(who, subscription)
    with ctx.pool.connection() as conn:
        projected, stored = conn.execute(FRESHNESS_SQL, {"sub": subscription}).fetchone() or (
            0, 0)
    freshness = Freshness(projected, stored or 0, None, datetime.now(UTC))
    allowances = sub.terms.get("allowances", {})
    if name in allowances:  # a metric the quota model has not projected yet
        raise ApiError(409, "not_yet_projected",
                       f"{subscription}: the quota read model has no row for {name!r} yet "
                       f"({freshness.pending_events} events pending); ask again shortly")
    catalog = ctx.engine.app.catalog
    known_features = {f for p in catalog.plans.values() for f in p.features} | {
        f for a in catalog.addons.values() for f in a.features} | {
        f for levels in catalog.user_plan_features.values() for fs in levels.values()
        for f in fs}
    granted = _granted_by(sub, name, member)
    if granted is None and name not in known_features and name not in sub.features():
        raise ApiError(404, "unknown_entitlement",
                       f"{subscription} has no metric or feature {name!r}; metrics: "
                       f"{', '.join(sorted(allowances)) or 'none'}")
    return feature(subscription, sub.plan_id, name, granted, freshness)


def _granted_by(sub: Any, name: str, member: str | None) -> str | None:
    """What gives the subscription (or, with `member`, that member) the feature: the plan, an
    add-on, or the member's user plan (`user_plan:sales-premium`)."""
    if name in sub.terms.get("features", []):
        return "plan"
    for addon_id, addon in sorted(sub.addons.items()):
        if name in addon.get("features", []):
            return f"addon:{addon_id}"
    if member is not None:
        granted: str | None = sub.member_features(member).get(name)
        return granted
    return None
