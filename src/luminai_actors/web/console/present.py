"""View models of the console: rows as the templates and the polling JSON both show them.

A reply's delivery mark comes from our sender (`send_status`) and WhatsApp's receipts (`metadata.
whatsappStatus`, `readAt`): pending/sending, sent ✓, delivered ✓✓, read ✓✓ (blue), or failed with the reason.
"""

from __future__ import annotations

from typing import Any

from luminai_actors.evolution.webhook import status_rank
from luminai_actors.persistence.tables import SEND_FAILED, SEND_PENDING, SEND_SENDING, Agent, TalkMessage
from luminai_actors.services.console_queries import TalkDetail, TalkSummary

MARKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓", "pending": "🕓", "sending": "🕓", "failed": "!"}
STATUS_LABELS = {
    "connected": "Connected",
    "connecting": "Connecting",
    "disconnected": "Disconnected",
    "refused": "Refused (QR limit reached)",
    "license_required": "Evolution server not activated (replies wait)",
    None: "Unknown",
}


def delivery(message: TalkMessage) -> str:
    """received | pending | sending | sent | delivered | read | failed."""
    if message.direction != "outbound":
        return "received"
    if message.send_status == SEND_FAILED:
        return "failed"
    if message.send_status in (SEND_PENDING, SEND_SENDING):
        return str(message.send_status)
    receipt = str(message.meta.get("whatsappStatus") or "")
    if message.read_at is not None or status_rank(receipt) >= status_rank("READ"):
        return "read"
    if status_rank(receipt) >= status_rank("DELIVERY_ACK"):
        return "delivered"
    return "sent"


def _author(message: TalkMessage, agent_name: str | None, contact_name: str | None) -> str:
    if message.direction != "outbound":
        return contact_name or "Lead"
    if message.meta.get("human"):
        via = {"console": "console", "phone": "business phone", "api": "Evolution API"}
        return f"Human ({via.get(str(message.meta.get('sentVia')), 'elsewhere')})"
    return f"{agent_name or 'Agent'} (bot)"


def message_view(message: TalkMessage, agent_name: str | None, contact_name: str | None) -> dict[str, Any]:
    state = delivery(message)
    meta = message.meta
    return {
        "id": str(message.id),
        "direction": "in" if message.direction != "outbound" else "out",
        "author": _author(message, agent_name, contact_name),
        "human": bool(meta.get("human")),
        "body": message.body,
        "messageType": message.message_type,
        "at": (message.sent_at or message.created_at).isoformat(),
        "delivery": state,
        "mark": MARKS.get(state, ""),
        "error": meta.get("whatsappError") if state == "failed" else None,
        "lastError": meta.get("whatsappLastError") if state in ("pending", "sending") else None,
        "attempts": message.send_attempts,
        "retries": len(meta.get("retryHistory") or []),
        "canRetry": state == "failed",
    }


def _step_name(definition: dict[str, Any] | None, step_id: Any) -> str | None:
    for step in (definition or {}).get("steps") or []:
        if step.get("id") == step_id:
            return str(step.get("name") or step_id)
    return str(step_id) if step_id else None


def flow_view(state: dict[str, Any] | None, definition: dict[str, Any] | None) -> dict[str, Any]:
    flow = state or {}
    collected = flow.get("collected") or {}
    invalid = flow.get("invalid") or {}
    handoff = flow.get("handoff") or {}
    return {
        "present": bool(flow),
        "status": flow.get("status"),
        "currentStepId": flow.get("currentStepId"),
        "currentStep": _step_name(definition, flow.get("currentStepId")),
        "askedField": flow.get("askedField"),
        "outcome": flow.get("outcome"),
        "collected": [
            {"field": name, "value": entry.get("value") if isinstance(entry, dict) else entry}
            for name, entry in collected.items()
        ],
        "invalid": [
            {
                "field": name,
                "said": entry.get("value") if isinstance(entry, dict) else None,
                "why": entry.get("error") if isinstance(entry, dict) else str(entry),
            }
            for name, entry in invalid.items()
        ],
        "history": [
            {"step": _step_name(definition, h.get("stepId")), "at": h.get("completedAt")}
            for h in flow.get("history") or []
            if isinstance(h, dict)
        ],
        "handoff": handoff.get("reason") if isinstance(handoff, dict) else None,
    }


def talk_view(detail: TalkDetail) -> dict[str, Any]:
    talk, contact, agent = detail.talk, detail.contact, detail.agent
    contact_name = contact.name if contact is not None else None
    agent_name = agent.name if agent is not None else None
    return {
        "id": str(talk.id),
        "organizationId": str(talk.organization_id),
        "contact": contact_name or "Lead",
        "phone": (contact.mobile_phone or contact.phone) if contact is not None else None,
        "optedOut": contact is not None and contact.opted_out_at is not None,
        "agent": agent_name,
        "agentId": str(agent.id) if agent is not None else None,
        "paused": talk.paused,
        "needsHuman": talk.needs_human,
        "closed": talk.closed_at is not None or talk.status != 0,
        "lastAt": (talk.date_last_message or talk.created_at).isoformat(),
        "flow": flow_view(talk.talk_flow, detail.definition),
        "messages": [message_view(m, agent_name, contact_name) for m in detail.messages],
    }


def summary_view(row: TalkSummary) -> dict[str, Any]:
    flow = row.talk.talk_flow or {}
    return {
        "id": str(row.talk.id),
        "contact": row.contact_name,
        "phone": row.contact_phone,
        "agent": row.agent_name,
        "lastBody": (row.last_body or "")[:140],
        "lastDirection": row.last_direction,
        "lastAt": row.last_at.isoformat(),
        "paused": row.talk.paused,
        "needsHuman": row.talk.needs_human,
        "closed": row.talk.closed_at is not None or row.talk.status != 0,
        "currentStepId": flow.get("currentStepId"),
        "outcome": flow.get("outcome"),
        "failedSends": row.failed_sends,
    }


def agent_view(agent: Agent) -> dict[str, Any]:
    metadata = agent.whatsapp_metadata or {}
    qrcode = metadata.get("qrcode") if isinstance(metadata.get("qrcode"), dict) else None
    image = qrcode.get("base64") if qrcode else None
    options = {k: v for k, v in metadata.items() if k != "qrcode"}
    found = metadata.get("evolutionLicense")
    licence: dict[str, Any] = found if isinstance(found, dict) else {}
    ignore = options.get("ignoreJids")
    return {
        "id": str(agent.id),
        "organizationId": str(agent.organization_id),
        "name": agent.name,
        "active": agent.active,
        "instance": agent.whatsapp_instance_name,
        "phone": agent.whatsapp_phone,
        "serverUrl": agent.whatsapp_server_url,
        "whatsappActive": agent.whatsapp_active,
        "status": agent.whatsapp_status,
        "statusLabel": STATUS_LABELS.get(agent.whatsapp_status, str(agent.whatsapp_status)),
        "lastConnectedAt": agent.whatsapp_last_connected_at.isoformat()
        if agent.whatsapp_last_connected_at
        else None,
        "evolutionVersion": metadata.get("evolutionVersion"),
        "licenceMessage": licence.get("message") if agent.whatsapp_status == "license_required" else None,
        "silence": metadata.get("webhookSilence")
        if isinstance(metadata.get("webhookSilence"), dict)
        else None,
        "hasApiKey": bool(agent.whatsapp_api_key),
        "hasWebhookToken": bool(agent.whatsapp_webhook_token),
        "qrcode": {
            "image": image if isinstance(image, str) and image.startswith("data:image/") else None,
            "code": qrcode.get("code"),
            "pairingCode": qrcode.get("pairingCode"),
            "at": qrcode.get("at"),
        }
        if qrcode
        else None,
        "options": {
            "pauseOnHumanReply": bool(options.get("pauseOnHumanReply", True)),
            "splitMessages": bool(options.get("splitMessages", False)),
            "timePerCharMs": options.get("timePerCharMs"),
            "apiVersion": str(options.get("apiVersion", "2")),
            "ignoreJids": "\n".join(str(j) for j in ignore) if isinstance(ignore, list) else "",
        },
    }
