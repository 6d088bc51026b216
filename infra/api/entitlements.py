"""`GET /v1/subscriptions/{id}/entitlements/{name}?requested=N`: may this subscription use N
more units of a metric (or use a feature) now? Metrics are answered from the quota read model
in one query, with how far that model is behind the event store; features from the
subscription as stored (plan, add-ons)."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from infra.api.access import Caller, Context
from infra.api.context import ApiContext
from infra.api.errors import ApiError, JsonResponse, not_found
from projections.quota.entitlements import Freshness, decide, feature

router = APIRouter(tags=["entitlements"])

METRIC_SQL = """
SELECT q.subscription_id, q.metric, q.account, q.plan_id, q.included, q.packs, q.used,
       q.limit_kind, q.cycle_start, q.cycle_end, q.daily_cap,
       coalesce((SELECT d.quantity FROM usage_daily d WHERE d.subscription_id = q.subscription_id
                 AND d.metric = q.metric AND d.cycle_start = q.cycle_start AND d.day = %(day)s),
                0) AS used_today,
       coalesce(v.version, 0) AS projected_version,
       (SELECT max(e.originator_version) FROM billing_events e
         WHERE e.originator_id = q.subscription_id) AS stored_version,
       (SELECT e.recorded_at FROM billing_events e WHERE e.originator_id = q.subscription_id
         AND e.originator_version = v.version) AS as_of
FROM quota q
LEFT JOIN projection_versions v ON v.projection = 'quota'
     AND v.subscription_id = q.subscription_id
WHERE q.subscription_id = %(sub)s AND q.metric = %(metric)s
"""
FRESHNESS_SQL = """
SELECT coalesce((SELECT version FROM projection_versions WHERE projection = 'quota'
                 AND subscription_id = %(sub)s), 0),
       (SELECT max(originator_version) FROM billing_events WHERE originator_id = %(sub)s)
"""

MAX_REQUESTED = Decimal("1e18")


def requested_quantity(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApiError(422, "invalid_quantity", f"requested: not a number: {text!r}") from None
    if not value.is_finite() or value < 0 or value > MAX_REQUESTED:
        raise ApiError(422, "invalid_quantity",
                       "requested: a number from 0 up to 10^18") from None
    return value


@router.get("/v1/subscriptions/{subscription}/entitlements/{name}",
            summary="May this subscription use `requested` more units of a metric, or a "
                    "feature, now?")
async def entitlement(subscription: str, name: str, who: Caller, ctx: Context,
                      requested: Annotated[str, Query(max_length=40)] = "0") -> JsonResponse:
    quantity = requested_quantity(requested)
    now = ctx.clock.cached()
    if now is None:
        now = await run_in_threadpool(ctx.clock.now)
    assert ctx.apool is not None
    async with ctx.apool.connection() as conn:
        cur = await conn.execute(METRIC_SQL, {"sub": subscription, "metric": name,
                                              "day": now.astimezone(UTC).date()})
        row = await cur.fetchone()
        names = [c.name for c in cur.description or ()]
    if row is not None:
        reading: dict[str, Any] = dict(zip(names, row, strict=True))
        if not who.may_see(reading["account"]):
            raise not_found(f"subscription {subscription!r}")
        freshness = Freshness(reading["projected_version"], reading["stored_version"] or 0,
                              reading["as_of"])
        return JsonResponse(decide(reading, reading["used_today"], quantity, now, freshness))
    return await run_in_threadpool(_feature_or_unknown, ctx, who, subscription, name)


def _feature_or_unknown(ctx: ApiContext, who: Any, subscription: str, name: str
                        ) -> JsonResponse:
    sub = ctx.own_subscription(who, subscription)
    with ctx.pool.connection() as conn:
        projected, stored = conn.execute(FRESHNESS_SQL, {"sub": subscription}).fetchone() or (
            0, 0)
    freshness = Freshness(projected, stored or 0, None)
    allowances = sub.terms.get("allowances", {})
    if name in allowances:  # a metric the quota model has not projected yet
        raise ApiError(409, "not_yet_projected",
                       f"{subscription}: the quota read model has no row for {name!r} yet "
                       f"({freshness.pending_events} events pending); ask again shortly")
    catalog = ctx.engine.app.catalog
    known_features = {f for p in catalog.plans.values() for f in p.features} | {
        f for a in catalog.addons.values() for f in a.features}
    granted = _granted_by(sub, name)
    if granted is None and name not in known_features and name not in sub.features():
        raise ApiError(404, "unknown_entitlement",
                       f"{subscription} has no metric or feature {name!r}; metrics: "
                       f"{', '.join(sorted(allowances)) or 'none'}")
    return JsonResponse(feature(subscription, sub.plan_id, name, granted, freshness))


def _granted_by(sub: Any, name: str) -> str | None:
    if name in sub.terms.get("features", []):
        return "plan"
    for addon_id, addon in sorted(sub.addons.items()):
        if name in addon.get("features", []):
            return f"addon:{addon_id}"
    return None
