"""Who a WhatsApp message is from and which conversation it belongs to: contacts and talks.

A contact is found by every spelling of the phone (BR/AR/MX variants) or by the WhatsApp LID, and one
person known twice (LID first, phone later) is merged into one contact with one open talk per agent. The
open WhatsApp talk of a contact and agent is reused until it is closed or expires; a new one starts with a
fresh TalkFlow from the agent's TreeFlow. Used by `services.inbound` inside its transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from luminai_actors.domain import talkflow
from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.inbound import expired_flow, talk_expired
from luminai_actors.domain.phone import phone_variants
from luminai_actors.domain.treeflow import normalize_definition
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence.tables import (
    CHANNEL_WHATSAPP,
    TALK_ACTIVE,
    TALK_CLOSED,
    Agent,
    Company,
    Contact,
    Talk,
    TalkAgent,
    TalkType,
    TreeFlow,
    User,
)
from luminai_actors.persistence.uow import UnitOfWork

DEFAULT_COMPANY = "Default Company"
TALK_TYPE_WHATSAPP = "WhatsApp"
LEAD_SOURCE = "WhatsApp"
ORIGIN = "WhatsApp - Evolution API"


def split_name(full_name: str) -> tuple[str | None, str | None]:
    parts = full_name.split()
    if not parts:
        return None, None
    return parts[0], (" ".join(parts[1:]) or None)


def find_or_create_contact(
    uow: UnitOfWork,
    agent: Agent,
    event: MessageUpsert,
    phone: str | None,
    lid: str | None,
    now: datetime,
    *,
    business_side: bool = False,
) -> Contact:
    org = agent.organization_id
    contact = uow.repo.contact_by_phones(org, phone_variants(phone)) if phone else None
    by_lid = uow.repo.contact_by_lid(org, lid) if lid else None
    if contact is not None and by_lid is not None and by_lid.id != contact.id:
        _merge_contacts(uow, keep=contact, drop=by_lid, now=now)
        by_lid = contact
    if contact is None and by_lid is not None:
        contact = by_lid
    if contact is not None:
        if phone and contact.phone is None:  # a LID-only contact whose phone we now learn
            contact.phone = phone
            contact.mobile_phone = phone
        if lid and contact.whatsapp_lid is None:
            contact.whatsapp_lid = lid
        contact.last_contact_date = now
        return contact
    company_id = default_company(uow, org, now).id
    contact = Contact(**new_contact_row(org, company_id, event, phone, lid, now, business_side=business_side))
    uow.repo.add(contact)
    uow.repo.flush()
    return contact


def contact_names(
    event: MessageUpsert, phone: str | None, lid: str | None, *, business_side: bool = False
) -> tuple[str, str | None, str | None]:
    """(name, first name, last name) of a new contact: the lead's WhatsApp name, else its number or LID."""
    lead_name = None if business_side else event.push_name  # on our side pushName is the business's
    first, last = split_name(lead_name or "")
    return lead_name or phone or f"WhatsApp {lid}", first, last


def talk_subject(contact_name: str) -> str:
    return f"WhatsApp - {contact_name}"


def initial_talk_flow(tree_flow_id: uuid.UUID | None, tree_flow_definition: Any) -> dict[str, Any]:
    """A new talk's TalkFlow: the start of the agent's TreeFlow (or none)."""
    return talkflow.initial_state(
        str(tree_flow_id) if tree_flow_id else None, normalize_definition(tree_flow_definition)
    )


def new_contact_row(
    org: uuid.UUID,
    company_id: uuid.UUID,
    event: MessageUpsert,
    phone: str | None,
    lid: str | None,
    now: datetime,
    *,
    business_side: bool = False,
) -> dict[str, Any]:
    """The contact row a WhatsApp person becomes, by attribute name."""
    name, first, last = contact_names(event, phone, lid, business_side=business_side)
    return {
        "id": uuid7(),
        "organization_id": org,
        "company_id": company_id,
        "name": name,
        "first_name": first,
        "last_name": last,
        "email": None,
        "phone": phone,
        "mobile_phone": phone,
        "whatsapp_lid": lid,
        "lead_source": LEAD_SOURCE,
        "origin": ORIGIN,
        "last_contact_date": now,
        "created_at": now,
        "updated_at": now,
    }


def new_whatsapp_talk_row(
    org: uuid.UUID,
    contact_id: uuid.UUID,
    contact_name: str,
    agent_id: uuid.UUID,
    owner_id: uuid.UUID,
    talk_type_id: uuid.UUID,
    tree_flow_id: uuid.UUID | None,
    tree_flow_definition: Any,
    now: datetime,
) -> dict[str, Any]:
    """An open WhatsApp talk with a fresh TalkFlow from the agent's TreeFlow, by attribute name."""
    return {
        "id": uuid7(),
        "organization_id": org,
        "contact_id": contact_id,
        "agent_id": agent_id,
        "owner_id": owner_id,
        "talk_type_id": talk_type_id,
        "subject": talk_subject(contact_name),
        "channel": CHANNEL_WHATSAPP,
        "status": TALK_ACTIVE,
        "archived": False,
        "paused": False,
        "needs_human": False,
        "talk_flow": initial_talk_flow(tree_flow_id, tree_flow_definition),
        "date_start": now,
        "created_at": now,
        "updated_at": now,
    }


def _merge_contacts(uow: UnitOfWork, *, keep: Contact, drop: Contact, now: datetime) -> None:
    """One person known twice (by LID first, by phone later): move everything of `drop` onto `keep`.

    An open talk of `drop` whose agent already has an open talk with `keep` is folded into that talk
    (messages move, the emptied talk is closed), so the person keeps one conversation per agent.
    """
    for talk in uow.repo.talks_of_contact(drop.id):
        is_open = talk.status == TALK_ACTIVE and not talk.archived and talk.closed_at is None
        target = uow.repo.open_whatsapp_talk(keep.id, talk.agent_id) if is_open and talk.agent_id else None
        if target is not None:
            for message in uow.repo.messages_of_talk(talk.id):
                message.talk_id = target.id
            talk.status, talk.archived, talk.closed_at = TALK_CLOSED, True, now
            uow.repo.flush()
        talk.contact_id = keep.id
    for message in uow.repo.messages_from_contact(drop.id):
        message.from_contact_id = keep.id
    lid = drop.whatsapp_lid
    drop.whatsapp_lid = None
    uow.repo.flush()
    keep.whatsapp_lid = keep.whatsapp_lid or lid
    keep.first_name = keep.first_name or drop.first_name
    keep.last_name = keep.last_name or drop.last_name
    uow.repo.delete(drop)
    uow.repo.flush()


def default_company(uow: UnitOfWork, org: uuid.UUID, now: datetime) -> Company:
    company = uow.repo.company_by_name(org, DEFAULT_COMPANY)
    if company is None:
        company = Company(
            id=uuid7(), organization_id=org, name=DEFAULT_COMPANY, created_at=now, updated_at=now
        )
        uow.repo.add(company)
        uow.repo.flush()
    return company


def _talk_owner(uow: UnitOfWork, agent: Agent, now: datetime) -> User:
    owner = uow.repo.get(User, agent.user_id) if agent.user_id else None
    owner = owner or uow.repo.first_user(agent.organization_id)
    if owner is None:
        owner = User(id=uuid7(), organization_id=agent.organization_id, name="Default Owner", created_at=now)
        uow.repo.add(owner)
        uow.repo.flush()
    return owner


def _talk_type(uow: UnitOfWork, org: uuid.UUID, now: datetime) -> TalkType:
    talk_type = uow.repo.talk_type_by_name(org, TALK_TYPE_WHATSAPP)
    if talk_type is None:
        talk_type = TalkType(id=uuid7(), organization_id=org, name=TALK_TYPE_WHATSAPP, created_at=now)
        uow.repo.add(talk_type)
        uow.repo.flush()
    return talk_type


def find_or_create_talk(
    uow: UnitOfWork,
    agent: Agent,
    contact: Contact,
    event: MessageUpsert,
    now: datetime,
    expiry: timedelta | None = None,
) -> Talk:
    talk = uow.repo.open_whatsapp_talk(contact.id, agent.id)
    if talk is not None and talk_expired(talk.date_last_message, now, expiry):
        # Idle too long: this conversation is over; the new message starts a fresh one and TalkFlow.
        talk.status, talk.closed_at = TALK_CLOSED, now
        talk.talk_flow = expired_flow(talk.talk_flow)
        uow.repo.flush()
        talk = None
    if talk is None:
        tree_flow = uow.repo.get(TreeFlow, agent.tree_flow_id) if agent.tree_flow_id else None
        talk = Talk(
            **new_whatsapp_talk_row(
                agent.organization_id,
                contact.id,
                contact.name,
                agent.id,
                _talk_owner(uow, agent, now).id,
                _talk_type(uow, agent.organization_id, now).id,
                tree_flow.id if tree_flow else None,
                tree_flow.definition if tree_flow else None,
                now,
            )
        )
        uow.repo.add(talk)
        uow.repo.flush()
        uow.repo.add(TalkAgent(talk_id=talk.id, agent_id=agent.id, created_at=now))
    talk.whatsapp_remote_jid = event.reply_jid
    talk.date_last_message = now
    return talk
