"""The two statements that store most lead messages on PostgreSQL, each a whole transaction by itself.

`APPEND` adds a lead's message to the open talk its contact already has; `START` stores the first message of
a person nobody in the organization knows yet (new contact, talk, talk agent and message). Both run on an
autocommit connection: one round trip each, no BEGIN and COMMIT of their own. Anything else, or anything
they find changed, is left to the general path of `services.inbound`, and they write nothing then.

Measured with bench/budget.py (figures in `bench/results/budget.json` and BENCHMARKS.md): the general ORM
path costs about 4 ms of the receiver's CPU per known conversation's message and 7 ms per new lead (8 and
15 statements); these take one statement each.

## APPEND

Most messages are the second, third, ... of a conversation: the contact and its open talk exist, and storing
the message is an INSERT plus two touches. `APPEND` does exactly that, in one round trip, and only when
nothing else needs deciding: the agent is active and unchanged since the caller read it (`updated_at`, so a
cached agent row is safe to use), exactly one contact of the organization carries the message's identities
(each one it names), that contact has an open WhatsApp talk with this agent that has not expired, and the
(agent, WhatsApp message id) pair is new (`ON CONFLICT DO NOTHING`). A redelivery of a message stored
before (Evolution retries, a duplicate storm) is answered from the unique index in the same statement
(`stored_before`): with the general transaction behind it, each redelivery cost the receiver about 4 ms
more (bench/budget.py's profile; the suite's duplicate storm of 10,000 deliveries took 59 s).

## START
Only when the agent and its tree flow are unchanged since they were cached, no contact of the organization
carries any of the message's identities, and the organization has its default company, the WhatsApp talk
type and a user to own the talk (the general path creates those for an organization's first lead). The
unique indexes on a contact's phone, mobile phone and LID settle a race with another process: the losing
statement fails as a whole, and the general path, which takes the person's locks, finds the winner's rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from luminai_actors.persistence.tables import CHANNEL_WHATSAPP, TALK_ACTIVE

# Every lookup is by an indexed value given as a parameter (the organization, each identity, one contact id),
# so the plan does not depend on the tables' statistics: a freshly migrated database plans it as well.
APPEND = text("""
WITH agent_row AS (
    SELECT id FROM agent
    WHERE id = :agent_id AND organization_id = :organization_id AND active AND whatsapp_active
      AND updated_at = :agent_updated_at
), person AS (
    SELECT id, phone, mobile_phone, whatsapp_lid FROM contact
    WHERE organization_id = :organization_id AND phone = ANY(CAST(:phones AS text[]))
    UNION
    SELECT id, phone, mobile_phone, whatsapp_lid FROM contact
    WHERE organization_id = :organization_id AND mobile_phone = ANY(CAST(:phones AS text[]))
    UNION
    SELECT id, phone, mobile_phone, whatsapp_lid FROM contact
    WHERE organization_id = :organization_id AND whatsapp_lid = CAST(:lid AS text)
), chosen AS (
    SELECT id FROM person
    WHERE (SELECT count(*) FROM person) = 1
      AND (CAST(:lid AS text) IS NULL OR whatsapp_lid = CAST(:lid AS text))
      AND (cardinality(CAST(:phones AS text[])) = 0
           OR phone = ANY(CAST(:phones AS text[])) OR mobile_phone = ANY(CAST(:phones AS text[])))
), open_talk AS (
    SELECT t.id, t.contact_id FROM talk t
    WHERE t.contact_id = (SELECT id FROM chosen)
      AND EXISTS (SELECT 1 FROM talk_agent ta WHERE ta.talk_id = t.id AND ta.agent_id = :agent_id)
      AND t.channel = 2 AND t.status = 0 AND NOT t.archived AND t.closed_at IS NULL
      AND (t.date_last_message IS NULL OR t.date_last_message >= :fresh_after)
    ORDER BY t.date_last_message DESC NULLS LAST
    LIMIT 1
    FOR UPDATE OF t
), ins AS (
    INSERT INTO talk_message (id, organization_id, talk_id, agent_id, from_contact_id, direction, channel,
                              body, message_type, whatsapp_message_id, metadata, send_attempts, sent_at,
                              created_at)
    SELECT :id, :organization_id, open_talk.id, agent_row.id, open_talk.contact_id, 'inbound',
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
), stored_before AS (
    SELECT m.talk_id, m.from_contact_id, m.id FROM talk_message m, agent_row
    WHERE m.agent_id = agent_row.id AND m.whatsapp_message_id = :whatsapp_message_id
)
SELECT talk_id, from_contact_id, CAST(:id AS uuid) AS id, false AS duplicate FROM ins
UNION ALL
SELECT talk_id, from_contact_id, id, true FROM stored_before WHERE NOT EXISTS (SELECT 1 FROM ins)
""")
assert CHANNEL_WHATSAPP == 2, "APPEND spells the WhatsApp channel as 2"
assert TALK_ACTIVE == 0, "APPEND spells the active status as 0"


START = text("""
WITH ready AS (
    SELECT a.id AS agent_id, a.organization_id,
           (SELECT id FROM company WHERE organization_id = a.organization_id AND name = :company_name
            ORDER BY created_at LIMIT 1) AS company_id,
           (SELECT id FROM talk_type WHERE organization_id = a.organization_id AND name = :talk_type_name
            LIMIT 1) AS talk_type_id,
           COALESCE((SELECT id FROM "user" WHERE id = a.user_id),
                    (SELECT id FROM "user" WHERE organization_id = a.organization_id
                     ORDER BY created_at LIMIT 1)) AS owner_id
    FROM agent a
    WHERE a.id = :agent_id AND a.organization_id = :organization_id AND a.active AND a.whatsapp_active
      AND a.updated_at = :agent_updated_at
      AND a.tree_flow_id IS NOT DISTINCT FROM CAST(:tree_flow_id AS uuid)
      AND (a.tree_flow_id IS NULL OR EXISTS (SELECT 1 FROM tree_flow f WHERE f.id = a.tree_flow_id
                                             AND f.updated_at = :tree_flow_updated_at))
      AND NOT EXISTS (SELECT 1 FROM contact WHERE organization_id = :organization_id
                      AND phone = ANY(CAST(:phones AS text[])))
      AND NOT EXISTS (SELECT 1 FROM contact WHERE organization_id = :organization_id
                      AND mobile_phone = ANY(CAST(:phones AS text[])))
      AND NOT EXISTS (SELECT 1 FROM contact WHERE organization_id = :organization_id
                      AND whatsapp_lid = CAST(:lid AS text))
), defaults AS (
    SELECT * FROM ready
    WHERE company_id IS NOT NULL AND talk_type_id IS NOT NULL AND owner_id IS NOT NULL
), new_contact AS (
    INSERT INTO contact (id, organization_id, company_id, name, first_name, last_name, phone, mobile_phone,
                         whatsapp_lid, lead_source, origin, last_contact_date, created_at, updated_at)
    SELECT :contact_id, organization_id, company_id, :name, :first_name, :last_name, :phone, :phone,
           :lid, :lead_source, :origin, :now, :now, :now
    FROM defaults
    RETURNING id
), new_talk AS (
    INSERT INTO talk (id, organization_id, contact_id, agent_id, owner_id, talk_type_id, subject, channel,
                      status, archived, paused, needs_human, whatsapp_remote_jid, talk_flow, date_start,
                      date_last_message, created_at, updated_at)
    SELECT :talk_id, d.organization_id, c.id, d.agent_id, d.owner_id, d.talk_type_id, :subject, 2,
           0, false, false, false, :reply_jid, CAST(:talk_flow AS jsonb), :now, :now, :now, :now
    FROM defaults d, new_contact c
    RETURNING id, contact_id
), new_link AS (
    INSERT INTO talk_agent (talk_id, agent_id, created_at)
    SELECT id, :agent_id, :now FROM new_talk
)
INSERT INTO talk_message (id, organization_id, talk_id, agent_id, from_contact_id, direction, channel, body,
                          message_type, whatsapp_message_id, metadata, send_attempts, sent_at, created_at)
SELECT :id, d.organization_id, t.id, d.agent_id, t.contact_id, 'inbound', 'whatsapp', :body, :message_type,
       :whatsapp_message_id, CAST(:metadata AS jsonb), 0, :sent_at, :now
FROM defaults d, new_talk t
RETURNING talk_id, from_contact_id
""")


def start_conversation(connection: Connection, params: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(talk id, contact id) of a new lead's stored first message, or None with nothing written (`START`)."""
    try:
        found = connection.execute(START, params).first()
    except IntegrityError:  # another process created this person first: the general path finds them
        return None
    return (found[0], found[1]) if found is not None else None


def append_to_open_talk(
    connection: Connection, message: dict[str, Any], fresh_after: datetime, wall: datetime
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, bool] | None:
    """(talk id, contact id, message id, duplicate) of the stored message, or None with nothing written
    (`APPEND`); `duplicate`: the (agent, WhatsApp id) was stored before (a redelivery), nothing written.

    `message`: id, agent_id, agent_updated_at, phones, lid, reply_jid, body, message_type,
    whatsapp_message_id, metadata (a JSON string), sent_at and now."""
    found = connection.execute(APPEND, {**message, "fresh_after": fresh_after, "wall": wall}).first()
    return (found[0], found[1], found[2], bool(found[3])) if found is not None else None
