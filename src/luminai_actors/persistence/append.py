"""One statement that appends a lead's message to the open talk its contact already has (PostgreSQL).

Most messages are the second, third, ... of a conversation: the contact and its open talk exist, and storing
the message is an INSERT plus two touches. `APPEND` does exactly that, in one round trip, and only when
nothing else needs deciding: the agent is active and unchanged since the caller read it (`updated_at`, so a
cached agent row is safe to use), exactly one contact of the organization carries the message's identities
(each one it names), that contact has an open WhatsApp talk with this agent that has not expired, and the
(agent, WhatsApp message id) pair is new (`ON CONFLICT DO NOTHING`). It returns nothing otherwise, having
written nothing, and `services.inbound` takes its general path, which knows every other case (a new contact
or talk, an expired talk, an identity to learn or merge, a duplicate).

Measured (bench/budget.py, `bench/results/budget.json`): with it, known conversations are stored at the rate
given there for `known_leads`; without it each of them takes the general path's 8 statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from luminai_actors.persistence.tables import CHANNEL_WHATSAPP, TALK_ACTIVE

APPEND = text("""
WITH agent_row AS (
    SELECT id, organization_id FROM agent
    WHERE id = :agent_id AND active AND whatsapp_active AND updated_at = :agent_updated_at
), person AS (
    SELECT c.id, c.phone, c.mobile_phone, c.whatsapp_lid FROM contact c, agent_row
    WHERE c.organization_id = agent_row.organization_id
      AND (c.phone = ANY(CAST(:phones AS text[])) OR c.mobile_phone = ANY(CAST(:phones AS text[]))
           OR c.whatsapp_lid = CAST(:lid AS text))
), chosen AS (
    SELECT id FROM person
    WHERE (SELECT count(*) FROM person) = 1
      AND (CAST(:lid AS text) IS NULL OR whatsapp_lid = CAST(:lid AS text))
      AND (cardinality(CAST(:phones AS text[])) = 0
           OR phone = ANY(CAST(:phones AS text[])) OR mobile_phone = ANY(CAST(:phones AS text[])))
), open_talk AS (
    SELECT t.id, t.contact_id FROM talk t
    JOIN chosen ON t.contact_id = chosen.id
    JOIN talk_agent ta ON ta.talk_id = t.id AND ta.agent_id = :agent_id
    WHERE t.channel = 2 AND t.status = 0 AND NOT t.archived
      AND t.closed_at IS NULL AND (t.date_last_message IS NULL OR t.date_last_message >= :fresh_after)
    ORDER BY t.date_last_message DESC NULLS LAST
    LIMIT 1
    FOR UPDATE OF t
), ins AS (
    INSERT INTO talk_message (id, organization_id, talk_id, agent_id, from_contact_id, direction, channel,
                              body, message_type, whatsapp_message_id, metadata, send_attempts, sent_at,
                              created_at)
    SELECT :id, agent_row.organization_id, open_talk.id, agent_row.id, open_talk.contact_id, 'inbound',
           'whatsapp', :body, :message_type, :whatsapp_message_id, CAST(:metadata AS jsonb), 0, :sent_at, :now
    FROM open_talk, agent_row
    ON CONFLICT (agent_id, whatsapp_message_id) DO NOTHING
    RETURNING talk_id, from_contact_id
), touch_talk AS (
    UPDATE talk SET date_last_message = :now, whatsapp_remote_jid = :reply_jid, updated_at = :wall
    FROM ins WHERE talk.id = ins.talk_id
), touch_contact AS (
    UPDATE contact SET last_contact_date = :now, updated_at = :wall
    FROM ins WHERE contact.id = ins.from_contact_id
)
SELECT talk_id, from_contact_id FROM ins
""")
assert CHANNEL_WHATSAPP == 2, "APPEND spells the WhatsApp channel as 2"
assert TALK_ACTIVE == 0, "APPEND spells the active status as 0"


def append_to_open_talk(
    connection: Connection,
    *,
    message_id: uuid.UUID,
    agent_id: uuid.UUID,
    agent_updated_at: datetime,
    phones: Sequence[str],
    lid: str | None,
    fresh_after: datetime,
    reply_jid: str | None,
    row: dict[str, Any],
    now: datetime,
    wall: datetime,
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(talk id, contact id) of the stored message, or None with nothing written (see the module docstring).

    `row`: the message's body, message_type, whatsapp_message_id, metadata (a JSON string) and sent_at."""
    found = connection.execute(
        APPEND,
        {
            "id": message_id,
            "agent_id": agent_id,
            "agent_updated_at": agent_updated_at,
            "phones": list(phones),
            "lid": lid,
            "fresh_after": fresh_after,
            "reply_jid": reply_jid,
            "now": now,
            "wall": wall,
            **row,
        },
    ).first()
    return (found[0], found[1]) if found is not None else None
