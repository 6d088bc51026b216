"""Entitlement checks answered as their bytes arrive, before uvicorn's parser and any ASGI
machinery.

This module reaches into uvicorn's private `HttpToolsProtocol` (its per-connection state and
keep-alive timer) on the exact version pinned in pyproject.toml;
tests/unit/test_pinned_internals.py fails when that version changes.

Why: through uvicorn a check costs its parser callbacks (a scope dict per request, a header
list), an asyncio task, a request-response cycle, two socket writes and a new keep-alive timer,
about 0.2 ms of CPU in all; at 2,000 checks a second on two cores shared with the workers,
PostgreSQL and the broker, that CPU decided the tail latency (docs/api.md, "Performance"). Here
a read that holds exactly one plain check (`GET /v1/subscriptions/S/entitlements/M` with at
most `?requested=N`, HTTP/1.1, no body, no `Connection`, `Upgrade` or `Expect` header, one
`Authorization`) on an idle connection is answered in one write, if its answer is in memory
(`entitlements.kept_body`: a key seen in the last seconds, a kept reading, the clock read in the
last second). Anything else, including every refusal, goes to uvicorn unchanged, and the app
gives the same answer through the same function.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The request line and headers of one plain check, nothing after them. Ids and names are URL
# unreserved characters only (anything percent-encoded goes to the app); header names are
# RFC 9110 tokens, values visible ASCII, spaces and tabs (other bytes go to the app).
PLAIN_CHECK = re.compile(
    rb"GET /v1/subscriptions/([A-Za-z0-9._~-]{1,200})/entitlements/([A-Za-z0-9._~-]{1,200})"
    rb"(?:\?requested=([0-9.]{1,40}))? HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}:[ \t!-~]{0,8192}\r\n){0,64})\r\n")
AUTHORIZATION = re.compile(rb"(?im)^authorization:[ \t]*([!-~](?:[ \t!-~]*[!-~])?)?[ \t]*\r$")
# Headers that change what the request means or how its connection goes on: the app's.
LEFT_TO_THE_APP = re.compile(
    rb"(?im)^(?:connection|upgrade|expect|content-length|transfer-encoding|te):")


class AnswersKept(Protocol):
    def answer_kept(self, subscription: str, name: str, requested: str,
                    authorization: str) -> bytes | None:
        """The JSON body of a 200 answer, or None to let the app answer."""


class CheckAnsweringProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering plain kept entitlement checks itself. Pass it
    as uvicorn's `http` option; it finds its answerer among the app's wrappers (`.app`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answerer = answerer_of(self.app)
        self._in_message = False
        self._answered_at = 0.0

    def data_received(self, data: bytes) -> None:
        if self._answerer is None or not data.startswith(b"GET /v1/subscriptions/") \
                or not self._answer_plain_check(self._answerer, data):
            super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def timeout_keep_alive_handler(self) -> None:
        # Answers here do not move the timer (re-arming it per answer cost more than the
        # answer's lookup); it looks at the last answer's time when it fires instead.
        idle = self.loop.time() - self._answered_at
        if idle < self.timeout_keep_alive:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive - idle, self.timeout_keep_alive_handler)
            return
        super().timeout_keep_alive_handler()

    def _answer_plain_check(self, answerer: AnswersKept, data: bytes) -> bool:
        if self._in_message or self.pipeline or self.flow.write_paused or (
                self.cycle is not None and not self.cycle.response_complete):
            return False  # the parser holds part of a request, or an answer is pending
        check = PLAIN_CHECK.fullmatch(data)
        if check is None:
            return False
        headers = check[4]
        authorization = AUTHORIZATION.findall(headers)
        if len(authorization) != 1 or LEFT_TO_THE_APP.search(headers):
            return False
        body = answerer.answer_kept(check[1].decode(), check[2].decode(),
                                    (check[3] or b"0").decode(),
                                    authorization[0].decode("ascii"))
        if body is None:
            return False
        head = [b"HTTP/1.1 200 OK\r\n"]
        for header, value in self.server_state.default_headers:
            head += [header, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
                    % len(body))
        head.append(body)
        self.transport.write(b"".join(head))
        self.server_state.total_requests += 1
        self._answered_at = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)
        return True


def answerer_of(app: Any) -> AnswersKept | None:
    """The first of an app's wrappers (followed through `.app`) that answers kept checks."""
    for _ in range(16):
        if app is None:
            return None
        if callable(getattr(app, "answer_kept", None)):
            found: AnswersKept = app
            return found
        app = getattr(app, "app", None)
    return None
