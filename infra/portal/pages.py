"""The customer portal: server-rendered pages (Jinja2) for the holder of a signed link, in the
spirit of a hosted customer portal: the plan and the plans to move to (recommendation, what
the last cycle would have cost on each, the prorated charge before confirming), invoices (web
view, PDF), the credit monitor (updating live), seats, members, workspaces and user plans, and
cancelling. It reads what the API reads and acts by publishing the same commands; JavaScript
only where the page updates itself (portal.js)."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from domain.contracts.commands import Command, parse_command
from domain.shared.errors import InvalidCommand
from infra.api.context import ApiContext
from infra.api.errors import ApiError
from infra.api.keys import Principal
from infra.api.stream import admit_stream, monitor_events, sse
from infra.portal import links

HERE = Path(__file__).parent
# Starlette's environment escapes every .html template (select_autoescape).
templates = Jinja2Templates(directory=HERE / "templates")
# Each form a page renders carries an id of its own (`{{ command_id() }}`), from which the
# command it sends takes its id, with what the form says: the same form sent twice with the
# same inputs (a double click, the browser's back and send again) sends one command twice,
# which the engine applies once and then answers "duplicate"; changed inputs make another
# command. Buying credits twice takes two forms, or two amounts.
templates.env.globals["command_id"] = lambda: f"portal-{uuid.uuid4().hex}"
FORM_COMMAND_ID = re.compile(r"portal-[0-9a-f]{32}")
router = APIRouter(prefix="/portal", include_in_schema=False)
COOKIE = "billing_portal"


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


def _keys(ctx: ApiContext) -> list[bytes]:
    with ctx.pool.connection() as conn:
        return links.secrets_of(conn)


async def visitor(request: Request) -> links.Visitor:
    token = request.cookies.get(COOKIE, "")
    found = links.verify(await run_in_threadpool(_keys, _ctx(request)), token,
                         datetime.now(UTC)) if token else None
    if found is None:
        raise ApiError(401, "portal_link_expired",
                       "this portal link is invalid or has expired: ask for a new one")
    return found


def _as_tenant(ctx: ApiContext, who: links.Visitor) -> tuple[Any, Principal]:
    """The visitor's subscription, and a principal for its account (the API's reads)."""
    sub = ctx.subscriptions([who.subscription]).get(who.subscription)
    if sub is None:
        raise ApiError(404, "not_found", "this subscription no longer exists")
    return sub, Principal(key_id="portal", account=sub.account, admin=False)


def _page(request: Request, name: str, **values: Any) -> HTMLResponse:
    response: HTMLResponse = templates.TemplateResponse(request, name, values)
    return response


@router.get("/enter")
async def enter(request: Request, token: str = "") -> Response:
    keys = await run_in_threadpool(_keys, _ctx(request))
    found = links.verify(keys, token, datetime.now(UTC))
    if found is None:
        return _page(request, "expired.html")
    response = RedirectResponse("/portal", status_code=303)
    response.set_cookie(COOKIE, token, max_age=max(found.expires - int(
        datetime.now(UTC).timestamp()), 1), httponly=True, samesite="strict", path="/portal")
    return response


def _overview(ctx: ApiContext, who: links.Visitor) -> dict[str, Any]:
    from infra.api.reads import recommendation
    from infra.ops.audit import state_summary
    from infra.render.terminal import catalog_view

    sub, tenant = _as_tenant(ctx, who)
    state = state_summary(sub)
    try:
        advice = recommendation(ctx, tenant, who.subscription)
    except ApiError:
        advice = None
    costs = {w["plan"]: w for w in (advice or {}).get("what_if", [])}
    period = state["period"]
    scheduled = state["scheduled"]["plan"]  # {"plan_id", "keep_workspace"} or None
    scheduled_plan = scheduled.get("plan_id") if isinstance(scheduled, dict) else scheduled
    plans = []
    catalog = ctx.engine.app.catalog
    now, country = ctx.clock.now(), sub.customer.get("country")
    for plan in catalog_view(catalog)["plans"]:
        if plan["id"] != state["plan"] and not catalog.plan(plan["id"]).offered(now, country):
            continue  # not for sale to this customer now (availability, country, window)
        plans.append({**plan, "period_price": plan["prices"].get(period),
                      "current": plan["id"] == state["plan"],
                      "scheduled": plan["id"] == scheduled_plan,
                      "recommended": advice is not None
                      and advice["recommended_plan"] == plan["id"]
                      and plan["id"] != state["plan"],
                      "last_cycle_cost": costs.get(plan["id"])})
    return {"state": state, "plans": plans, "advice": advice, "scheduled_plan": scheduled_plan,
            "plan_name": sub.terms.get("plan_name", state["plan"]),
            "features": sub.features()}


@router.get("", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    who = await visitor(request)
    values = await run_in_threadpool(_overview, _ctx(request), who)
    return _page(request, "overview.html", tab="plan", **values)


def _preview_change(ctx: ApiContext, who: links.Visitor, plan: str) -> dict[str, Any]:
    sub, _ = _as_tenant(ctx, who)
    if plan not in ctx.engine.app.catalog.plans:
        raise ApiError(404, "unknown_plan", f"no plan {plan!r}")
    now = ctx.clock.now()
    preview = ctx.preview(Command("preview", "change_plan", who.subscription, now,
                                  {"plan": plan}))
    preview.pop("state", None)
    return {"plan": ctx.engine.app.catalog.plans[plan], "preview": preview,
            "current": sub.plan_id, "cycle_end": sub.cycle_end, "now": now}


@router.get("/plans/{plan}", response_class=HTMLResponse)
async def change_plan_page(plan: str, request: Request) -> HTMLResponse:
    who = await visitor(request)
    values = await run_in_threadpool(_preview_change, _ctx(request), who, plan)
    return _page(request, "change_plan.html", tab="plan", **values)


def _publish(ctx: ApiContext, who: links.Visitor, kind: str, form_id: str | None,
             **fields: Any) -> str:
    _as_tenant(ctx, who)
    raw = _raw_command(ctx, who, kind, fields, form_id)
    ctx.publish(ctx.engine.settings.topics.commands,
                [(who.subscription.encode(), orjson.dumps(raw))])
    return str(raw["id"])


def _raw_command(ctx: ApiContext, who: links.Visitor, kind: str,
                 fields: dict[str, Any], form_id: str | None = None) -> dict[str, Any]:
    """The command a form sends, its id made from the form's id and what it says (a form
    without an id, or with one not of a page's making, gets a new one)."""
    return {"id": _command_id(form_id, kind, fields), "type": kind,
            "subscription": who.subscription, "at": ctx.clock.now().isoformat(), **fields}


def _command_id(form_id: str | None, kind: str, fields: dict[str, Any]) -> str:
    if form_id is None or not FORM_COMMAND_ID.fullmatch(form_id):
        return f"portal-{uuid.uuid4().hex}"
    said = orjson.dumps([form_id, kind, fields], option=orjson.OPT_SORT_KEYS)
    return f"portal-{hashlib.sha256(said).hexdigest()[:32]}"


def _form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("utf-8", "replace"))


def _form_id(form: dict[str, list[str]]) -> str | None:
    return form.get("command_id", [None])[0]


def _publish_if_allowed(ctx: ApiContext, who: links.Visitor, kind: str,
                        fields: dict[str, Any], form_id: str | None
                        ) -> tuple[str | None, str | None]:
    """Publish a command the form filled in, if it parses and its preview allows it:
    (command id, None), else (None, why not) for the page to show beside the form. What
    changes between the preview and the worker is still refused there, and shown by the
    command's page."""
    _, tenant = _as_tenant(ctx, who)
    raw = _raw_command(ctx, who, kind, fields, form_id)
    if form_id is not None and _outcome(ctx, who, raw["id"], tenant)["status"] != "pending":
        # This form, with these inputs, was sent and applied (or refused) already: its page
        # says so. Previewed again it would be refused for what it did itself ("a coupon is
        # active", "not paused").
        return str(raw["id"]), None
    try:
        command = parse_command(raw)
    except InvalidCommand as e:
        return None, f"{e} ({e.code})"
    preview = ctx.preview(command)
    if not preview["allowed"]:
        return None, f"{preview['reason']} ({preview['code']})"
    ctx.publish(ctx.engine.settings.topics.commands,
                [(who.subscription.encode(), orjson.dumps(raw))])
    return str(raw["id"]), None


@router.post("/plans/{plan}")
async def change_plan(plan: str, request: Request) -> RedirectResponse:
    who = await visitor(request)
    form = _form(await request.body())
    command_id = await run_in_threadpool(_publish, _ctx(request), who, "change_plan",
                                         _form_id(form), plan=plan)
    return RedirectResponse(f"/portal/commands/{command_id}", status_code=303)


def _outcome(ctx: ApiContext, who: links.Visitor, command_id: str,
             tenant: Principal | None = None) -> dict[str, Any]:
    """The command's outcome, or pending; `tenant` when the caller has it already."""
    from infra.api.commands import outcome_of

    if tenant is None:
        _, tenant = _as_tenant(ctx, who)
    try:
        return outcome_of(ctx, tenant, command_id, who.subscription)
    except ApiError as e:
        if e.code == "no_outcome":
            return {"id": command_id, "status": "pending"}
        raise


@router.get("/commands/{command_id}", response_class=HTMLResponse)
async def command_page(command_id: str, request: Request) -> HTMLResponse:
    who = await visitor(request)
    outcome = await run_in_threadpool(_outcome, _ctx(request), who, command_id)
    return _page(request, "command.html", tab="plan", outcome=outcome)


@router.get("/commands/{command_id}/status")
async def command_json(command_id: str, request: Request) -> Response:
    who = await visitor(request)
    outcome = await run_in_threadpool(_outcome, _ctx(request), who, command_id)
    return Response(orjson.dumps(outcome), media_type="application/json")


def _invoices(ctx: ApiContext, who: links.Visitor) -> list[dict[str, Any]]:
    from infra.api.reads import invoice_list

    _, tenant = _as_tenant(ctx, who)
    return list(reversed(invoice_list(ctx, tenant, who.subscription)))


@router.get("/invoices", response_class=HTMLResponse)
async def invoices(request: Request) -> HTMLResponse:
    who = await visitor(request)
    rows = await run_in_threadpool(_invoices, _ctx(request), who)
    return _page(request, "invoices.html", tab="invoices", invoices=rows)


def _invoice(ctx: ApiContext, who: links.Visitor, number: str) -> dict[str, Any]:
    from infra.api.reads import invoice

    _, tenant = _as_tenant(ctx, who)
    document = invoice(ctx, tenant, number)
    if document["subscription"] != who.subscription:
        raise ApiError(404, "not_found", f"invoice {number!r} not found")
    return document


@router.get("/invoices/{number}.pdf")
async def invoice_pdf(number: str, request: Request) -> Response:
    from infra.render.invoice import invoice_pdf as render

    who = await visitor(request)
    document = await run_in_threadpool(_invoice, _ctx(request), who, number)
    pdf = await run_in_threadpool(render, document)
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="invoice-{number}.pdf"'})


@router.get("/invoices/{number}", response_class=HTMLResponse)
async def invoice_page(number: str, request: Request) -> HTMLResponse:
    from infra.render.invoice import invoice_html

    who = await visitor(request)
    document = await run_in_threadpool(_invoice, _ctx(request), who, number)
    return HTMLResponse(invoice_html(document))


def _usage(ctx: ApiContext, who: links.Visitor) -> dict[str, Any] | None:
    from infra.api.reads import monitor

    _, tenant = _as_tenant(ctx, who)
    try:
        return monitor(ctx, tenant, who.subscription)
    except ApiError:
        return None


@router.get("/usage", response_class=HTMLResponse)
async def usage(request: Request) -> HTMLResponse:
    who = await visitor(request)
    view = await run_in_threadpool(_usage, _ctx(request), who)
    return _page(request, "usage.html", tab="usage", monitor=view)


@router.get("/usage/stream")
async def usage_stream(request: Request) -> StreamingResponse:
    from infra.api.reads import monitor

    who = await visitor(request)
    ctx = _ctx(request)
    _, tenant = await run_in_threadpool(_as_tenant, ctx, who)

    def read() -> dict[str, Any]:
        return monitor(ctx, tenant, who.subscription)
    admit_stream()
    return sse(monitor_events(request, ctx, read, who.subscription))


@router.get("/team", response_class=HTMLResponse)
async def team(request: Request) -> HTMLResponse:
    from infra.ops.audit import state_summary

    who = await visitor(request)
    sub, _ = await run_in_threadpool(_as_tenant, _ctx(request), who)
    state = state_summary(sub)
    return _page(request, "team.html", tab="team", state=state,
                 user_plans=_ctx(request).engine.app.catalog.user_plans)


def _cancel_preview(ctx: ApiContext, who: links.Visitor) -> dict[str, Any]:
    sub, _ = _as_tenant(ctx, who)
    now = ctx.clock.now()
    preview = ctx.preview(Command("preview", "cancel", who.subscription, now))
    state = preview.pop("state", None)
    free_plan = ctx.engine.app.catalog.free_plan
    return {"preview": preview, "plan": sub.plan_id, "cycle_end": sub.cycle_end,
            "cancel_at": None if state is None else state.cancel_at,
            "commitment_end": sub.commitment_end, "free_plan": free_plan,
            "already": sub.cancel_at is not None}


@router.get("/cancel", response_class=HTMLResponse)
async def cancel_page(request: Request) -> HTMLResponse:
    who = await visitor(request)
    values = await run_in_threadpool(_cancel_preview, _ctx(request), who)
    return _page(request, "cancel.html", tab="cancel", **values)


@router.post("/cancel")
async def cancel(request: Request) -> RedirectResponse:
    who = await visitor(request)
    form = _form(await request.body())
    if form.get("confirm") != ["yes"]:
        return RedirectResponse("/portal/cancel", status_code=303)
    command_id = await run_in_threadpool(_publish, _ctx(request), who, "cancel",
                                         _form_id(form))
    return RedirectResponse(f"/portal/commands/{command_id}", status_code=303)


def _billing(ctx: ApiContext, who: links.Visitor) -> dict[str, Any]:
    """Coupon, prepaid credits and their automatic top-up, pause and resume: what applies now
    and what each action would do (the pause's preview says whether it is possible)."""
    from infra.ops.audit import state_summary

    sub, _ = _as_tenant(ctx, who)
    state = state_summary(sub)
    now = ctx.clock.now()
    if sub.status == "paused":
        action = ctx.preview(Command("preview", "resume", who.subscription, now))
    elif state["pause_at"] is None:
        action = ctx.preview(Command("preview", "pause", who.subscription, now))
    else:
        action = {"allowed": True}  # withdrawing a scheduled pause
    action.pop("state", None)
    return {"state": state, "pause_action": action}


BILLING_ACTIONS = {  # form action -> (command, its fields from the form's inputs)
    "coupon": ("apply_coupon", {"coupon": "code"}),
    "credits": ("grant_credits", {"amount": "amount"}),
    "top-up": ("configure_auto_top_up", {"threshold": "threshold", "amount": "amount"}),
    "pause": ("pause", {}),
    "resume": ("resume", {}),
}


@router.get("/billing", response_class=HTMLResponse)
async def billing_page(request: Request) -> HTMLResponse:
    who = await visitor(request)
    values = await run_in_threadpool(_billing, _ctx(request), who)
    return _page(request, "billing.html", tab="billing", **values)


@router.post("/billing/{action}", response_model=None)
async def billing_action(action: str, request: Request) -> RedirectResponse | HTMLResponse:
    who = await visitor(request)
    if action not in BILLING_ACTIONS:
        raise ApiError(404, "not_found", f"no such action {action[:32]!r}")
    kind, inputs = BILLING_ACTIONS[action]
    form = _form(await request.body())
    fields: dict[str, Any] = {name: form.get(field, [""])[0].strip()
                              for name, field in inputs.items()}
    if kind == "grant_credits":
        fields["purchased"] = True  # a customer buys credits; only an operator grants them
    ctx = _ctx(request)
    command_id, refusal = await run_in_threadpool(_publish_if_allowed, ctx, who, kind, fields,
                                                  _form_id(form))
    if command_id is not None:
        return RedirectResponse(f"/portal/commands/{command_id}", status_code=303)
    values = await run_in_threadpool(_billing, ctx, who)
    response = _page(request, "billing.html", tab="billing", refusal=refusal,
                     refused_action=action, **values)
    response.status_code = 422
    return response
