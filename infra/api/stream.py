"""`GET /v1/subscriptions/{id}/monitor/stream`: the credit monitor as server-sent events, sent
once at once and again each time the quota projection applies a change to the subscription.

The projector's version row for the subscription is polled (every half second, one index
lookup): a change there is exactly "the projection applied something", and polling needs no
trigger or LISTEN channel, which any login could otherwise listen on. A comment line every 15
seconds keeps proxies from closing an idle stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from infra.api.access import Caller, Context
from infra.api.context import ApiContext
from infra.api.errors import ApiError
from infra.api.reads import monitor

router = APIRouter(tags=["live"])
# Each open stream asks the database twice a second: a process serves at most this many at
# once (429 `too_many_streams` past it), so that streams left open cannot starve the rest.
MAX_STREAMS = 200
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
VERSION_SQL = ("SELECT version FROM projection_versions WHERE projection = 'quota' AND "
               "subscription_id = %s")


_open_streams = 0


def admit_stream() -> None:
    """Refuse a new stream while the process sends MAX_STREAMS already. (A stream counts
    from its first event to its end: counted where it runs, it is never left counted by a
    client that went away before it started.)"""
    if _open_streams >= MAX_STREAMS:
        raise ApiError(429, "too_many_streams",
                       f"this server already sends {MAX_STREAMS} live streams; try again later")


async def monitor_events(request: Request, ctx: ApiContext,
                         read: Callable[[], dict[str, Any]], sid: str) -> AsyncIterator[bytes]:
    """`read` gives the monitor (access already checked by the caller's first read)."""
    global _open_streams
    _open_streams += 1
    try:
        async for chunk in _monitor_events(request, ctx, read, sid):
            yield chunk
    finally:
        _open_streams -= 1


async def _monitor_events(request: Request, ctx: ApiContext,
                          read: Callable[[], dict[str, Any]],
                          sid: str) -> AsyncIterator[bytes]:
    last: int | None = None
    quiet = 0.0
    while not await request.is_disconnected():
        assert ctx.apool is not None
        async with ctx.apool.connection() as conn:
            row = await (await conn.execute(VERSION_SQL, (sid,))).fetchone()
        version = None if row is None else row[0]
        if version != last:
            last = version
            view = await run_in_threadpool(read)
            yield b"event: monitor\ndata: " + orjson.dumps(view, default=str) + b"\n\n"
            quiet = 0.0
        elif quiet >= KEEPALIVE_SECONDS:
            yield b": keepalive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS


def sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/v1/subscriptions/{subscription}/monitor/stream",
            summary="The credit monitor, pushed (server-sent events) whenever it changes",
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_monitor(subscription: str, request: Request, who: Caller,
                         ctx: Context) -> StreamingResponse:
    await run_in_threadpool(monitor, ctx, who, subscription)  # 404 before the stream opens
    admit_stream()

    def read() -> dict[str, Any]:
        return monitor(ctx, who, subscription)
    return sse(monitor_events(request, ctx, read, subscription))
