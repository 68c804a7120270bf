"""record_inbound: one WhatsApp message from a lead becomes a stored talk message, exactly once.

In one transaction: find the agent that owns the instance, the contact (by every spelling of the phone, or by
the WhatsApp LID), the open WhatsApp talk (or create them), and insert the message. The unique constraint on
(agent, WhatsApp message id) makes a redelivered webhook a no-op; a unique-constraint race with another
process is resolved by reading again. The caller answers the webhook 200 only after this returns.

On PostgreSQL a lead's message in a 1:1 chat first tries the lead hot path (`services.inbound_lead`: three
SQLAlchemy Core statements instead of the ORM's 8 to 14, the same rows); what it does not cover is rolled
back before anything is written and decided by the ORM path below, in a new transaction. The outcome type
and the rules both paths share are in `services.inbound_model` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
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
    identity_keys,
)
from luminai_actors.services.inbound_lead import lead_identity, record_lead
from luminai_actors.services.inbound_model import (
    DEFAULT_IGNORED_CHATS,
    InboundOutcome,
    KnownConversation,
    ignore_reason,
    ignored_by_metadata,
    inbound_metadata,
    is_ours,
    lead_message_row,
    message_type,
)

__all__ = [
    "DEFAULT_IGNORED_CHATS",
    "InboundOutcome",
    "KnownConversation",
    "conversation_key",
    "ignore_reason",
    "inbound_metadata",
    "message_type",
    "pauses_on_human_reply",
    "record_inbound",
]


def _ignored_by_agent(agent: Agent, event: MessageUpsert) -> bool:
    return ignored_by_metadata(agent.whatsapp_metadata, event)


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
        lead = lead_identity(event)
        connection = uow.repo.hot_path_connection() if lead is not None else None
        if lead is not None and connection is not None:
            outcome = record_lead(uow, connection, event, *lead, now, talk_expiry)
            if outcome is not None:
                return outcome
            uow.rollback()  # nothing was written; the locks are released: the ORM path starts afresh
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
        for key in identity_keys(phone, lid):  # sorted: the common prefix keeps that order
            uow.lock(f"contact:{agent.organization_id}:{key}")
        contact = find_or_create_contact(uow, agent, event, phone, lid, now, business_side=is_ours(event))
        talk = find_or_create_talk(uow, agent, contact, event, now, talk_expiry)
        if is_ours(event):
            return _record_business_message(uow, agent, contact, talk, event, now)
        message = TalkMessage(
            **lead_message_row(agent.organization_id, agent.id, talk.id, contact.id, event, now)
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
        sender = find_or_create_contact(uow, agent, event, phone, lid, now, business_side=is_ours(event))
    talk = find_or_create_talk(uow, agent, chat, event, now)
    message = TalkMessage(
        id=uuid7(),
        organization_id=org,
        talk_id=talk.id,
        agent_id=agent.id,
        from_contact_id=sender.id if sender else None,
        direction="outbound" if is_ours(event) else "inbound",
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
