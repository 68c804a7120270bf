"""record_inbound: one WhatsApp message from a lead becomes a stored talk message, exactly once.

In one transaction: find the agent that owns the instance, the contact (by every spelling of the phone, or by
the WhatsApp LID), the open WhatsApp talk (or create them), and insert the message. The unique constraint on
(agent, WhatsApp message id) makes a redelivered webhook a no-op; a unique-constraint race with another
process is resolved by reading again. The caller answers the webhook 200 only after this returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.phone import canonical_phone, jid_user, phone_from_jid
from luminai_actors.errors import Conflict
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence.tables import (
    SEND_SENDING,
    SEND_SENT,
    Agent,
    Contact,
    Talk,
    TalkMessage,
)
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory
from luminai_actors.services.identity import (
    LEAD_SOURCE,
    ORIGIN,
    default_company,
    find_or_create_contact,
    find_or_create_talk,
)


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


def _is_ours(event: MessageUpsert) -> bool:
    """Sent by the business side: typed on its phone (`fromMe`) or sent through Evolution's API."""
    return event.from_me or event.event == "send.message"


def _ignored_by_agent(agent: Agent, event: MessageUpsert) -> bool:
    """The agent's `ignoreJids` (like Evolution's bots): exact JIDs, or suffixes such as `@lid`."""
    patterns = (agent.whatsapp_metadata or {}).get("ignoreJids") or []
    jids = [jid for jid in (event.remote_jid, event.phone_jid, event.lid_jid) if jid]
    return any(
        isinstance(p, str) and p and any(jid == p or (p.startswith("@") and jid.endswith(p)) for jid in jids)
        for p in patterns
    )


def pauses_on_human_reply(agent: Agent) -> bool:
    return bool((agent.whatsapp_metadata or {}).get("pauseOnHumanReply", True))


def conversation_key(event: MessageUpsert) -> str:
    """The actor key: instance + one identity per person, so every spelling of a number shares one actor."""
    if event.chat_kind != "user":
        return f"{event.instance}|chat:{event.remote_jid}"
    phone = phone_from_jid(event.phone_jid)
    if phone is not None:
        return f"{event.instance}|{canonical_phone(phone)}"
    if event.lid_jid:
        return f"{event.instance}|lid:{jid_user(event.lid_jid)}"
    return f"{event.instance}|jid:{event.remote_jid}"


def record_inbound(
    uow_factory: UnitOfWorkFactory,
    event: MessageUpsert,
    now: Callable[[], datetime] | None = None,
    *,
    ignored_chats: frozenset[str] = DEFAULT_IGNORED_CHATS,
    talk_expiry: timedelta | None = None,
) -> InboundOutcome:
    reason = ignore_reason(event, ignored_chats)
    if reason is not None:
        return InboundOutcome("ignored", reason)
    clock = now or (lambda: datetime.now(UTC))
    try:
        return _record(uow_factory, event, clock(), talk_expiry)
    except Conflict:
        # Another process inserted the same contact, talk or message between our read and our write.
        # Everything it wrote is now visible: a second pass finds it instead of inserting.
        return _record(uow_factory, event, clock(), talk_expiry)


def _record(
    uow_factory: UnitOfWorkFactory, event: MessageUpsert, now: datetime, talk_expiry: timedelta | None = None
) -> InboundOutcome:
    with uow_factory() as uow:
        agent = uow.repo.agent_by_instance(event.instance)
        if agent is None or not agent.whatsapp_active or not agent.active:
            return InboundOutcome("ignored", f"no active agent for instance {event.instance!r}")
        existing = uow.repo.message_by_whatsapp_id(agent.id, event.message_id)
        if existing is not None:
            return InboundOutcome("duplicate", None, existing.talk_id, existing.id, existing.from_contact_id)
        if _ignored_by_agent(agent, event):
            return InboundOutcome("ignored", "the agent's ignoreJids lists this chat")
        if event.chat_kind != "user":
            return _record_shared_chat(uow, agent, event, now)
        phone = phone_from_jid(event.phone_jid)
        lid = jid_user(event.lid_jid) if event.lid_jid else None
        if phone is None and lid is None:
            return InboundOutcome("ignored", "sender has neither a phone number nor a LID")
        # One lock per identity, taken in sorted order: an event that carries both the phone and the LID
        # serialises with events that carry either, and two such events cannot deadlock.
        identities = sorted(
            {
                f"contact:{agent.organization_id}:{key}"
                for key in (phone and canonical_phone(phone), lid and f"lid:{lid}")
                if key
            }
        )
        for key in identities:
            uow.lock(key)
        contact = find_or_create_contact(uow, agent, event, phone, lid, now, business_side=_is_ours(event))
        talk = find_or_create_talk(uow, agent, contact, event, now, talk_expiry)
        if _is_ours(event):
            return _record_business_message(uow, agent, contact, talk, event, now)
        message = TalkMessage(
            id=uuid7(),
            organization_id=agent.organization_id,
            talk_id=talk.id,
            agent_id=agent.id,
            from_contact_id=contact.id,
            direction="inbound",
            channel="whatsapp",
            body=event.content.text,
            message_type=message_type(event),
            whatsapp_message_id=event.message_id,
            meta=inbound_metadata(event),
            sent_at=event.sent_at or now,
            created_at=now,
        )
        uow.repo.add(message)
        uow.commit()
        known = KnownConversation(
            agent.id,
            agent.organization_id,
            agent.updated_at,
            contact.id,
            contact.phone,
            contact.whatsapp_lid,
            talk.id,
        )
        return InboundOutcome("stored", None, talk.id, message.id, contact.id, known=known)


def _record_shared_chat(uow: UnitOfWork, agent: Agent, event: MessageUpsert, now: datetime) -> InboundOutcome:
    """A group/broadcast/newsletter message: kept on the chat's own contact and talk, never answered."""
    org = agent.organization_id
    uow.lock(f"chat:{org}:{event.remote_jid}")
    chat = uow.repo.contact_by_jid(org, event.remote_jid)
    if chat is None:
        chat = Contact(
            id=uuid7(),
            organization_id=org,
            company_id=default_company(uow, org, now).id,
            name=f"WhatsApp {event.chat_kind} {jid_user(event.remote_jid)}",
            whatsapp_jid=event.remote_jid,
            lead_source=LEAD_SOURCE,
            origin=ORIGIN,
            created_at=now,
            updated_at=now,
        )
        uow.repo.add(chat)
        uow.repo.flush()
    chat.last_contact_date = now
    sender: Contact | None = None
    phone = phone_from_jid(event.phone_jid)
    lid = jid_user(event.lid_jid) if event.lid_jid else None
    if not event.from_me and (phone or lid):
        sender = find_or_create_contact(uow, agent, event, phone, lid, now, business_side=_is_ours(event))
    talk = find_or_create_talk(uow, agent, chat, event, now)
    message = TalkMessage(
        id=uuid7(),
        organization_id=org,
        talk_id=talk.id,
        agent_id=agent.id,
        from_contact_id=sender.id if sender else None,
        direction="outbound" if _is_ours(event) else "inbound",
        channel="whatsapp",
        body=event.content.text,
        message_type=message_type(event),
        whatsapp_message_id=event.message_id,
        meta={**inbound_metadata(event), "chatKind": event.chat_kind, "participant": event.participant_jid},
        sent_at=event.sent_at or now,
        processed_at=now,  # nothing for the bot to answer: keeps it out of AI turns and the recovery sweep
        created_at=now,
    )
    uow.repo.add(message)
    uow.commit()
    return InboundOutcome("stored", None, talk.id, message.id, chat.id, shared_chat=True)


def _record_business_message(
    uow: UnitOfWork, agent: Agent, contact: Contact, talk: Talk, event: MessageUpsert, now: datetime
) -> InboundOutcome:
    """Our own send echoed back (matched to the reply in flight), or a person typing on the business phone."""
    ours = uow.repo.unmatched_outbound(talk.id, event.content.text)
    if ours is not None:
        # Evolution reported the id of a reply our sender has not recorded yet (or never will: its worker
        # died after Evolution accepted). Recording it here settles the send; no second copy is stored.
        ours.whatsapp_message_id = event.message_id
        if ours.send_status == SEND_SENDING:
            ours.send_status = SEND_SENT
            ours.send_lease_until = None
            ours.sent_at = ours.sent_at or now
            ours.meta = {
                **ours.meta,
                "whatsappSent": True,
                "whatsappMessageId": event.message_id,
                "whatsappReconciledBy": event.event,
            }
        uow.commit()
        return InboundOutcome("duplicate", None, talk.id, ours.id, contact.id, from_business=True)
    message = TalkMessage(
        id=uuid7(),
        organization_id=agent.organization_id,
        talk_id=talk.id,
        agent_id=agent.id,
        from_contact_id=None,
        from_agent_id=None,
        direction="outbound",
        channel="whatsapp",
        body=event.content.text,
        message_type=message_type(event),
        whatsapp_message_id=event.message_id,
        meta={
            **inbound_metadata(event),
            "human": True,
            "sentVia": "api" if event.event == "send.message" else "phone",
        },
        send_status=SEND_SENT,
        sent_at=event.sent_at or now,
        created_at=now,
    )
    uow.repo.add(message)
    for waiting in uow.repo.pending_inbound(talk.id):  # a person answered them: the bot must not, later
        waiting.processed_at = now
    if pauses_on_human_reply(agent) and not talk.paused:
        talk.paused = True
        talk.talk_flow = {
            **(talk.talk_flow or {}),
            "handoff": {"reason": "a person replied from the business phone", "at": now.isoformat()},
        }
    uow.commit()
    return InboundOutcome("stored", None, talk.id, message.id, contact.id, from_business=True)


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
