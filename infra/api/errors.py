"""Every refusal of the API is a JSON body `{"error": text, "code": code}` (the CLI's error
object) with its status: 400 bad request, 401 no or unknown key, 403 a key that may not do
this, 404 not found (also what a tenant gets for another account's subscription: it learns
nothing of it), 409 a conflict, 413 too large, 422 a body or parameter the contract refuses."""

from __future__ import annotations

import html
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response


class JsonResponse(Response):
    """orjson: Decimal is not reached (amounts are already text), datetimes are RFC 3339."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": message, "code": code}


PORTAL_ERROR = ("<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>"
                "<body style='font-family:sans-serif;max-width:40rem;margin:4rem auto'>"
                "<h1>{title}</h1><p class=error>{message}</p></body></html>")
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def install(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if request.url.path.startswith("/portal"):  # people, not programs: a page
            return HTMLResponse(PORTAL_ERROR.format(title=html.escape(exc.code.replace(
                "_", " ")), message=html.escape(exc.message)), status_code=exc.status)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JsonResponse(error_body(exc.code, exc.message), status_code=exc.status,
                            headers=headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                    for e in exc.errors()]
        return JsonResponse(error_body("invalid_request", "; ".join(problems)[:2000]),
                            status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = STATUS_CODES.get(exc.status_code, "http_error")
        return JsonResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
