"""Console sign-in: a signed session cookie instead of a bearer header, and CSRF protection for its forms.

The sign-in form takes the operator token (`LUMINAI_ADMIN_TOKEN`) or an organization key (`lmk_...`), with the
admin API's rules. The cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over https, 12 hours) holds no
credential: it says who signed in (the operator, or the id of the organization key and its organization), a
random nonce and an expiry, signed with HMAC-SHA256 under a key derived from the operator token, so changing
that token signs everyone out. An organization key is checked on every request, so revoking it ends its
sessions at once. Every state-changing request must carry the session's CSRF token (`csrf_token` form field
or `X-CSRF-Token` header, an HMAC of the nonce) and, when the browser says where it comes from (`Origin`,
`Sec-Fetch-Site`), come from this origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.bootstrap import Container
from luminai_actors.services import api_keys
from luminai_actors.services.api_keys import OPERATOR, Principal

COOKIE = "luminai_console"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    principal: Principal
    key_id: uuid.UUID | None
    nonce: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(admin_token: str) -> bytes:
    return hashlib.sha256(b"luminai-console-session\x00" + admin_token.encode()).digest()


def _sign(key: bytes, payload: bytes) -> str:
    return _b64(hmac.new(key, payload, hashlib.sha256).digest())


def encode_session(admin_token: str, session: ConsoleSession) -> str:
    org = session.principal.organization_id
    body = {
        "org": str(org) if org is not None else None,
        "kid": str(session.key_id) if session.key_id is not None else None,
        "n": session.nonce,
        "exp": session.expires,
    }
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(payload)}.{_sign(_signing_key(admin_token), payload)}"


def decode_session(admin_token: str, value: str, now: float | None = None) -> ConsoleSession | None:
    """The session a cookie value proves, or None (bad signature, malformed, expired)."""
    encoded, _, signature = value.partition(".")
    try:
        payload = _unb64(encoded)
        if not hmac.compare_digest(signature, _sign(_signing_key(admin_token), payload)):
            return None
        body = json.loads(payload)
        expires = int(body["exp"])
        org = uuid.UUID(body["org"]) if body.get("org") else None
        key_id = uuid.UUID(body["kid"]) if body.get("kid") else None
        nonce = str(body["n"])
    except (ValueError, KeyError, TypeError):
        return None
    if (now if now is not None else time.time()) >= expires or (org is None) != (key_id is None):
        return None
    return ConsoleSession(Principal(org, key_id), key_id, nonce, expires)


def csrf_token(admin_token: str, session: ConsoleSession) -> str:
    return _sign(_signing_key(admin_token), b"csrf\x00" + session.nonce.encode())


def new_session(principal: Principal, key_id: uuid.UUID | None) -> ConsoleSession:
    return ConsoleSession(principal, key_id, secrets.token_urlsafe(16), int(time.time()) + SESSION_SECONDS)


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def sign_in(request: Request, credential: str) -> ConsoleSession | None:
    """A session for a pasted operator token or organization key; None when it is neither."""
    container = container_of(request)
    token = container.settings.admin_token
    given = credential.strip()
    if not token or not given:
        return None
    if hmac.compare_digest(given.encode(), token.encode()):
        return new_session(OPERATOR, None)
    principal = await run_in_threadpool(api_keys.resolve, container.uow, given)
    if principal is None:
        return None
    return new_session(principal, principal.key_id)


async def current_session(request: Request) -> ConsoleSession | None:
    """The request's valid session, if any (an organization key is re-checked against the database)."""
    container = container_of(request)
    token = container.settings.admin_token
    value = request.cookies.get(COOKIE)
    if not token or not value:
        return None
    session = decode_session(token, value)
    if session is None:
        return None
    org, key_id = session.principal.organization_id, session.key_id
    if org is not None and key_id is not None:
        valid = await run_in_threadpool(api_keys.key_still_valid, container.uow, key_id, org)
        if not valid:
            return None
    return session


def set_cookie(request: Request, response: Response, session: ConsoleSession) -> None:
    token = container_of(request).settings.admin_token or ""
    response.set_cookie(
        COOKIE,
        encode_session(token, session),
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/console", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site or origin; True when it says
    nothing (non-browser clients), since the CSRF token still has to match."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    public = container_of(request).settings.public_url
    if public:
        parts = urlsplit(public)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin.rstrip("/") in allowed


def csrf_valid(request: Request, session: ConsoleSession, submitted: str | None) -> bool:
    token = container_of(request).settings.admin_token or ""
    given = submitted or request.headers.get(CSRF_HEADER) or ""
    return same_origin(request) and hmac.compare_digest(given.encode(), csrf_token(token, session).encode())
