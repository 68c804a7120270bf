"""How the console answers: Jinja2 pages (autoescaped) with strict security headers, JSON with a version
for its polling, HTML error pages, and a small reader of url-encoded forms (no multipart dependency).

Pages send a Content-Security-Policy that allows only this origin's script and style (no inline script, no
`style=` attributes), images from this origin or `data:` (QR codes), no framing, and forms posting only here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from luminai_actors.errors import PayloadError
from luminai_actors.web.bodies import read_body
from luminai_actors.web.console.session import ConsoleSession, container_of, csrf_token

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["duration"] = _duration
    return env


_ENV = _environment()

NOTICES = {
    "signed-out": "You are signed out.",
    "tested": "Connection tested; the state below is what Evolution reported.",
    "webhook": "Webhook configured on Evolution.",
    "qrcode": "Pairing started: scan the QR code with WhatsApp (Linked devices).",
    "connected": "The instance is already connected.",
    "saved": "WhatsApp settings saved.",
    "paused": "Bot paused: a human has this conversation.",
    "resumed": "Bot resumed.",
    "resumed-answering": "Bot resumed; it is answering the lead's waiting messages.",
    "sent": "Message queued; it goes out through the normal sender.",
    "retried": "Retry queued.",
    "org": "Organization saved.",
    "flow-saved": "Tree flow saved: new conversations follow it; those under way keep their version.",
    "flow-deleted": "Tree flow deleted.",
    "agent-deleted": "Agent deleted.",
}


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    session: ConsoleSession | None,
    status_code: int = 200,
) -> HTMLResponse:
    token = container_of(request).settings.admin_token or ""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    values = {
        "request": request,
        "session": session,
        "principal": session.principal if session is not None else None,
        "csrf": csrf_token(token, session) if session is not None else "",
        "notice": notice,
        "error": None,
        "org": None,
        "nav": None,
        "poll": None,
        "version": "",
        **context,
    }
    html = _ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, session: ConsoleSession | None, status: int, message: str) -> HTMLResponse:
    titles = {
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        422: "Not valid",
        502: "Evolution API failed",
    }
    return page(
        request,
        "error.html",
        {"title": titles.get(status, "Error"), "status": status, "message": message},
        session=session,
        status_code=status,
    )


def version_of(payload: dict[str, Any]) -> str:
    """A digest that changes exactly when `payload` does; a page carries the one of the JSON it polls."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versioned(payload: dict[str, Any]) -> JSONResponse:
    """JSON with its `version` (the page's poller compares it with the page's own)."""
    return JSONResponse({"version": version_of(payload), **payload}, headers={"Cache-Control": "no-store"})


def redirect(url: str, notice: str | None = None) -> RedirectResponse:
    target = f"{url}{'&' if '?' in url else '?'}notice={notice}" if notice else url
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def safe_next(value: str | None, default: str) -> str:
    """A redirect target inside the console only (never another host)."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (what the console's forms send), last value wins."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, MAX_FORM_BYTES)
    if body and content_type not in ("application/x-www-form-urlencoded", ""):
        raise PayloadError("send the form url-encoded", status=415)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise PayloadError("form is not UTF-8", status=400) from exc


def redirect_to_sign_in(request: Request) -> Response:
    return RedirectResponse("/console/sign-in", status_code=303, headers={"Cache-Control": "no-store"})
