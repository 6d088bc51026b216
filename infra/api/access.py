"""Who a request acts for: `Authorization: Bearer bk_...` (infra/api/keys.py). No key or an
unknown one is 401; an operator-only route asked by a tenant key is 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from infra.api.context import ApiContext
from infra.api.errors import ApiError
from infra.api.keys import Principal

bearer = HTTPBearer(auto_error=False, description="an API key: `billing keys create`")


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


async def principal(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Depends(bearer)]) -> Principal:
    if credentials is None:
        raise ApiError(401, "missing_key", "send an API key: Authorization: Bearer bk_...")
    ctx = context(request)
    known, found = ctx.known_principal(credentials.credentials)
    if not known:
        found = await run_in_threadpool(ctx.principal, credentials.credentials)
    if found is None:
        raise ApiError(401, "invalid_key", "this API key is unknown or revoked")
    return found


async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.admin:
        raise ApiError(403, "admin_only", "this needs an operator's key (billing keys create "
                                          "--admin)")
    return who


Caller = Annotated[Principal, Depends(principal)]
Operator = Annotated[Principal, Depends(operator)]
Context = Annotated[ApiContext, Depends(context)]
