"""Domain errors → HTTP, in one place.

Every error response is ``{"error": {"code": "E_...", "message": "..."}}``. Codes come from
:mod:`sdk.errors` so the SDK raises the same class the server meant; messages are built from
names, digests and counts, never from data; a traceback never leaves the process.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdk.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ResourceError,
    SealroomError,
)

log = logging.getLogger("sealroom.coordinator")

STATUS_BY_CODE: dict[str, int] = {
    "E_INPUT": 400,
    "E_SIGNATURE": 422,
    "E_ATTESTATION": 422,
    "E_DECRYPT": 422,
    "E_QUERY_REJECTED": 422,
    "E_QUERY_RUNTIME": 422,
    "E_AUTH": 403,
    "E_NOT_FOUND": 404,
    "E_CONFLICT": 409,
    "E_LOG": 409,
    "E_PRIVACY": 409,
    "E_RESOURCE": 413,
    "E_CONFIG": 503,
    "E_NETWORK": 502,
    "E_INTERNAL": 500,
}


class Unauthenticated(AuthError):
    """No valid credentials were presented (HTTP 401)."""

    status = 401


class Forbidden(AuthError):
    """The caller is authenticated but not allowed to do this (HTTP 403)."""

    status = 403


class PayloadTooLarge(ResourceError):
    """A request body exceeds its cap (HTTP 413)."""

    status = 413


class Busy(ResourceError):
    """The coordinator cannot take this now (HTTP 503)."""

    status = 503


def status_of(exc: SealroomError) -> int:
    """The HTTP status of a domain error."""
    explicit = getattr(exc, "status", None)
    if isinstance(explicit, int):
        return explicit
    return STATUS_BY_CODE.get(exc.code, 500)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": {"code": code, "message": message[:500]}}


def error_response(code: str, message: str, status: int) -> JSONResponse:
    """A JSON error response (with ``WWW-Authenticate`` on 401)."""
    headers = {"WWW-Authenticate": 'Bearer realm="sealroom"'} if status == 401 else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {404: NotFoundError.code, 405: "E_INPUT", 409: ConflictError.code, 413: "E_RESOURCE"}


def install_error_handlers(app: FastAPI) -> None:
    """Register the one mapping of exceptions to HTTP responses on ``app``."""

    @app.exception_handler(SealroomError)
    async def _domain(_request: Request, exc: SealroomError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("request failed: %s %s", exc.code, exc.message)
        return error_response(exc.code, exc.message, status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response("E_INPUT", "invalid request: " + "; ".join(parts), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "E_INPUT" if exc.status_code < 500 else "E_INTERNAL")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(code, detail, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__)
        return error_response("E_INTERNAL", "internal error", 500)
