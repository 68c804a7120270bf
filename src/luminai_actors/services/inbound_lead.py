"""The lead hot path of `record_inbound` on PostgreSQL (statements in `persistence.lead_path`).

One statement reads the agent and the dedupe and takes the contact locks, one reads the contacts, open talk
and organization defaults, and one writes every row. It covers a new contact, and a known contact (one,
which already carries the message's phone and LID) with an open talk, an expired one or none; the rows are
those the ORM path of `services.inbound` writes. Anything else (two contacts to choose from or merge, a
phone or LID to learn, a missing default company, talk type or owner) returns None before anything is
written: the caller rolls back and decides it with the ORM path, in a new transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from luminai_actors.domain.phone import jid_user, phone_from_jid, phone_variants
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence import lead_path
from luminai_actors.persistence.lead_path import RowChange
from luminai_actors.persistence.tables import TALK_CLOSED, utcnow
from luminai_actors.persistence.uow import UnitOfWork
from luminai_actors.services import identity
from luminai_actors.services.identity import DEFAULT_COMPANY, TALK_TYPE_WHATSAPP
from luminai_actors.services.inbound_model import (
    InboundOutcome,
    KnownConversation,
    ignored_by_metadata,
    is_ours,
    lead_message_row,
)


def lead_identity(event: MessageUpsert) -> tuple[str | None, str | None] | None:
    """(phone, LID) of a lead's own message in a 1:1 chat that has one of them: what the hot path takes."""
    if event.chat_kind != "user" or is_ours(event):
        return None
    phone = phone_from_jid(event.phone_jid)
    lid = jid_user(event.lid_jid) if event.lid_jid else None
    if lid == "" or (phone is None and lid is None):
        return None  # (a LID JID without a user part follows the ORM path's own rules)
    return phone, lid


def record_lead(
    uow: UnitOfWork,
    connection: Connection,
    event: MessageUpsert,
    phone: str | None,
    lid: str | None,
    now: datetime,
    talk_expiry: timedelta | None,
) -> InboundOutcome | None:
    """The lead hot path (PostgreSQL, see the module docstring): what `_record` does for a lead's message,
    in three statements; None when the ORM path must decide (nothing written, the caller rolls back)."""
    # The statement prefixes each key with `contact:{org}:`, which keeps their order: `_record`'s locks.
    agent = lead_path.inbound_agent(
        connection, event.instance, event.message_id, identity.identity_keys(phone, lid)
    )
    if agent is None or not agent.whatsapp_active or not agent.active:
        return InboundOutcome("ignored", f"no active agent for instance {event.instance!r}")
    if agent.duplicate_id is not None:
        return InboundOutcome(
            "duplicate", None, agent.duplicate_talk_id, agent.duplicate_id, agent.duplicate_contact_id
        )
    if ignored_by_metadata(agent.whatsapp_metadata, event):
        return InboundOutcome("ignored", "the agent's ignoreJids lists this chat")
    org = agent.organization_id
    phones = phone_variants(phone) if phone else []
    found = lead_path.lead_lookup(
        connection,
        organization_id=org,
        agent_id=agent.id,
        phones=phones,
        lid=lid,
        company_name=DEFAULT_COMPANY,
        talk_type_name=TALK_TYPE_WHATSAPP,
        user_id=agent.user_id,
        tree_flow_id=agent.tree_flow_id,
    )
    wall = utcnow()  # what the ORM's `onupdate` writes into `updated_at` of the rows it updates
    new_contact: dict[str, Any] | None = None
    touched_contact: RowChange | None = None
    # As `find_or_create_contact`, for no contact or one that needs nothing learned or merged.
    if not found.contacts:
        if found.company_id is None:
            return None
        new_contact = identity.new_contact_row(org, found.company_id, event, phone, lid, now)
        contact_id, contact_name = new_contact["id"], new_contact["name"]
        contact_phone, contact_lid = phone, lid
        open_talk = None
    else:
        if len(found.contacts) > 1:
            return None  # more than one person: the ORM path chooses, or merges
        [known] = found.contacts
        if phone is not None and (known.phone is None or not {known.phone, known.mobile_phone} & set(phones)):
            return None  # found by the LID only: a phone to learn, or one the contact lacks
        if lid is not None and known.whatsapp_lid != lid:
            return None  # found by the phone only: a LID to learn, or another one
        if known.last_contact_date != now:
            touched_contact = RowChange(known.id, {"last_contact_date": now, "updated_at": wall})
        contact_id, contact_name = known.id, known.name
        contact_phone, contact_lid = known.phone, known.whatsapp_lid
        open_talk = known if known.talk_id is not None else None
    # As `find_or_create_talk`.
    closed_talk: RowChange | None = None
    if open_talk is not None and identity.talk_expired(open_talk.talk_date_last_message, now, talk_expiry):
        assert open_talk.talk_id is not None
        flow = identity.expired_flow(open_talk.talk_flow)
        closed_talk = RowChange(
            open_talk.talk_id,
            {"status": TALK_CLOSED, "closed_at": now, "talk_flow": flow, "updated_at": wall},
        )
        open_talk = None
    new_talk: dict[str, Any] | None = None
    talk_agent: Mapping[str, Any] | None = None
    touched_talk: RowChange | None = None
    if open_talk is None:
        if found.talk_type_id is None or found.owner_id is None:
            return None
        new_talk = identity.new_whatsapp_talk_row(
            org,
            contact_id,
            contact_name,
            agent.id,
            found.owner_id,
            found.talk_type_id,
            found.tree_flow_id,
            found.tree_flow_definition if found.tree_flow_id else None,
            now,
        )
        # The ORM inserts the talk and then sets the reply JID and the last message's time: an update.
        new_talk.update(whatsapp_remote_jid=event.reply_jid, date_last_message=now, updated_at=wall)
        talk_id = new_talk["id"]
        talk_agent = {"talk_id": talk_id, "agent_id": agent.id, "created_at": now}
    else:
        assert open_talk.talk_id is not None
        talk_id = open_talk.talk_id
        changes: dict[str, Any] = {}
        if open_talk.talk_remote_jid != event.reply_jid:
            changes["whatsapp_remote_jid"] = event.reply_jid
        if open_talk.talk_date_last_message != now:
            changes["date_last_message"] = now
        if changes:
            touched_talk = RowChange(talk_id, {**changes, "updated_at": wall})
    message = lead_message_row(org, agent.id, talk_id, contact_id, event, now)
    lead_path.store_lead_message(
        connection,
        message,
        contact=new_contact,
        talk=new_talk,
        talk_agent=talk_agent,
        closed_talk=closed_talk,
        touched_talk=touched_talk,
        touched_contact=touched_contact,
    )
    uow.commit()
    known_conversation = KnownConversation(
        agent.id, org, agent.updated_at, contact_id, contact_phone, contact_lid, talk_id
    )
    return InboundOutcome("stored", None, talk_id, message["id"], contact_id, known=known_conversation)
