"""Webhook authentication: the agent's `webhookToken` as a header, or Evolution's `jwt_key` mode.

Evolution signs nothing by default (reference §1.1). We configure our secret in the instance webhook's
custom headers, so a request proves itself with `X-Webhook-Token: <token>`, or, when the secret was set as
`jwt_key`, with `Authorization: Bearer <JWT>` signed HS256 with the token, whose `exp` must be in the future.
Comparisons are constant-time. An agent without a token accepts unauthenticated webhooks (the seed's default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

TOKEN_HEADER = "x-webhook-token"  # noqa: S105 - a header name, not a secret
CLOCK_SKEW_SECONDS = 30


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_jwt_hs256(token: str, secret: str, *, now: float | None = None) -> bool:
    """True when `token` is a well-formed HS256 JWT signed with `secret` and not expired."""
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
    exp = payload.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return False
    return (now if now is not None else time.time()) < exp + CLOCK_SKEW_SECONDS


def sign_jwt_hs256(payload: Mapping[str, object], secret: str) -> str:
    """An HS256 JWT like the one Evolution sends in jwt_key mode (used by tests and the fake server)."""

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = encode(json.dumps(dict(payload), separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{encode(signature)}"


def webhook_authorized(expected_token: str | None, headers: Mapping[str, str]) -> bool:
    """Whether a webhook's headers prove the agent's secret (always True when the agent has none)."""
    if not expected_token:
        return True
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
