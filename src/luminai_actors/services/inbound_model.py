"""What recording a lead's message produces and the pure rules both inbound paths share.

`InboundOutcome` (and the `KnownConversation` it carries for `services.inbound_fast`), which upserts are not
recorded at all, which side a message is from, the agent's `ignoreJids`, and the message row itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from luminai_actors.domain.ids import uuid7
from luminai_actors.evolution.webhook import MessageUpsert


@dataclass(frozen=True, slots=True)
class KnownConversation:
    """What storing a lead's message learned: enough to store the next one without looking anything up."""

    agent_id: uuid.UUID
    organization_id: uuid.UUID
    agent_updated_at: datetime
    contact_id: uuid.UUID
    phone: str | None
    lid: str | None
    talk_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    status: str  # "stored" | "duplicate" | "ignored"
    reason: str | None = None
    talk_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    from_business: bool = False  # typed on the business phone, or our own send echoed back
    shared_chat: bool = False  # a group, broadcast or newsletter: recorded, never answered by the bot
    known: KnownConversation | None = None  # set when a lead's message was stored (see services.inbound_fast)
    fast: bool = False  # stored by the known-conversation fast path

    @property
    def needs_ai_turn(self) -> bool:
        return self.status == "stored" and not self.from_business and not self.shared_chat


DEFAULT_IGNORED_CHATS = frozenset({"group", "broadcast", "newsletter"})


def ignore_reason(event: MessageUpsert, ignored_chats: frozenset[str] = DEFAULT_IGNORED_CHATS) -> str | None:
    """Why this upsert is not recorded (None when it is); decided before any database work."""
    if event.event not in ("messages.upsert", "send.message"):
        return f"event {event.event} is not a chat message"
    if event.chat_kind in ignored_chats:
        return f"{event.chat_kind} chats are ignored"
    if not event.content.is_chat_turn:
        return f"{event.content.kind} is not a chat turn"
    return None


def is_ours(event: MessageUpsert) -> bool:
    """Sent by the business side: typed on its phone (`fromMe`) or sent through Evolution's API."""
    return event.from_me or event.event == "send.message"


def ignored_by_metadata(metadata: dict[str, Any] | None, event: MessageUpsert) -> bool:
    """The agent's `ignoreJids` (like Evolution's bots): exact JIDs, or suffixes such as `@lid`."""
    patterns = (metadata or {}).get("ignoreJids") or []
    jids = [jid for jid in (event.remote_jid, event.phone_jid, event.lid_jid) if jid]
    return any(
        isinstance(p, str) and p and any(jid == p or (p.startswith("@") and jid.endswith(p)) for jid in jids)
        for p in patterns
    )


def lead_message_row(
    org: uuid.UUID,
    agent_id: uuid.UUID,
    talk_id: uuid.UUID,
    contact_id: uuid.UUID,
    event: MessageUpsert,
    now: datetime,
) -> dict[str, Any]:
    """A lead's message as a talk_message row, by attribute name (the ORM path as `TalkMessage(**row)`)."""
    return {
        "id": uuid7(),
        "organization_id": org,
        "talk_id": talk_id,
        "agent_id": agent_id,
        "from_contact_id": contact_id,
        "direction": "inbound",
        "channel": "whatsapp",
        "body": event.content.text,
        "message_type": message_type(event),
        "whatsapp_message_id": event.message_id,
        "meta": inbound_metadata(event),
        "sent_at": event.sent_at or now,
        "created_at": now,
    }


def message_type(event: MessageUpsert) -> str:
    kind = event.content.kind
    return "text" if kind == "text" else event.content.message_type


def inbound_metadata(event: MessageUpsert) -> dict[str, object]:
    meta: dict[str, object] = {
        "whatsappMessageId": event.message_id,
        "instanceName": event.instance,
        "remoteJid": event.remote_jid,
        "pushName": event.push_name,
        "messageType": event.content.message_type,
    }
    if event.lid_jid:
        meta["lid"] = event.lid_jid
    if event.content.media:
        meta["media"] = dict(event.content.media)
    if event.quoted_message_id:
        meta["quotedMessageId"] = event.quoted_message_id
    if event.source:
        meta["source"] = event.source
    return meta
