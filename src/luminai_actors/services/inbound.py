"""record_inbound: one WhatsApp message becomes a stored talk message, exactly once.

This is where a lead's message is stored. The conversation actor of its sender calls `record_inbound` (so
everything of one person happens in order, one at a time); the webhook answers 200 only after it returned.
The rules it applies are stated in `domain.inbound` (skip, identity, side, expiry, dedupe).

1. Skipped upserts (not a chat message, an ignored chat kind, the agent's `ignoreJids`) write nothing.
2. A lead's message in a 1:1 chat is, on PostgreSQL, one statement (`persistence.append`): appended to its
   contact's open talk, or, for a person nobody knows yet, stored with a new contact and talk; each checks
   the agent row the webhook layer has cached and writes nothing when anything needs deciding.
3. Everything else takes the general path, one ORM transaction: the agent, the dedupe check (unique
   (agent, WhatsApp id): a redelivery is "duplicate"), the person's locks, the contact (every spelling of
   the phone, or the LID; one person known twice is merged), the open talk (or a new one when there is none
   or it expired, `services.identity`), and the message. A group's message is kept on the chat's own contact
   and talk; the business side's own messages settle our sends or pause the bot. A unique-constraint race
   with another process is resolved by a second pass, which finds what the other wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.inbound import (
    DEFAULT_IGNORED_CHATS,
    InboundOutcome,
    conversation_key,
    fresh_after,
    identity_keys,
    ignore_reason,
    ignored_by_agent,
    inbound_metadata,
    is_ours,
    message_type,
    pauses_on_human_reply,
    sender_identity,
)
from luminai_actors.domain.phone import jid_user, phone_variants
from luminai_actors.errors import Conflict
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence.append import append_to_open_talk, start_conversation
from luminai_actors.persistence.tables import (
    SEND_SENDING,
    SEND_SENT,
    Agent,
    Contact,
    Talk,
    TalkMessage,
    utcnow,
)
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory, translate_db_error
from luminai_actors.services.agents import AgentInfo
from luminai_actors.services.identity import (
    DEFAULT_COMPANY,
    LEAD_SOURCE,
    ORIGIN,
    TALK_TYPE_WHATSAPP,
    contact_names,
    default_company,
    find_or_create_contact,
    find_or_create_talk,
    initial_talk_flow,
    talk_subject,
)

__all__ = ["InboundOutcome", "conversation_key", "ignore_reason", "record_inbound"]


Autocommit = Callable[[], AbstractContextManager[Connection]]
"""Opens an autocommit connection (PostgreSQL): where the statements of `persistence.append` run."""


def record_inbound(
    uow_factory: UnitOfWorkFactory,
    event: MessageUpsert,
    now: Callable[[], datetime] | None = None,
    *,
    ignored_chats: frozenset[str] = DEFAULT_IGNORED_CHATS,
    talk_expiry: timedelta | None = None,
    agent: AgentInfo | None = None,
    autocommit: Autocommit | None = None,
) -> InboundOutcome:
    """Store `event` (see the module docstring). `agent` is the cached row of its instance's agent and
    `autocommit` opens a connection for step 2; without either, every message takes the general path."""
    reason = ignore_reason(event, ignored_chats)
    if reason is not None:
        return InboundOutcome("ignored", reason)
    clock = now or (lambda: datetime.now(UTC))
    if agent is not None and autocommit is not None:
        stored = _one_statement(autocommit, agent, event, clock(), talk_expiry)
        if stored is not None:
            return stored
    try:
        return _record(uow_factory, event, clock(), talk_expiry)
    except Conflict:
        # Another process inserted the same contact, talk or message between our read and our write.
        # Everything it wrote is now visible: a second pass finds it instead of inserting.
        return _record(uow_factory, event, clock(), talk_expiry)


def _one_statement(
    autocommit: Autocommit, agent: AgentInfo, event: MessageUpsert, now: datetime, expiry: timedelta | None
) -> InboundOutcome | None:
    """Step 2 of the module docstring: a lead's message appended to its open talk, or a new lead's first
    message with its contact and talk; None when the general path must decide (nothing was written)."""
    if event.chat_kind != "user" or is_ours(event) or not agent.active or agent.updated_at is None:
        return None
    if ignored_by_agent(agent.whatsapp_metadata, event):
        return None  # the general path says why, from the agent row as it is now
    phone, lid = sender_identity(event)
    if phone is None and not lid:
        return None
    message_id = uuid7()
    phones = phone_variants(phone) if phone else []
    message = {
        "id": message_id,
        "agent_id": agent.agent_id,
        "organization_id": agent.organization_id,
        "agent_updated_at": agent.updated_at,
        "phones": phones,
        "lid": lid,
        "reply_jid": event.reply_jid,
        "body": event.content.text,
        "message_type": message_type(event),
        "whatsapp_message_id": event.message_id,
        "metadata": json.dumps(inbound_metadata(event)),
        "sent_at": event.sent_at or now,
        "now": now,
    }
    try:
        with autocommit() as connection:
            appended = append_to_open_talk(connection, message, fresh_after(now, expiry), utcnow())
            if appended is not None:
                talk_id, contact_id, stored_id, duplicate = appended
                status = "duplicate" if duplicate else "stored"
                return InboundOutcome(status, None, talk_id, stored_id, contact_id, fast=True)
            found = start_conversation(connection, {**message, **_new_lead(agent, event, phone, lid)})
    except SQLAlchemyError as exc:
        raise translate_db_error(exc) from exc
    if found is None:
        return None
    talk_id, contact_id = found
    return InboundOutcome("stored", None, talk_id, message_id, contact_id, fast=True)


def _new_lead(agent: AgentInfo, event: MessageUpsert, phone: str | None, lid: str | None) -> dict[str, Any]:
    """The values of a new lead's contact and talk, as the general path makes them (`services.identity`)."""
    name, first_name, last_name = contact_names(event, phone, lid)
    talk_flow = initial_talk_flow(agent.tree_flow_id, agent.tree_flow_definition)
    return {
        "contact_id": uuid7(),
        "name": name,
        "first_name": first_name,
        "last_name": last_name,
        "phone": phone,
        "lead_source": LEAD_SOURCE,
        "origin": ORIGIN,
        "company_name": DEFAULT_COMPANY,
        "talk_type_name": TALK_TYPE_WHATSAPP,
        "tree_flow_id": agent.tree_flow_id,
        "tree_flow_updated_at": agent.tree_flow_updated_at,
        "talk_id": uuid7(),
        "subject": talk_subject(name),
        "talk_flow": json.dumps(talk_flow),
    }


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
        if ignored_by_agent(agent.whatsapp_metadata, event):
            return InboundOutcome("ignored", "the agent's ignoreJids lists this chat")
        if event.chat_kind != "user":
            return _record_shared_chat(uow, agent, event, now)
        phone, lid = sender_identity(event)
        if phone is None and lid is None:
            return InboundOutcome("ignored", "sender has neither a phone number nor a LID")
        for key in identity_keys(phone, lid):  # sorted: the common prefix keeps that order
            uow.lock(f"contact:{agent.organization_id}:{key}")
        contact = find_or_create_contact(uow, agent, event, phone, lid, now, business_side=is_ours(event))
        talk = find_or_create_talk(uow, agent, contact, event, now, talk_expiry)
        if is_ours(event):
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
        return InboundOutcome("stored", None, talk.id, message.id, contact.id)


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
    phone, lid = sender_identity(event)
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
    if pauses_on_human_reply(agent.whatsapp_metadata) and not talk.paused:
        talk.paused = True
        talk.talk_flow = {
            **(talk.talk_flow or {}),
            "handoff": {"reason": "a person replied from the business phone", "at": now.isoformat()},
        }
    uow.commit()
    return InboundOutcome("stored", None, talk.id, message.id, contact.id, from_business=True)
