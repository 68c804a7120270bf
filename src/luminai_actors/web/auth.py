"""Webhook authentication: the agent's `webhookToken` as a header, or Evolution's `jwt_key` mode.

Evolution signs nothing by default (reference §1.1). We configure our secret in the instance webhook's
custom headers, so a request proves itself with `X-Webhook-Token: <token>`, or, when the secret was set as
`jwt_key`, with `Authorization: Bearer <JWT>` signed HS256 with the token. Evolution's JWT is
`{iat, exp: iat + 600, app, action}`, so one is accepted only with a numeric `iat` not in the future, an `exp`
at most `MAX_JWT_LIFETIME_SECONDS` after it, and `exp` not past, each with `CLOCK_SKEW_SECONDS` of skew (an
`exp` of 1e308 once made a JWT valid forever). Comparisons are constant-time.

Every agent has a token (one is generated when none is given); an agent without one (made before tokens were
generated) is refused unless the operator opts out with LUMINAI_ALLOW_UNAUTHENTICATED_WEBHOOKS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping

TOKEN_HEADER = "x-webhook-token"  # noqa: S105 - a header name, not a secret
CLOCK_SKEW_SECONDS = 30
MAX_JWT_LIFETIME_SECONDS = 600  # what Evolution issues (generateJwtToken)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verify_jwt_hs256(token: str, secret: str, *, now: float | None = None) -> bool:
    """True when `token` is a well-formed HS256 JWT signed with `secret`, issued (`iat`) not in the future,
    living at most MAX_JWT_LIFETIME_SECONDS and not expired."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64decode(header_b64))
        payload = json.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(payload, dict):
        return False
    expected = hmac.new(secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        return False
    exp, iat = payload.get("exp"), payload.get("iat")
    if not (_seconds(exp) and _seconds(iat)):
        return False
    assert isinstance(exp, int | float)
    assert isinstance(iat, int | float)
    if not 0 < exp - iat <= MAX_JWT_LIFETIME_SECONDS:
        return False
    moment = now if now is not None else time.time()
    return iat <= moment + CLOCK_SKEW_SECONDS and moment < exp + CLOCK_SKEW_SECONDS


def sign_jwt_hs256(payload: Mapping[str, object], secret: str) -> str:
    """An HS256 JWT like the one Evolution sends in jwt_key mode (used by tests and the fake server)."""

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = encode(json.dumps(dict(payload), separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{encode(signature)}"


def webhook_authorized(
    expected_token: str | None, headers: Mapping[str, str], *, allow_unauthenticated: bool = False
) -> bool:
    """Whether a webhook's headers prove the agent's secret. An agent without one passes only when the
    operator allowed unauthenticated webhooks."""
    if not expected_token:
        return allow_unauthenticated
    given = headers.get(TOKEN_HEADER)
    if given is not None and hmac.compare_digest(given.encode(), expected_token.encode()):
        return True
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential:
        credential = credential.strip()
        if hmac.compare_digest(credential.encode(), expected_token.encode()):
            return True
        return verify_jwt_hs256(credential, expected_token)
    return False
