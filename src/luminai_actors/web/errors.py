"""The one place where the error tree becomes HTTP: status codes and JSON error bodies, never a traceback."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from luminai_actors.errors import (
    Conflict,
    EvolutionError,
    Forbidden,
    NotFound,
    PayloadError,
    Unavailable,
    ValidationError,
)

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: object) -> JSONResponse:
    headers = {"Retry-After": "5"} if status in (429, 503) else None
    return JSONResponse({"success": False, "error": message, **extra}, status_code=status, headers=headers)


async def handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PayloadError):
        extra = {"path": exc.path} if exc.path else {}
        return error_response(exc.status, str(exc), **extra)
    if isinstance(exc, ValidationError):
        return error_response(422, str(exc), field=exc.field)
    if isinstance(exc, NotFound):
        return error_response(404, str(exc) or "not found")
    if isinstance(exc, Conflict):
        return error_response(409, str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, str(exc))
    if isinstance(exc, EvolutionError):
        return error_response(502, f"Evolution API: {exc}", evolutionStatus=exc.status)
    if isinstance(exc, Unavailable):
        log.warning("%s %s: unavailable: %s", request.method, request.url.path, exc)
        return error_response(503, str(exc))
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")
