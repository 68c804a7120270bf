"""Rows to JSON in the seed's camelCase; ids and datetimes as strings (ISO 8601, UTC)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from luminai_actors.persistence.tables import Contact, Talk, TalkMessage


def _id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": _id(contact.id),
        "organizationId": _id(contact.organization_id),
        "companyId": _id(contact.company_id),
        "name": contact.name,
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "email": contact.email,
        "phone": contact.phone,
        "mobilePhone": contact.mobile_phone,
        "whatsappLid": contact.whatsapp_lid,
        "whatsappJid": contact.whatsapp_jid,
        "leadSource": contact.lead_source,
        "origin": contact.origin,
        "lastContactDate": _at(contact.last_contact_date),
        "optedOutAt": _at(contact.opted_out_at),
        "createdAt": _at(contact.created_at),
        "updatedAt": _at(contact.updated_at),
    }


def talk_json(talk: Talk, agent_ids: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "id": _id(talk.id),
        "organizationId": _id(talk.organization_id),
        "contactId": _id(talk.contact_id),
        "agentId": _id(talk.agent_id),
        "agents": [str(a) for a in agent_ids],
        "ownerId": _id(talk.owner_id),
        "talkTypeId": _id(talk.talk_type_id),
        "subject": talk.subject,
        "channel": talk.channel,
        "status": talk.status,
        "archived": talk.archived,
        "paused": talk.paused,
        "needsHuman": talk.needs_human,
        "whatsappRemoteJid": talk.whatsapp_remote_jid,
        "talkFlow": talk.talk_flow,
        "dateStart": _at(talk.date_start),
        "dateLastMessage": _at(talk.date_last_message),
        "closedAt": _at(talk.closed_at),
        "createdAt": _at(talk.created_at),
        "updatedAt": _at(talk.updated_at),
    }


def message_json(message: TalkMessage) -> dict[str, Any]:
    return {
        "id": _id(message.id),
        "organizationId": _id(message.organization_id),
        "talkId": _id(message.talk_id),
        "agentId": _id(message.agent_id),
        "fromContact": _id(message.from_contact_id),
        "fromContactId": _id(message.from_contact_id),
        "fromAgent": _id(message.from_agent_id),
        "fromAgentId": _id(message.from_agent_id),
        "direction": message.direction,
        "channel": message.channel,
        "body": message.body,
        "messageType": message.message_type,
        "whatsappMessageId": message.whatsapp_message_id,
        "metadata": message.meta,
        "sendStatus": message.send_status,
        "sendAttempts": message.send_attempts,
        "sentAt": _at(message.sent_at),
        "deliveredAt": _at(message.delivered_at),
        "readAt": _at(message.read_at),
        "processedAt": _at(message.processed_at),
        "createdAt": _at(message.created_at),
    }
