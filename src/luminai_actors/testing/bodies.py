"""Webhook bodies as Evolution API 2.3 posts them, for tests (`LuminaiHarness.message` builds them here)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from luminai_actors.web.app import WEBHOOK_PATH


def upsert_body(
    instance: str,
    text: str,
    *,
    server_url: str,
    phone: str,
    message_id: str | None = None,
    push_name: str | None = "Lead",
    from_me: bool = False,
    lid: str | None = None,
) -> dict[str, Any]:
    """A `messages.upsert` webhook body for a text message, shaped like Evolution 2.3's.

    `phone` is the lead's number in any spelling (`+55 11 98765-4321` works). With `lid` (digits or
    `…@lid`) the chat is addressed by the WhatsApp LID as 2.3.5+ sends it: `remoteJid` is the LID,
    `remoteJidAlt` the phone JID, `addressingMode` `lid`. `from_me=True` is a message typed on the
    business phone. `message_id` defaults to a fresh WhatsApp-web-style id.
    """
    phone_jid = "".join(ch for ch in phone if ch.isdigit()) + "@s.whatsapp.net"
    key: dict[str, Any]
    if lid is None:
        key = {"remoteJid": phone_jid, "fromMe": from_me, "id": "", "addressingMode": "pn"}
    else:
        lid_jid = lid if lid.endswith("@lid") else f"{lid}@lid"
        key = {"remoteJid": lid_jid, "remoteJidAlt": phone_jid, "fromMe": from_me, "id": ""}
        key["addressingMode"] = "lid"
    key["id"] = message_id or "3EB0" + secrets.token_hex(9).upper()
    now = datetime.now(UTC)
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": key,
            "pushName": push_name,
            "status": "SERVER_ACK" if from_me else "DELIVERY_ACK",
            "message": {"conversation": text},
            "messageType": "conversation",
            "messageTimestamp": int(now.timestamp()),
            "instanceId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"luminai-harness:{instance}")),
            "source": "web" if from_me else "android",
        },
        "destination": "http://testserver" + WEBHOOK_PATH,
        "date_time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "sender": None,
        "server_url": server_url,
        "apikey": None,
    }
