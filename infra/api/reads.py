"""The read routes: a subscription's state (now or `?as_of=`), its credit monitor, invoices
(JSON, HTML, PDF), the plan recommendation with what-if costs, the event history in pages, and
the catalog. Each is what the matching `billing` command shows (docs/cli.md), from the same
read models and the same functions; a tenant key sees its own account's only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from infra.api.access import Caller, Context
from infra.api.context import ApiContext
from infra.api.errors import ApiError, JsonResponse, not_found
from infra.api.keys import Principal

router = APIRouter(tags=["reads"])
HISTORY_PAGE = 100


def state(ctx: ApiContext, who: Principal, sid: str, as_of: datetime | None) -> dict[str, Any]:
    from infra.ops.audit import replay_from_events, state_summary, version_as_of

    current = ctx.own_subscription(who, sid)
    if as_of is None:
        return state_summary(current)
    with ctx.app_lock:
        version = version_as_of(ctx.engine.app, sid, as_of)
        if version == 0:
            raise ApiError(404, "not_found", f"{sid} did not exist at {as_of.isoformat()}")
        return state_summary(replay_from_events(ctx.engine.app, sid, version))


def monitor(ctx: ApiContext, who: Principal, sid: str) -> dict[str, Any]:
    from projections.quota import monitor as credit_monitor

    with ctx.pool.connection() as conn:
        readings = credit_monitor.read(conn, sid)
    if readings is None or not who.may_see(readings.rows[0]["account"]):
        raise not_found(f"quota rows for {sid!r}")
    return credit_monitor.view(readings, ctx.clock.now())


def invoice_list(ctx: ApiContext, who: Principal, sid: str) -> list[dict[str, Any]]:
    from projections.invoices import store as invoices

    ctx.own_subscription(who, sid)
    with ctx.pool.connection() as conn:
        return invoices.list_invoices(conn, sid)


def invoice(ctx: ApiContext, who: Principal, number: str) -> dict[str, Any]:
    from projections.invoices import store as invoices

    with ctx.pool.connection() as conn:
        document = invoices.read_invoice(conn, number)
    if document is None or not who.may_see(document.get("account")):
        raise not_found(f"invoice {number!r}")
    return document


def account_invoice_list(ctx: ApiContext, who: Principal, account: str) -> dict[str, Any]:
    from projections.invoices import store as invoices
    from projections.invoices.accounts import account_invoices

    if not who.may_see(account):
        raise not_found(f"account {account!r}")
    with ctx.pool.connection() as conn:
        documents = invoices.account_documents(conn, account)
    return {"account": account, "invoices": account_invoices(account, documents)}


def recommendation(ctx: ApiContext, who: Principal, sid: str) -> dict[str, Any]:
    from projections.recommendations.model import recommend
    from projections.recommendations.store import read_inputs

    ctx.own_subscription(who, sid)
    with ctx.pool.connection() as conn:
        inputs = read_inputs(conn, sid)
    if inputs is None:
        raise not_found(f"recommendation inputs for {sid!r}")
    return {"subscription": sid, **recommend(inputs, ctx.engine.app.catalog, ctx.clock.now())}


def history_page(ctx: ApiContext, who: Principal, sid: str, after: int,
                 limit: int) -> dict[str, Any]:
    from infra.ops.audit import history

    ctx.own_subscription(who, sid)
    with ctx.pool.connection() as conn, ctx.app_lock:
        events = history(ctx.engine.app, conn, subscription=sid, after_version=after,
                         limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return {"subscription": sid, "events": events,
            "next": (f"/v1/subscriptions/{sid}/history?after={events[-1]['version']}"
                     f"&limit={limit}") if more else None}


def catalog_view(ctx: ApiContext) -> dict[str, Any]:
    from infra.render.terminal import catalog_view as view

    return view(ctx.engine.app.catalog)


@router.get("/v1/subscriptions/{subscription}", summary="A subscription's state, now or as of "
            "a past moment (replayed from its events)")
async def get_subscription(subscription: str, who: Caller, ctx: Context,
                           as_of: datetime | None = None) -> JsonResponse:
    if as_of is not None and as_of.tzinfo is None:
        raise ApiError(422, "invalid_timestamp", "as_of needs an offset, e.g. ...T00:00:00Z")
    return JsonResponse(await run_in_threadpool(state, ctx, who, subscription, as_of))


@router.get("/v1/subscriptions/{subscription}/monitor",
            summary="The credit monitor: this cycle's quota, today, per day, per member")
async def get_monitor(subscription: str, who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(monitor, ctx, who, subscription))


@router.get("/v1/subscriptions/{subscription}/invoices", summary="A subscription's invoices")
async def get_invoices(subscription: str, who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(invoice_list, ctx, who, subscription))


@router.get("/v1/accounts/{account}/invoices",
            summary="An account's invoices grouped per issue date and currency (a view of the "
                    "numbered per-subscription invoices)")
async def get_account_invoices(account: str, who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(account_invoice_list, ctx, who, account))


@router.get("/v1/invoices/{number}", summary="An invoice as a document (JSON)")
async def get_invoice(number: str, who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(invoice, ctx, who, number))


@router.get("/v1/invoices/{number}/html", summary="An invoice's web view",
            response_class=HTMLResponse)
async def get_invoice_html(number: str, who: Caller, ctx: Context) -> HTMLResponse:
    from infra.render.invoice import invoice_html

    document = await run_in_threadpool(invoice, ctx, who, number)
    return HTMLResponse(invoice_html(document))


@router.get("/v1/invoices/{number}/pdf", summary="An invoice as PDF",
            responses={200: {"content": {"application/pdf": {}}}})
async def get_invoice_pdf(number: str, who: Caller, ctx: Context) -> Response:
    from infra.render.invoice import invoice_pdf

    document = await run_in_threadpool(invoice, ctx, who, number)
    pdf = await run_in_threadpool(invoice_pdf, document)
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="invoice-{document["number"]}.pdf"'})


@router.get("/v1/subscriptions/{subscription}/recommendation",
            summary="The plan that fits, why, and what the last cycle would have cost on each")
async def get_recommendation(subscription: str, who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(recommendation, ctx, who, subscription))


@router.get("/v1/subscriptions/{subscription}/history",
            summary="The subscription's events in recorded order, a page at a time")
async def get_history(subscription: str, who: Caller, ctx: Context,
                      after: Annotated[int, Query(ge=0)] = 0,
                      limit: Annotated[int, Query(ge=1, le=1000)] = HISTORY_PAGE
                      ) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(history_page, ctx, who, subscription, after,
                                                limit))


@router.get("/v1/catalog", summary="The catalog in force (plans, packs, add-ons, user plans)")
async def get_catalog(who: Caller, ctx: Context) -> JsonResponse:
    return JsonResponse(catalog_view(ctx))
