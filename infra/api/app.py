"""The HTTP API: FastAPI on uvicorn (`billing serve`), documented by its generated OpenAPI at
`/openapi.json`, with the interactive page at `/docs`.

FastAPI because it writes the OpenAPI document from the routes themselves (no second
description to keep in step), checks parameters by their types, and runs on Starlette, whose
streaming responses carry the server-sent events. Bodies that belong to a contract of the
engine (usage, commands) are checked by the engine's own parsers, not by a second schema, so
the API can never accept what a worker would refuse; the hot routes answer with orjson."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import FastAPI
from starlette.responses import RedirectResponse

from domain.shared.text import storable
from infra.api import commands, entitlements, errors, reads, stream, usage_in
from infra.api.context import ApiContext

log = logging.getLogger("billing.api")
ROUTERS = tuple(m.router for m in (entitlements, usage_in, commands, reads, stream))

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Request bodies: a usage batch (10,000 events) may be large; nothing else needs to be.
USAGE_BODY_BYTES = 8 * 1024 * 1024
BODY_BYTES = 64 * 1024


class BodyLimit:
    """413 for a body past its route's limit, by Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = USAGE_BODY_BYTES if scope["path"] == "/v1/usage" else BODY_BYTES
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(errors.error_body("too_large", f"the body is over {limit:,} bytes"))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class StorableText:
    """422 `invalid_text` for a path or query string holding what PostgreSQL text cannot
    (U+0000, a lone surrogate): asked as it is, the database would raise, and a name holding
    it cannot exist anyway. One guard before every route, the fast path's included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote(scope.get("query_string", b"").decode("latin-1"),
                            errors="surrogateescape")
            if not (storable(scope["path"]) and storable(query)):
                body = orjson.dumps(errors.error_body(
                    "invalid_text", "the path or query holds U+0000 or a lone surrogate"))
                await send({"type": "http.response.start", "status": 422,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class AccessLog:
    """One line per request: method, path, status, milliseconds. Never the query string (a
    portal link's token travels there) nor any header (keys travel there). Entitlement checks
    that succeed are not logged: at thousands a second a line each cost a sixth of the answer
    (`/healthz` counts them: the entitlement cache's hits and misses)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            if status != 200 or not entitlements.is_check(scope):
                log.info("%s %s %s %.1fms", scope["method"], scope["path"], status,
                         (time.perf_counter() - started) * 1000)


def create_app(ctx: ApiContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.open_async()
        try:
            yield
        finally:
            await ctx.close_async()

    app = FastAPI(title="billing engine API", version="1", lifespan=lifespan,
                  description="Entitlements, usage, commands and reads of the event-sourced "
                              "billing engine. Authenticate with `Authorization: Bearer "
                              "bk_...` (`billing keys create`).")
    app.state.context = ctx
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    from starlette.staticfiles import StaticFiles

    from infra.portal import pages

    app.include_router(pages.router)
    app.mount("/portal/static", StaticFiles(directory=pages.HERE / "static"), name="static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", tags=["health"], summary="The API answers and its database does")
    async def healthz() -> errors.JsonResponse:
        try:
            assert ctx.apool is not None
            async with ctx.apool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
        except Exception as e:
            return errors.JsonResponse(errors.error_body("database_unavailable",
                                                         type(e).__name__), status_code=503)
        return errors.JsonResponse({"ok": True, "entitlement_cache": {
            "following": ctx.entitlements.following, "hits": ctx.entitlements.hits,
            "misses": ctx.entitlements.misses}})

    app.add_middleware(BodyLimit)
    return app


# uvicorn's options for `serving_app` (`billing serve`, the tests' server).
SERVER_OPTIONS: dict[str, Any] = {
    "http": "infra.api.uvicorn_internals:CheckAnsweringProtocol", "loop": "uvloop",
    "access_log": False, "log_config": None}


def serving_app(ctx: ApiContext) -> ASGIApp:
    """What `billing serve` runs: the app behind the entitlement fast path, every request
    in the access log. Served with `SERVER_OPTIONS` (checks answered from memory in
    uvicorn's protocol, in front of all this)."""
    return AccessLog(StorableText(entitlements.EntitlementFastPath(create_app(ctx), ctx)))
