"""The rules of an inbound WhatsApp message, each stated once (pure functions, no database):

- **skip**: which upserts are not recorded at all (`ignore_reason`: not a chat message, an ignored chat
  kind, not a chat turn) and which chats an agent ignores (`ignored_by_agent`: its `ignoreJids`);
- **identity**: which conversation (actor) a message belongs to (`conversation_key`: instance + one identity
  per person, so every spelling of a number shares one actor) and the lock keys of a person
  (`identity_keys`);
- **side**: whether the business sent it (`is_ours`) and whether a person replying from the business phone
  pauses the bot (`pauses_on_human_reply`);
- **expiry**: when an open talk is over (`talk_expired`, `fresh_after`) and the state it is closed with;
- **dedupe**: one stored message per (agent, WhatsApp message id) — the unique key the statements rely on; a
  redelivery comes back as `InboundOutcome("duplicate", ...)`;
- the stored message itself (`message_type`, `inbound_metadata`).

`services.inbound.record_inbound` applies them; `InboundOutcome` is what it answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.domain.phone import canonical_phone, jid_user, phone_from_jid
from luminai_actors.evolution.webhook import MessageUpsert

DEFAULT_IGNORED_CHATS = frozenset({"group", "broadcast", "newsletter"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    status: str  # "stored" | "duplicate" | "ignored"
    reason: str | None = None
    talk_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    from_business: bool = False  # typed on the business phone, or our own send echoed back
    shared_chat: bool = False  # a group, broadcast or newsletter: recorded, never answered by the bot
    fast: bool = False  # appended to the contact's open talk by one statement (no contact or talk to create)

    @property
    def needs_ai_turn(self) -> bool:
        return self.status == "stored" and not self.from_business and not self.shared_chat


# skip -----------------------------------------------------------------------------------------------------
def ignore_reason(event: MessageUpsert, ignored_chats: frozenset[str] = DEFAULT_IGNORED_CHATS) -> str | None:
    """Why this upsert is not recorded (None when it is); decided before any database work."""
    if event.event not in ("messages.upsert", "send.message"):
        return f"event {event.event} is not a chat message"
    if event.chat_kind in ignored_chats:
        return f"{event.chat_kind} chats are ignored"
    if not event.content.is_chat_turn:
        return f"{event.content.kind} is not a chat turn"
    return None


def ignored_by_agent(metadata: dict[str, Any] | None, event: MessageUpsert) -> bool:
    """The agent's `ignoreJids` (like Evolution's bots): exact JIDs, or suffixes such as `@lid`."""
    patterns = (metadata or {}).get("ignoreJids") or []
    jids = [jid for jid in (event.remote_jid, event.phone_jid, event.lid_jid) if jid]
    return any(
        isinstance(p, str) and p and any(jid == p or (p.startswith("@") and jid.endswith(p)) for jid in jids)
        for p in patterns
    )


# identity -------------------------------------------------------------------------------------------------
def sender_identity(event: MessageUpsert) -> tuple[str | None, str | None]:
    """(phone, LID) of the person in a 1:1 chat: either may be None."""
    return phone_from_jid(event.phone_jid), (jid_user(event.lid_jid) if event.lid_jid else None)


def conversation_key(event: MessageUpsert) -> str:
    """The actor key: instance + one identity per person, so every spelling of a number shares one actor."""
    if event.chat_kind != "user":
        return f"{event.instance}|chat:{event.remote_jid}"
    phone, lid = sender_identity(event)
    if phone is not None:
        return f"{event.instance}|{canonical_phone(phone)}"
    if event.lid_jid:
        return f"{event.instance}|lid:{lid}"
    return f"{event.instance}|jid:{event.remote_jid}"


def identity_keys(phone: str | None, lid: str | None) -> list[str]:
    """The lock keys of one person within an organization (`contact:{org}:` + each), in lock order: one per
    identity, so an event that carries both the phone and the LID serialises with events that carry either,
    and two such events cannot deadlock."""
    return sorted({key for key in (phone and canonical_phone(phone), lid and f"lid:{lid}") if key})


# side -----------------------------------------------------------------------------------------------------
def is_ours(event: MessageUpsert) -> bool:
    """Sent by the business side: typed on its phone (`fromMe`) or sent through Evolution's API."""
    return event.from_me or event.event == "send.message"


def pauses_on_human_reply(metadata: dict[str, Any] | None) -> bool:
    """A person answering from the business phone pauses the bot on that talk (the agent's setting)."""
    return bool((metadata or {}).get("pauseOnHumanReply", True))


# expiry ---------------------------------------------------------------------------------------------------
def talk_expired(last_message: datetime | None, now: datetime, expiry: timedelta | None) -> bool:
    """An open talk idle for longer than the expiry is over: the next message starts a new one."""
    return expiry is not None and last_message is not None and now - last_message > expiry


def fresh_after(now: datetime, expiry: timedelta | None) -> datetime:
    """The same rule as a bound for SQL: a talk whose last message is at or after this is not expired."""
    return now - expiry if expiry is not None else _EPOCH


def expired_flow(talk_flow: dict[str, Any] | None) -> dict[str, Any]:
    """The TalkFlow state an expired talk is closed with."""
    return {**(talk_flow or {}), "closedReason": "expired"}


# the stored message ---------------------------------------------------------------------------------------
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
