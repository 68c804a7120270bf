"""Wrappers every console endpoint goes through: a valid session (else the sign-in page, or 401 for JSON),
the CSRF check on state-changing forms (403), and the error tree shown as an HTML page with its status (404
for anything of another organization, 409, 422, 502 when Evolution fails) instead of the admin API's JSON.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.errors import (
    Conflict,
    EvolutionError,
    LuminaiError,
    NotFound,
    PayloadError,
    Unavailable,
    ValidationError,
)
from luminai_actors.web.console.render import error_page, read_form, redirect_to_sign_in
from luminai_actors.web.console.session import CSRF_FIELD, ConsoleSession, csrf_valid, current_session
from luminai_actors.web.errors import error_response

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, ConsoleSession], Awaitable[Response]]
ActionHandler = Callable[[Request, ConsoleSession, dict[str, str]], Awaitable[Response]]


def path_uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(request.path_params[name]))
    except ValueError as exc:
        raise NotFound(f"no such {name.removesuffix('_id')}") from exc


def _status_of(exc: LuminaiError) -> tuple[int, str]:
    if isinstance(exc, PayloadError):
        return exc.status, str(exc)
    if isinstance(exc, ValidationError):
        return 422, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc) or "not found"
    if isinstance(exc, Conflict):
        return 409, str(exc)
    if isinstance(exc, EvolutionError):
        return 502, f"Evolution API: {exc}"
    if isinstance(exc, Unavailable):
        return 503, str(exc)
    log.error("console: unexpected %s: %s", type(exc).__name__, exc)
    return 500, "internal error"


def console_page(handler: PageHandler) -> Endpoint:
    """A page: signed in or sent to the sign-in page; errors become an HTML page with their status."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        session = await current_session(request)
        if session is None:
            return redirect_to_sign_in(request)
        try:
            return await handler(request, session)
        except LuminaiError as exc:
            status, message = _status_of(exc)
            return error_page(request, session, status, message)

    return endpoint


def console_action(handler: ActionHandler) -> Endpoint:
    """A form POST: signed in, same origin and the session's CSRF token, or nothing happens."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        session = await current_session(request)
        if session is None:
            return redirect_to_sign_in(request)
        try:
            form = await read_form(request)
            if not csrf_valid(request, session, form.get(CSRF_FIELD)):
                return error_page(request, session, 403, "the form expired or came from another site; retry")
            return await handler(request, session, form)
        except LuminaiError as exc:
            status, message = _status_of(exc)
            return error_page(request, session, status, message)

    return endpoint


def console_api(handler: PageHandler) -> Endpoint:
    """A JSON read for the page's poller: 401 without a session, the admin API's JSON errors otherwise."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        session = await current_session(request)
        if session is None:
            return error_response(401, "sign in to the console")
        try:
            return await handler(request, session)
        except LuminaiError as exc:
            status, message = _status_of(exc)
            return error_response(status, message)

    return endpoint
