"""`POST /v1/commands` checks a lifecycle command against the command contract and publishes it
on `billing.commands`; `GET /v1/commands/{id}` tells what became of it, as the command
ingester recorded with its id (applied, unchanged, refused with a code and why).

A tenant key acts on its own account's subscriptions only, and may subscribe new ones for its
account; payments, voiding an invoice and moving a subscription's clock are operators' (403)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query
from starlette.concurrency import run_in_threadpool

from domain.contracts.commands import parse_command
from domain.shared.errors import BillingError
from infra.api.access import Caller, Context
from infra.api.context import ApiContext
from infra.api.errors import ApiError, JsonResponse, not_found
from infra.api.keys import Principal

router = APIRouter(tags=["commands"])

# What a tenant's key may not do to its own subscriptions: record money, end one at once with
# a refund, give itself credits (buying them, `purchased: true`, is the customer's own).
OPERATORS_ONLY = frozenset({"record_payment", "void_invoice", "advance", "terminate",
                            "override_prices", "grant_units"})
COMMAND_EXAMPLE = {"id": "cmd-0001", "type": "change_plan", "subscription": "sub-1",
                   "plan": "pro"}


def publish_command(ctx: ApiContext, who: Principal, raw: dict[str, Any]) -> dict[str, Any]:
    if "at" not in raw:
        raw = {**raw, "at": ctx.clock.now().isoformat()}
    try:
        command = parse_command(raw)
    except BillingError as e:
        raise ApiError(422, e.code, str(e)) from None
    if not who.admin and (command.type in OPERATORS_ONLY or (
            command.type == "grant_credits" and command.fields.get("purchased") is not True)
            or command.fields.get("overrides") is not None):
        raise ApiError(403, "admin_only", f"{command.type} needs an operator's key")
    existing = ctx.subscriptions([command.subscription]).get(command.subscription)
    if command.type == "subscribe":
        if not who.admin and command.fields.get("account") != who.account:
            raise ApiError(403, "wrong_account",
                           f"a tenant key subscribes for its own account: \"account\": "
                           f"\"{who.account}\"")
        if existing is not None:  # ids are global: says it is taken, not whose it is
            raise ApiError(409, "subscription_exists",
                           f"subscription {command.subscription} exists")
    elif existing is None or not who.may_see(existing.account):
        raise not_found(f"subscription {command.subscription!r}")
    ctx.publish(ctx.engine.settings.topics.commands,
                [(command.subscription.encode(), orjson.dumps(raw))])
    return {"id": command.id, "type": command.type, "subscription": command.subscription,
            "at": command.at.isoformat(), "status": "published",
            "outcome": f"/v1/commands/{command.id}?subscription={command.subscription}"}


def outcome_of(ctx: ApiContext, who: Principal, command_id: str,
               subscription: str | None) -> dict[str, Any]:
    sql = ("SELECT subscription_id, command_id, type, account, result, code, message, events, "
           "recorded_at FROM command_outcomes WHERE command_id = %s")
    params: list[Any] = [command_id]
    if subscription is not None:
        sql += " AND subscription_id = %s"
        params.append(subscription)
    with ctx.pool.connection() as conn:
        cur = conn.execute(sql + " ORDER BY recorded_at", params)
        names = [c.name for c in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    mine = [r for r in rows if who.may_see(r["account"])]
    if not mine:
        raise ApiError(404, "no_outcome", f"no outcome recorded for command {command_id!r}: "
                       "not applied yet (ask again shortly), or never sent")
    if len(mine) > 1:
        raise ApiError(409, "ambiguous_command",
                       f"command id {command_id!r} was used on several subscriptions: add "
                       "?subscription=")
    r = mine[0]
    return {"id": r["command_id"], "subscription": r["subscription_id"], "type": r["type"],
            "status": "refused" if r["result"] == "refused" else "applied",
            "result": r["result"], "code": r["code"], "error": r["message"],
            "events": r["events"], "recorded_at": r["recorded_at"].isoformat()}


@router.post("/v1/commands", status_code=202,
             summary="Publish a lifecycle command (docs/contracts.md); `at` defaults to now")
async def post_command(who: Caller, ctx: Context, command: Annotated[
        dict[str, Any], Body(examples=[COMMAND_EXAMPLE])]) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(publish_command, ctx, who, command),
                        status_code=202)


@router.get("/v1/commands/{command_id}", summary="What became of a command")
async def get_command(command_id: str, who: Caller, ctx: Context,
                      subscription: Annotated[str | None, Query(max_length=200)] = None
                      ) -> JsonResponse:
    return JsonResponse(await run_in_threadpool(outcome_of, ctx, who, command_id, subscription))
