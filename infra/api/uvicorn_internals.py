"""Entitlement checks answered inside uvicorn's HTTP protocol, before any ASGI machinery.

This module reaches into uvicorn's private `HttpToolsProtocol` (its parser callbacks and its
per-connection state) on the exact version pinned in pyproject.toml;
tests/unit/test_pinned_internals.py fails when that version changes.

Why: through ASGI a check costs uvicorn an asyncio task, a scope, a request-response cycle and
two socket writes (the head, then the body) before and after the answer itself; at 2,000
checks a second on two cores shared with the workers, PostgreSQL and the broker, that overhead
decided the tail latency (docs/api.md, "Performance"). Here a check whose answer is in memory
(`entitlements.kept_body`: a key seen in the last seconds, a kept reading, the clock read in
the last second) is answered from the parser's callback in one write. Everything else (a
reading to fetch, a key to look up, any refusal, a percent-encoded or unusual URL, a request
queued behind a slower one on the same connection) goes on to the app as before, which gives
the same answer through the same function.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CHECK_QUERY = re.compile(rb"(requested=[0-9.]{1,40})?")


class AnswersKept(Protocol):
    def answer_kept(self, subscription: str, name: str, requested: str,
                    authorization: str) -> bytes | None:
        """The JSON body of a 200 answer, or None to let the app answer."""


class CheckAnsweringProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering kept entitlement checks itself. Pass it as
    uvicorn's `http` option; it finds its answerer among the app's wrappers (`.app`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answerer = answerer_of(self.app)
        self._answered = False

    def on_headers_complete(self) -> None:
        if self._answerer is not None and self._answer_at_once(self._answerer):
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _answer_at_once(self, answerer: AnswersKept) -> bool:
        if self.parser.get_method() != b"GET" or self.pipeline or (
                self.cycle is not None and not self.cycle.response_complete):
            return False
        url: bytes = self.url
        if not url.isascii() or b"%" in url or b"+" in url:
            return False
        parsed = httptools.parse_url(url)
        query = parsed.query or b""
        parts = parsed.path.split(b"/")
        if len(parts) != 6 or parts[1] != b"v1" or parts[2] != b"subscriptions" \
                or parts[4] != b"entitlements" or not parts[3] or not parts[5] \
                or not CHECK_QUERY.fullmatch(query):
            return False
        authorization = b""
        for header, value in self.headers:
            if header == b"authorization":
                authorization = value
        payload = answerer.answer_kept(parts[3].decode(), parts[5].decode(),
                                       query[10:].decode() or "0",
                                       authorization.decode("latin-1"))
        if payload is None:
            return False
        keep_alive = self.parser.get_http_version() == "1.1" and self.parser.should_keep_alive()
        head = [b"HTTP/1.1 200 OK\r\n"]
        for header, value in self.server_state.default_headers:
            head += [header, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
            len(payload), b"" if keep_alive else b"connection: close\r\n"))
        head.append(payload)
        self.transport.write(b"".join(head))
        self._answered = True
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
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
