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


def context_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


async def context(request: Request) -> ApiContext:
    """async: FastAPI runs a plain function dependency in its thread pool, a thread hop on
    every request."""
    return context_of(request)


async def authenticate(request: Request) -> Principal:
    return await principal_of(context_of(request), request.headers.get("authorization", ""))


async def principal_of(ctx: ApiContext, authorization: str) -> Principal:
    """Who an Authorization header's key is (the entitlement fast path calls this itself)."""
    known, found = known_principal(ctx, authorization)
    if not known:
        async with ctx.key_lookups:
            found = await run_in_threadpool(ctx.principal, authorization.partition(" ")[2])
    if found is None:
        raise ApiError(401, "invalid_key", "this API key is unknown or revoked")
    return found


def known_principal(ctx: ApiContext, authorization: str) -> tuple[bool, Principal | None]:
    """(True, who or None) when the answer needs no database, else (False, None)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing_key", "send an API key: Authorization: Bearer bk_...")
    return ctx.known_principal(token)


async def principal(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Depends(bearer)]) -> Principal:
    """The dependency form (it also puts the bearer scheme in the OpenAPI document)."""
    return await authenticate(request)


async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.admin:
        raise ApiError(403, "admin_only", "this needs an operator's key (billing keys create "
                                          "--admin)")
    return who


Caller = Annotated[Principal, Depends(principal)]
Operator = Annotated[Principal, Depends(operator)]
Context = Annotated[ApiContext, Depends(context)]
