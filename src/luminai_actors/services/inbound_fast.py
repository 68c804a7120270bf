"""The known-conversation fast path of inbound messages (PostgreSQL), and AI-turn request coalescing.

The first message of a conversation goes through `services.inbound.record_inbound` (locks, contact and talk
lookup or creation, one ORM transaction). What it learned — agent, contact, open talk, the identities the
contact is known by — is remembered under the conversation key. A later lead message of that conversation,
handled by the same conversation actor, is then one statement that re-checks everything the slow path would
have decided differently and inserts only when nothing changed:

* the talk is still this contact's and this agent's, open (active, not archived, not closed) and not idle
  past the expiry;
* the agent is still active on WhatsApp and unchanged since (its `updated_at`: settings such as
  `ignoreJids` live on the agent row);
* the message is new (`ON CONFLICT DO NOTHING` on the (agent, WhatsApp id) unique key).

It also touches the talk (`date_last_message`, the reply JID) and the contact (`last_contact_date`) like the
slow path. The statements of many conversations share one transaction through `GroupCommitWriter`. When the
statement inserts nothing (a duplicate, a closed/expired/moved talk, a changed agent) or its batch fails,
the message goes through the slow path in its own transaction, which decides it exactly as before; the fast
path never answers "duplicate" itself.

`TurnRequests` keeps the AI-turn requests of a debounced burst to one: a turn requested at T with the
debounce window d runs no earlier than T + d and then waits for the lead's pause itself, so a message stored
before T + d/2 needs no new request (the margin absorbs clock skew between processes; the recovery sweep
covers a request that is lost anyway).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.phone import canonical_phone, jid_user, phone_from_jid
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence.group_commit import GroupCommitFailed, GroupCommitWriter
from luminai_actors.persistence.tables import TALK_ACTIVE
from luminai_actors.services.inbound import InboundOutcome, KnownConversation, inbound_metadata, message_type

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# talk.status = 0 is TALK_ACTIVE (asserted below); the statement is a constant, values are all bound.
FAST_INSERT = """
WITH t AS (
    SELECT talk.id FROM talk JOIN agent ON agent.id = talk.agent_id
    WHERE talk.id = %(talk_id)s AND talk.contact_id = %(contact_id)s AND talk.agent_id = %(agent_id)s
      AND talk.status = 0 AND NOT talk.archived AND talk.closed_at IS NULL
      AND (talk.date_last_message IS NULL OR talk.date_last_message >= %(fresh_after)s)
      AND agent.active AND agent.whatsapp_active AND agent.updated_at = %(agent_updated_at)s
    FOR UPDATE OF talk
), ins AS (
    INSERT INTO talk_message (id, organization_id, talk_id, agent_id, from_contact_id, direction, channel,
                              body, message_type, whatsapp_message_id, metadata, send_attempts, sent_at,
                              created_at)
    SELECT %(id)s, %(organization_id)s, t.id, %(agent_id)s, %(contact_id)s, 'inbound', 'whatsapp',
           %(body)s, %(message_type)s, %(whatsapp_message_id)s, %(metadata)s, 0, %(sent_at)s, %(now)s
    FROM t
    ON CONFLICT (agent_id, whatsapp_message_id) DO NOTHING
    RETURNING id
), touch_talk AS (
    UPDATE talk SET date_last_message = %(now)s, whatsapp_remote_jid = %(reply_jid)s, updated_at = %(now)s
    WHERE talk.id = %(talk_id)s AND EXISTS (SELECT 1 FROM ins)
), touch_contact AS (
    UPDATE contact SET last_contact_date = %(now)s, updated_at = %(now)s
    WHERE contact.id = %(contact_id)s AND EXISTS (SELECT 1 FROM ins)
)
SELECT (SELECT id FROM ins)
"""
assert TALK_ACTIVE == 0, "FAST_INSERT spells the active status as 0"


def fast_path_applies(event: MessageUpsert, known: KnownConversation) -> bool:
    """A lead's own message in a 1:1 chat whose identities the remembered contact already has."""
    if event.event != "messages.upsert" or event.from_me or event.chat_kind != "user":
        return False
    lid = jid_user(event.lid_jid) if event.lid_jid else None
    if lid is not None and lid != known.lid:
        return False  # a LID the contact does not carry yet: the slow path records or merges it
    phone = phone_from_jid(event.phone_jid)
    if phone is not None and (known.phone is None or canonical_phone(phone) != canonical_phone(known.phone)):
        return False
    return phone is not None or lid is not None


class FastInbound:
    """Remembers known conversations (bounded) and stores their next messages through the group writer."""

    def __init__(
        self,
        writer: GroupCommitWriter,
        *,
        talk_expiry: timedelta | None,
        capacity: int = 10_000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.writer = writer
        self._expiry = talk_expiry
        self._capacity = capacity
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._known: OrderedDict[str, KnownConversation] = OrderedDict()
        self.stored = 0
        self.fell_back = 0

    def remember(self, key: str, outcome: InboundOutcome) -> None:
        """Keep what the slow path learned (or forget the key when it learned nothing usable)."""
        with self._lock:
            if outcome.known is None:
                if outcome.status == "stored":
                    self._known.pop(key, None)
                return
            self._known[key] = outcome.known
            self._known.move_to_end(key)
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(key, None)

    def known(self, key: str) -> KnownConversation | None:
        with self._lock:
            return self._known.get(key)

    def try_record(self, key: str, event: MessageUpsert) -> InboundOutcome | None:
        """The stored outcome, or None when the slow path must decide this message."""
        known = self.known(key)
        if known is None or not fast_path_applies(event, known):
            return None
        now = self._clock()
        message_id = uuid7()
        params: dict[str, Any] = {
            "id": message_id,
            "organization_id": known.organization_id,
            "talk_id": known.talk_id,
            "agent_id": known.agent_id,
            "contact_id": known.contact_id,
            "agent_updated_at": known.agent_updated_at,
            "fresh_after": now - self._expiry if self._expiry is not None else _EPOCH,
            "body": event.content.text,
            "message_type": message_type(event),
            "whatsapp_message_id": event.message_id,
            "metadata": Jsonb(inbound_metadata(event)),
            "sent_at": event.sent_at or now,
            "now": now,
            "reply_jid": event.reply_jid,
        }
        try:
            row = self.writer.write(params)
        except GroupCommitFailed:
            self.fell_back += 1
            return None
        if row is None or row[0] is None:
            self.fell_back += 1
            return None
        self.stored += 1
        return InboundOutcome(
            "stored", None, known.talk_id, message_id, known.contact_id, known=known, fast=True
        )


@dataclass
class _Requested:
    at: float
    window: float


class TurnRequests:
    """When a talk's AI turn was last requested, so a debounced burst is requested once (bounded memory)."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = 50_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._lock = threading.Lock()
        self._requested: dict[uuid.UUID, _Requested] = {}

    def covered(self, talk_id: uuid.UUID, debounce: float) -> bool:
        """True when a turn requested earlier will still run after a message stored now."""
        if debounce <= 0:
            return False
        with self._lock:
            previous = self._requested.get(talk_id)
        return previous is not None and self._clock() < previous.at + previous.window / 2

    def mark(self, talk_id: uuid.UUID, requested_at: float, debounce: float) -> None:
        if debounce <= 0:
            return
        with self._lock:
            if len(self._requested) >= self._capacity:
                now = self._clock()
                for stale in [k for k, v in self._requested.items() if now >= v.at + v.window]:
                    del self._requested[stale]
                if len(self._requested) >= self._capacity:
                    self._requested.clear()
            self._requested[talk_id] = _Requested(requested_at, debounce)

    def now(self) -> float:
        return self._clock()
