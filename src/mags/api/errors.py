"""Render every error as ``{"error": "<message>"}`` with its status code."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from mags.errors import AuthError, MagsError

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None
) -> JSONResponse:
    body = {"error": message} if code is None else {"error": message, "code": code}
    return JSONResponse(body, status_code=status, headers=headers)


async def _mags_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MagsError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    status = exc.status_code if exc.status_code >= 400 else 500
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(status, str(exc) or type(exc).__name__, headers, getattr(exc, "code", None))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, dict(exc.headers or {}))


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    where = ".".join(loc) or "request"
    return f"{where}: {err.get('msg', 'invalid value')}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    message = "; ".join(_describe(e) for e in errors[:3]) if errors else "invalid request"
    return error_response(400, message)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s: unhandled error", request.method, request.url.path)
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MagsError, _mags_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
