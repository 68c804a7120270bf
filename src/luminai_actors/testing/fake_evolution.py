"""Local fake of Evolution API v2 (2.3.x): sendText, connectionState, connect (QR code) and webhook set/find,
plus faults. `version="2.4.0"` adds 2.4's behaviours: sendText's `messageId` and the `X-Instance-ID`,
`X-Instance-Name`, `X-Event-Type` and `X-Timestamp` webhook headers; `require_licence()` its licence gate.
`GET /` answers the version, as every real one does.

Status codes, guard order and error envelopes follow /work/shared/reference/evolution-api.md sections 4-5,
so the service's Evolution client can be tested against real HTTP. `post_webhook` plays the other
direction: it delivers a webhook to our service the way Evolution's axios client does.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

from luminai_actors.testing.evolution_schemas import (
    WEBHOOK_EVENTS,
    licence_gate,
    send_text_errors,
    webhook_errors,
)
from luminai_actors.testing.fake_qr import qr_data_url
from luminai_actors.testing.http import Fault, HttpBase, JsonResponse, RecordedRequest

__all__ = ["WEBHOOK_EVENTS", "FakeEvolutionApi"]

_STATES = frozenset({"open", "connecting", "close", "refused"})
_SEND_TEXT = "/message/sendText/"
_CONNECTION_CLOSED = ["Error: Connection Closed"]  # 2.3.x wording when the socket is down
_ERROR_NAMES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


def _envelope(status: int, message: Any) -> JsonResponse:
    """Evolution's global error handler shape: {status, error, response: {message}}."""
    error = _ERROR_NAMES.get(status, "Error")
    return JsonResponse(status, {"status": status, "error": error, "response": {"message": message}})


@dataclass
class _Instance:
    name: str
    api_key: str
    state: str
    instance_id: str
    webhook: dict[str, Any] | None = None


class FakeEvolutionApi(HttpBase):
    """Evolution API v2 as seen over HTTP by our service (instances are registered with `add_instance`)."""

    def __init__(self, *, global_api_key: str | None = None, port: int = 0, version: str = "2.3.6") -> None:
        super().__init__(port=port)
        self.version = version  # `GET /` names it; "2.4.0" and later: messageId, X-* webhook headers
        self.licence_required = False  # 2.4.0's gate on a server not activated (`require_licence`)
        self._global_api_key = global_api_key
        self._instances: dict[str, _Instance] = {}
        self._not_on_whatsapp: set[str] = set()
        self._sent: list[dict[str, Any]] = []
        self._stored: list[tuple[str, dict[str, Any]]] = []  # (instance, message) as findMessages reads them
        self._state_lock = threading.Lock()
        self.emitted_failures = 0
        self._qr_counts: dict[str, int] = {}

    def add_instance(self, name: str, api_key: str, state: str = "open") -> None:
        _check_state(state)
        with self._state_lock:
            self._instances[name] = _Instance(name, api_key, state, str(uuid.uuid4()))

    def set_state(self, name: str, state: str) -> None:
        _check_state(state)
        with self._state_lock:
            self._instances[name].state = state

    def require_licence(self, required: bool = True) -> None:
        """Play Evolution 2.4.0 before activation: every route but `/` and `/license/*` answers the gate."""
        self.licence_required = required

    @property
    def at_least_2_4(self) -> bool:
        return tuple(int(p) for p in self.version.split(".")[:2] if p.isdigit()) >= (2, 4)

    def mark_not_on_whatsapp(self, number: str) -> None:
        with self._state_lock:
            self._not_on_whatsapp.add(_digits(number))

    def fail_next(self, count: int, status: int = 500, body: Any = None) -> None:
        """The next `count` sendText calls answer `status` (default body: a "Connection Closed" envelope)."""
        if body is None:
            body = _envelope(status, _CONNECTION_CLOSED).body
        self._queue_faults(count, Fault("fail", JsonResponse(status, body)))

    def hang_next(self, count: int, seconds: float) -> None:
        """The next `count` sendText calls wait `seconds` before answering normally."""
        self._queue_faults(count, Fault("hang", seconds=seconds))

    def answer_late_next(self, count: int, seconds: float) -> None:
        """The next `count` sendText calls are carried out at once (the message is sent and stored) and
        answered only `seconds` later: Evolution slower than the caller's timeout."""
        self._queue_faults(count, Fault("late", seconds=seconds))

    def drop_next(self, count: int) -> None:
        """The next `count` sendText calls get their connection closed without a response."""
        self._queue_faults(count, Fault("drop"))

    def sent_messages(self) -> list[dict[str, Any]]:
        """Bodies of sendText calls answered 201, in order, each with `_instance` added."""
        with self._state_lock:
            return [dict(message) for message in self._sent]

    def sendtext_attempts(self, instance: str | None = None) -> list[RecordedRequest]:
        """Every sendText request received (whatever the outcome), optionally for one instance."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.route.startswith(_SEND_TEXT)
            and (instance is None or unquote(r.route[len(_SEND_TEXT) :]) == instance)
        ]

    def webhook(self, name: str) -> dict[str, Any] | None:
        """The webhook row stored for `name` by /webhook/set, if any."""
        with self._state_lock:
            row = self._instances[name].webhook
            return None if row is None else dict(row)

    def clear(self) -> None:
        super().clear()
        with self._state_lock:
            self._sent.clear()
            self._stored.clear()

    def post_webhook(
        self,
        target_url: str,
        payload: Any,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, object]:
        """POST `payload` to our service as Evolution's axios client does; return status and body."""
        sent = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain, */*",
            "User-Agent": "axios/1.7.9",
            **(headers or {}),
        }
        with httpx.Client(timeout=timeout) as client:
            response = client.post(target_url, content=json.dumps(payload).encode("utf-8"), headers=sent)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def handle(self, request: RecordedRequest) -> JsonResponse | None:
        if request.method == "GET" and request.route == "/":
            return JsonResponse(200, self._index())
        if self.licence_required and not request.route.startswith("/license/"):
            return licence_gate(self.url)
        parts = request.route.strip("/").split("/")
        if len(parts) == 3:
            route, name = (request.method, parts[0], parts[1]), unquote(parts[2])
            if route == ("POST", "message", "sendText"):
                return self._send_text(request, name)
            if route == ("GET", "instance", "connectionState"):
                return self._guard(request, name) or self._connection_state(name)
            if route == ("GET", "instance", "connect"):
                return self._guard(request, name) or self._connect(name)
            if route == ("POST", "webhook", "set"):
                return self._guard(request, name) or self._set_webhook(request, name)
            if route == ("POST", "chat", "findMessages"):
                return self._guard(request, name) or self._find_messages(request, name)
            if route == ("GET", "webhook", "find"):
                return self._guard(request, name) or JsonResponse(200, self.webhook(name))
        return _envelope(404, [f"Cannot {request.method} {request.route}"])

    def _guard(self, request: RecordedRequest, name: str) -> JsonResponse | None:
        # Evolution checks that the instance exists before it checks the key (index.router.ts).
        with self._state_lock:
            instance = self._instances.get(name)
        if instance is None:
            return _envelope(404, [f'The "{name}" instance does not exist'])
        key = request.headers.get("apikey")
        if key is None or (key != instance.api_key and key != self._global_api_key):
            return _envelope(401, "Unauthorized")
        return None

    def _send_text(self, request: RecordedRequest, name: str) -> JsonResponse | None:
        fault = self._take_fault()
        if fault is not None and fault.kind == "late":
            answer = self._carry_out(request, name)
            return answer if self.pause(fault.seconds) else None
        if fault is not None:
            if fault.kind == "drop":
                return None
            if fault.kind == "fail":
                return fault.response
            if not self.pause(fault.seconds):
                return None  # stopped while holding the request
        return self._carry_out(request, name)

    def _carry_out(self, request: RecordedRequest, name: str) -> JsonResponse | None:
        denied = self._guard(request, name)
        if denied is not None:
            return denied
        body = request.json
        if not isinstance(body, dict):
            return _envelope(400, ["instance is not of a type(s) object"])
        errors = send_text_errors(body)
        if errors:
            return _envelope(400, errors)
        if not body["text"].strip():
            return _envelope(400, ["Text is required"])
        with self._state_lock:
            instance = self._instances[name]
            state, instance_id = instance.state, instance.instance_id
            on_whatsapp = _digits(body["number"]) not in self._not_on_whatsapp
        if state != "open":
            return _envelope(500, _CONNECTION_CLOSED)
        jid = _jid(body["number"])
        if not on_whatsapp:
            return _envelope(400, [{"jid": jid, "exists": False, "number": _digits(body["number"])}])
        # Evolution shows "composing" for the whole delay and only then answers.
        if "delay" in body and not self.pause(body["delay"] / 1000):
            return None  # stopped while holding the request
        sent = _sent_message(jid, body["text"], instance_id)
        if self.at_least_2_4 and isinstance(body.get("messageId"), str):
            sent["key"]["id"] = body["messageId"]  # 2.4.0: the caller's id is the WhatsApp message id
        with self._state_lock:
            self._sent.append({**body, "_instance": name})
            self._stored.append((name, sent))
        # Like Evolution (channel.service sendDataWebhook without await): the event goes out on its own,
        # concurrently with the HTTP answer, to the instance webhook when it subscribes to SEND_MESSAGE.
        self.emit(name, "send.message", sent)
        return JsonResponse(201, sent)

    def emit(self, name: str, event: str, data: Any) -> threading.Thread | None:
        """POST `event` to the configured instance webhook (if enabled and subscribed), in the background."""
        with self._state_lock:
            hook = dict(self._instances[name].webhook or {})
        upper = event.replace(".", "_").replace("-", "_").upper()
        if not hook.get("enabled") or upper not in (hook.get("events") or []):
            return None
        url = str(hook["url"]) + (
            "/" + upper.lower().replace("_", "-") if hook.get("webhookByEvents") else ""
        )
        payload = {
            "event": event,
            "instance": name,
            "data": data,
            "destination": url,
            "date_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sender": None,
            "server_url": self.url,
            "apikey": None,
        }
        headers = {str(k): str(v) for k, v in (hook.get("headers") or {}).items()}
        if self.at_least_2_4:  # webhook.controller.ts (2.4.0-rc2): fixed headers after the configured ones
            with self._state_lock:
                instance_id = self._instances[name].instance_id
            headers.update(
                {
                    "X-Instance-ID": instance_id,
                    "X-Instance-Name": name,
                    "X-Event-Type": event,
                    "X-Timestamp": str(int(time.time() * 1000)),
                }
            )

        def deliver() -> None:
            # Evolution retries 5xx, 429 and transport errors with backoff (reference §1.6), not other 4xx;
            # the delays here are short so tests stay quick.
            for attempt in range(6):
                try:
                    status, _ = self.post_webhook(url, payload, headers=headers)
                except Exception:
                    status = 0
                if status != 0 and (status < 300 or (400 <= status < 500 and status not in (408, 429))):
                    return
                if not self.pause(0.1 * 2**attempt):
                    return
            self.emitted_failures += 1

        thread = threading.Thread(target=deliver, name=f"fake-evolution-emit-{event}", daemon=True)
        thread.start()
        return thread

    def _find_messages(self, request: RecordedRequest, name: str) -> JsonResponse:
        """chat.controller fetchMessages (2.3.x): the messages stored for the instance that match
        `where.key`, newest first, as `{"messages": {"total", "pages", "currentPage", "records"}}`."""
        body = request.json if isinstance(request.json, dict) else {}
        where = body.get("where")
        key = where.get("key") if isinstance(where, dict) else None
        key = key if isinstance(key, dict) else {}
        with self._state_lock:
            stored = [m for n, m in reversed(self._stored) if n == name]
        found = [m for m in stored if all(m["key"].get(k) == v for k, v in key.items())]
        page = found[: int(body.get("offset") or 50)]
        return JsonResponse(
            200, {"messages": {"total": len(found), "pages": 1, "currentPage": 1, "records": page}}
        )

    def _index(self) -> dict[str, Any]:
        """src/api/routes/index.router.ts, the same in 2.3.6, 2.3.7 and 2.4.0-rc2."""
        return {
            "status": 200,
            "message": "Welcome to the Evolution API, it is working!",
            "version": self.version,
            "clientName": "evolution",
            "manager": f"{self.url}/manager",
            "documentation": "https://doc.evolution-api.com",
            "whatsappWebVersion": "2.3000.1023204200",
        }

    def _connection_state(self, name: str) -> JsonResponse:
        with self._state_lock:
            state = self._instances[name].state
        return JsonResponse(200, {"instance": {"instanceName": name, "state": state}})

    def _connect(self, name: str) -> JsonResponse:
        """instance.controller connectToWhatsapp: an open instance answers its state; any other starts
        pairing (state `connecting`) and answers the QR code, also sent as `qrcode.updated`."""
        with self._state_lock:
            instance = self._instances[name]
            if instance.state == "open":
                return JsonResponse(200, {"instance": {"instanceName": name, "state": "open"}})
            instance.state = "connecting"
            count = self._qr_counts[name] = self._qr_counts.get(name, 0) + 1
        code = f"2@{secrets.token_urlsafe(24)},{instance.instance_id},{count}"
        qrcode = {"pairingCode": None, "code": code, "base64": qr_data_url(code), "count": count}
        self.emit(name, "qrcode.updated", {"qrcode": {"instance": name, **qrcode}})
        return JsonResponse(200, qrcode)

    def _set_webhook(self, request: RecordedRequest, name: str) -> JsonResponse:
        errors = webhook_errors(request.json)
        if errors:
            return _envelope(400, errors)
        hook: dict[str, Any] = request.json["webhook"]
        enabled: bool = hook["enabled"]
        events = hook.get("events")
        if enabled and events is None:
            # The real controller reads events.length unguarded; keep the bug so clients learn to send events.
            return _envelope(500, "Cannot read properties of undefined (reading 'length')")
        if not enabled:
            events = []
        elif not events:
            events = list(WEBHOOK_EVENTS)  # an empty list subscribes to everything
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._state_lock:
            instance = self._instances[name]
            previous = instance.webhook or {}
            instance.webhook = {
                "id": previous.get("id") or "cm" + secrets.token_hex(12)[:23],
                "url": hook["url"],
                "headers": hook.get("headers"),
                "enabled": enabled,
                "events": events,
                "webhookByEvents": bool(hook.get("byEvents", False)),
                "webhookBase64": bool(hook.get("base64", False)),
                "createdAt": previous.get("createdAt") or now,
                "updatedAt": now,
                "instanceId": instance.instance_id,
            }
            return JsonResponse(201, dict(instance.webhook))


def _check_state(state: str) -> None:
    if state not in _STATES:
        raise ValueError(f"state must be one of {sorted(_STATES)}, not {state!r}")


def _digits(number: str) -> str:
    local = number.split("@", 1)[0].split(":", 1)[0]
    return "".join(ch for ch in local if ch not in " +()")


def _jid(number: str) -> str:
    return number if "@" in number else f"{_digits(number)}@s.whatsapp.net"


def _sent_message(jid: str, text: str, instance_id: str) -> dict[str, Any]:
    """The prepareMessage() shape Evolution returns for a sent text (same as send.message data)."""
    return {
        "key": {"remoteJid": jid, "fromMe": True, "id": "3EB0" + secrets.token_hex(9).upper()},
        "pushName": "Você",
        "status": "PENDING",
        "message": {"conversation": text},
        "contextInfo": {"mentionedJid": [], "groupMentions": []},
        "messageType": "conversation",
        "messageTimestamp": int(time.time()),
        "instanceId": instance_id,
        "source": "web",
    }
