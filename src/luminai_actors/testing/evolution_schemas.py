"""The request validation of Evolution API v2's routes the fake serves, worded like Evolution's jsonschema
validator (src/validate/*.schema.ts): `FakeEvolutionApi` answers 400 with these messages; and 2.4.0's
licence gate answer."""

from __future__ import annotations

from typing import Any

from luminai_actors.testing.http import JsonResponse

# EventController.events: the only values /webhook/set accepts.
WEBHOOK_EVENTS: tuple[str, ...] = (
    "APPLICATION_STARTUP", "CALL", "CHATS_DELETE", "CHATS_SET", "CHATS_UPDATE", "CHATS_UPSERT",
    "CONNECTION_UPDATE", "CONTACTS_SET", "CONTACTS_UPDATE", "CONTACTS_UPSERT", "GROUP_PARTICIPANTS_UPDATE",
    "GROUP_UPDATE", "GROUPS_UPSERT", "LABELS_ASSOCIATION", "LABELS_EDIT", "LOGOUT_INSTANCE",
    "MESSAGES_DELETE", "MESSAGES_EDITED", "MESSAGES_SET", "MESSAGES_UPDATE", "MESSAGES_UPSERT",
    "PRESENCE_UPDATE", "QRCODE_UPDATED", "REMOVE_INSTANCE", "SEND_MESSAGE", "SEND_MESSAGE_UPDATE",
    "STATUS_INSTANCE", "TYPEBOT_CHANGE_STATUS", "TYPEBOT_START",
)  # fmt: skip


def send_text_errors(body: dict[str, Any]) -> list[str]:
    """textMessageSchema failures, worded like Evolution's jsonschema-based validator."""
    errors = [f'instance requires property "{prop}"' for prop in ("number", "text") if prop not in body]
    if "number" in body and not isinstance(body["number"], str):
        errors.append("Invalid format")
    if "text" in body and not isinstance(body["text"], str):
        errors.append("text is not of a type(s) string")
    if "delay" in body and (not isinstance(body["delay"], int) or isinstance(body["delay"], bool)):
        errors.append("delay is not of a type(s) integer")
    return errors


def webhook_errors(body: Any) -> list[str]:
    """webhookSchema failures for the nested 2.1+ body."""
    if not isinstance(body, dict):
        return ["instance is not of a type(s) object"]
    if "webhook" not in body:
        return ['instance requires property "webhook"']
    hook = body["webhook"]
    if not isinstance(hook, dict):
        return ["webhook is not of a type(s) object"]
    errors = [f'webhook requires property "{prop}"' for prop in ("enabled", "url") if prop not in hook]
    for prop in ("enabled", "byEvents", "base64"):
        if prop in hook and not isinstance(hook[prop], bool):
            errors.append(f"webhook.{prop} is not of a type(s) boolean")
    url = hook.get("url")
    if "url" in hook and not isinstance(url, str):
        errors.append("webhook.url is not of a type(s) string")
    elif url == "":
        errors.append("webhook.url does not meet minimum length of 1")
    if "headers" in hook and not isinstance(hook["headers"], dict):
        errors.append("webhook.headers is not of a type(s) object")
    events = hook.get("events")
    if events is not None and not isinstance(events, list):
        errors.append("webhook.events is not of a type(s) array")
    elif events:
        allowed = ",".join(WEBHOOK_EVENTS)
        errors += [
            f"webhook.events[{i}] is not one of enum values: {allowed}"
            for i, event in enumerate(events)
            if event not in WEBHOOK_EVENTS
        ]
    return errors


def licence_gate(base_url: str) -> JsonResponse:
    """src/licensing/runtime.ts (2.4.0-rc2) gateMiddleware's answer."""
    manager = f"{base_url}/manager/login"
    docs = "https://docs.evolutionfoundation.com.br/licensing"
    return JsonResponse(
        503,
        {
            "error": "service not activated",
            "code": "LICENSE_REQUIRED",
            "register_url": manager,
            "instance_id": "5f0c3f1e-0000-4000-8000-000000000001",
            "docs_url": docs,
            "message": f"This Evolution API instance is not activated. Open {manager} to activate, or set "
            f"AUTHENTICATION_API_KEY in your .env with a valid licensing key. Docs: {docs}",
        },
    )
