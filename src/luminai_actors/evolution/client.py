"""HTTP client of Evolution API v2 (httpx): sendText, connection state, connect (QR code), webhook set/find,
typed errors.

Evolution answers errors as `{status, error, response: {message}}` (reference §4). They are mapped once,
here: connection errors, timeouts, 5xx and 429 become `EvolutionTransientError` (worth a retry); 400 (schema
errors, `exists: false`), 401 and 404 become `EvolutionPermanentError` (a retry would fail the same way).
An error's message carries only Evolution's parsed reason (`response.message`, else `error`), never the raw
body of whatever answered: the message reaches tenants (test-connection, a failed reply's reason).

Evolution 2.4 answers every API route but `/`, `/license/*` and its manager with `503 LICENSE_REQUIRED`
until the server is activated: `EvolutionNotActivated`, neither transient nor permanent (the sender keeps the
reply waiting and spends no attempt). `GET /` answers without auth and names the server's `version`.

Every call says whether its agent's server URL is `trusted` (set by the operator). Untrusted calls go
through `outbound_address.GuardedTransport`: public unicast addresses only, unless the operator allowed the
host; a refused address is an `EvolutionPermanentError` and nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from luminai_actors.errors import (
    EvolutionError,
    EvolutionMaybeSent,
    EvolutionNotActivated,
    EvolutionPermanentError,
    EvolutionTransientError,
)
from luminai_actors.outbound_address import AddressPolicy, AddressRefused, GuardedTransport

WEBHOOK_EVENTS = (
    "MESSAGES_UPSERT",
    "MESSAGES_UPDATE",
    "SEND_MESSAGE",
    "CONNECTION_UPDATE",
    "QRCODE_UPDATED",
    "LOGOUT_INSTANCE",
    "REMOVE_INSTANCE",
)


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str | None
    remote_jid: str | None
    status_code: int
    body: Any


_REASON_LIMIT = 500
LICENSE_REQUIRED = "LICENSE_REQUIRED"


def _error_message(body: Any) -> str:
    """Evolution's reason for an error answer; a body not of Evolution's error shape is not repeated."""
    if isinstance(body, dict):
        response = body.get("response")
        if isinstance(response, dict) and "message" in response:
            message = response["message"]
            if isinstance(message, list):
                return "; ".join(str(item) for item in message)[:_REASON_LIMIT]
            return str(message)[:_REASON_LIMIT]
        error = body.get("error")
        if isinstance(error, str):
            return error[:_REASON_LIMIT]
    return "no reason given (the answer is not an Evolution API error)"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise EvolutionError(f"Evolution API answered {response.status_code} without JSON") from exc


def _json_object(response: httpx.Response, route: str) -> dict[str, Any]:
    payload = _json(response)
    if not isinstance(payload, dict):
        raise EvolutionError(f"Evolution API's {route} answer is not a JSON object", body=payload)
    return payload


def _not_on_whatsapp(body: Any) -> bool:
    response = body.get("response") if isinstance(body, dict) else None
    message = response.get("message") if isinstance(response, dict) else None
    return isinstance(message, list) and any(
        isinstance(item, dict) and item.get("exists") is False for item in message
    )


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    if response.status_code == 503 and isinstance(body, dict) and body.get("code") == LICENSE_REQUIRED:
        # src/licensing/runtime.ts (2.4.0-rc2) answers every gated route so: {error: "service not activated",
        # code, register_url, instance_id, docs_url, message}.
        reason = body.get("message") if isinstance(body.get("message"), str) else body.get("error")
        raise EvolutionNotActivated(
            f"Evolution API is not activated (licence required): {str(reason)[:_REASON_LIMIT]}",
            status=503,
            body=body,
        )
    detail = _error_message(body)
    message = f"Evolution API {response.status_code}: {detail}"
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise EvolutionTransientError(message, status=response.status_code, body=body)
    if response.status_code == 400 and _not_on_whatsapp(body):
        message = f"Evolution API 400: number is not on WhatsApp ({detail})"
    raise EvolutionPermanentError(message, status=response.status_code, body=body)


class EvolutionClient:
    """Two shared httpx clients over one transport (connection pool) for every agent's Evolution server:
    one for trusted server URLs, one that applies the outbound address rule (`policy`)."""

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        timeout: float = 30.0,
        policy: AddressPolicy | None = None,
    ) -> None:
        inner = transport or httpx.HTTPTransport()
        self._http = httpx.Client(transport=inner, timeout=timeout)
        self._guarded = httpx.Client(
            transport=GuardedTransport(policy or AddressPolicy(), inner),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the connection goes to the address checked
        )
        self._timeout = timeout

    def close(self) -> None:
        self._guarded.close()
        self._http.close()

    def _request(
        self,
        method: str,
        url: str,
        api_key: str,
        *,
        trusted: bool,
        json: Any = None,
        extra_timeout: float = 0.0,
    ) -> httpx.Response:
        http = self._http if trusted else self._guarded
        try:
            response = http.request(
                method,
                url,
                json=json,
                headers={"apikey": api_key, "Content-Type": "application/json"} if api_key else {},
                timeout=self._timeout + extra_timeout,
            )
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # Sent, or partly sent, and no answer: Evolution may have done what we asked.
            raise EvolutionMaybeSent(f"no answer from Evolution API: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise EvolutionTransientError(f"timeout calling Evolution API: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise EvolutionTransientError(f"cannot reach Evolution API: {type(exc).__name__}: {exc}") from exc
        except AddressRefused as exc:
            raise EvolutionPermanentError(f"refused to call the server URL: {exc.reason}") from exc
        _raise_for(response)
        return response

    @staticmethod
    def _url(server_url: str, path: str, instance: str) -> str:
        return f"{server_url.rstrip('/')}/{path}/{quote(instance, safe='')}"

    def send_text(
        self,
        server_url: str,
        api_key: str,
        instance: str,
        number: str,
        text: str,
        *,
        delay_ms: int | None = None,
        api_version: int = 2,
        trusted: bool = False,
        message_id: str | None = None,
    ) -> SendResult:
        """POST /message/sendText/{instance}; v2 flat body by default, v1 body for agents configured as v1.

        `message_id` goes in the v2 body's top-level `messageId`: Evolution 2.4.0 makes it the WhatsApp
        message id (src/api/dto/sendMessage.dto.ts `Metadata.messageId`, passed to Baileys' `sendMessage`),
        so every retry of one reply carries one id; 2.3.x ignores it (its `textMessageSchema` in
        src/validate/message.schema.ts has no `additionalProperties: false`, and the DTO drops the field)."""
        body: dict[str, Any]
        if api_version == 1:
            options: dict[str, Any] = {"delay": delay_ms} if delay_ms else {}
            body = {"number": number, "options": options, "textMessage": {"text": text}}
        else:
            body = {"number": number, "text": text}
            if delay_ms:
                body["delay"] = delay_ms
            if message_id:
                body["messageId"] = message_id
        response = self._request(
            "POST",
            self._url(server_url, "message/sendText", instance),
            api_key,
            trusted=trusted,
            json=body,
            extra_timeout=(delay_ms or 0) / 1000,
        )
        payload = _json(response)
        key = payload.get("key") if isinstance(payload, dict) else None
        key = key if isinstance(key, dict) else {}
        message_id = key.get("id") if isinstance(key.get("id"), str) else None
        remote_jid = key.get("remoteJid") if isinstance(key.get("remoteJid"), str) else None
        return SendResult(message_id, remote_jid, response.status_code, payload)

    def server_info(self, server_url: str, *, trusted: bool = False) -> dict[str, Any]:
        """GET / (no auth, never behind the licence gate): `{status, message, version, clientName, manager?,
        documentation, whatsappWebVersion}` in 2.3.6, 2.3.7 and 2.4.0 (src/api/routes/index.router.ts)."""
        return _json_object(self._request("GET", server_url.rstrip("/") + "/", "", trusted=trusted), "/")

    def find_messages(
        self,
        server_url: str,
        api_key: str,
        instance: str,
        where_key: dict[str, Any],
        *,
        trusted: bool = False,
    ) -> list[dict[str, Any]]:
        """POST /chat/findMessages/{instance} `{"where": {"key": …}, "page": 1, "offset": 25}`: the newest
        stored messages matching the key, newest first. 2.3.x answers `{"messages": {"total", "pages",
        "currentPage", "records": [...]}}` (the Baileys service's fetchMessages); older ones a plain list."""
        body = {"where": {"key": where_key}, "page": 1, "offset": 25}
        url = self._url(server_url, "chat/findMessages", instance)
        payload = _json(self._request("POST", url, api_key, trusted=trusted, json=body))
        messages = payload.get("messages") if isinstance(payload, dict) else payload
        records = messages.get("records") if isinstance(messages, dict) else messages
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    def connection_state(self, server_url: str, api_key: str, instance: str, *, trusted: bool = False) -> str:
        """GET /instance/connectionState/{instance} -> `open`, `connecting`, `close` or `refused`."""
        response = self._request(
            "GET", self._url(server_url, "instance/connectionState", instance), api_key, trusted=trusted
        )
        payload = _json(response)
        inner = payload.get("instance") if isinstance(payload, dict) else None
        state = inner.get("state") if isinstance(inner, dict) else None
        if not isinstance(state, str):
            raise EvolutionError("connectionState answer has no instance.state", body=payload)
        return state

    def connect(
        self, server_url: str, api_key: str, instance: str, *, trusted: bool = False
    ) -> dict[str, Any]:
        """GET /instance/connect/{instance}: starts pairing a closed instance.

        v2 answers `{"pairingCode", "code", "base64"?, "count"}` (the QR code as a data URL when it has one),
        or `{"instance": {"instanceName", "state": "open"}}` when the instance is already connected.
        """
        url = self._url(server_url, "instance/connect", instance)
        return _json_object(self._request("GET", url, api_key, trusted=trusted), "instance/connect")

    def set_webhook(
        self,
        server_url: str,
        api_key: str,
        instance: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        events: tuple[str, ...] = WEBHOOK_EVENTS,
        by_events: bool = False,
        trusted: bool = False,
    ) -> Any:
        """POST /webhook/set/{instance} with the v2.1+ nested body, always with an explicit events list."""
        body = {
            "webhook": {
                "enabled": True,
                "url": url,
                "headers": headers or {},
                "byEvents": by_events,
                "base64": False,
                "events": list(events),
            }
        }
        return _json(
            self._request(
                "POST", self._url(server_url, "webhook/set", instance), api_key, trusted=trusted, json=body
            )
        )

    def find_webhook(self, server_url: str, api_key: str, instance: str, *, trusted: bool = False) -> Any:
        url = self._url(server_url, "webhook/find", instance)
        return _json(self._request("GET", url, api_key, trusted=trusted))
