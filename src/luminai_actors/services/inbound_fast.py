"""The known-conversation fast path of inbound messages (PostgreSQL), and AI-turn request coalescing.

The first message of a conversation goes through `services.inbound.record_inbound` (locks, contact and talk
lookup or creation, one ORM transaction). What it learned — agent, contact, open talk, the identities the
contact is known by — is remembered under the conversation key. A later lead message of that conversation,
handled by the same conversation actor, is then inserted only if a check of everything the slow path would
have decided differently passes:

* the talk is still this contact's and this agent's, open (active, not archived, not closed) and not idle
  past the expiry;
* the agent is still active on WhatsApp and unchanged since (its `updated_at`: settings such as
  `ignoreJids` live on the agent row);
* the message is new (`ON CONFLICT DO NOTHING` on the (agent, WhatsApp id) unique key).

It also touches the talk (`date_last_message`, the reply JID) and the contact (`last_contact_date`) like the
slow path. The messages of all conversations waiting at that moment are one set-based statement over arrays
in one transaction (`GroupCommitWriter`). A message the statement does not insert (a duplicate; a closed,
expired or moved talk; a changed agent), or any message of a failed batch, goes through the slow path in
its own transaction, which decides it exactly as before; the fast
path never answers "duplicate" itself.

`TurnRequests` keeps the AI-turn requests of a debounced burst to one: a turn requested at T with the
debounce window d is delayed by d in the broker, so it claims the talk no earlier than T + d (by the worker's
clock), reads every message committed before that, and waits for the lead's pause itself (it requests
itself again while the burst goes on). A message committed before T + d - margin therefore needs no new
request; the margin, min(d/2, `TURN_REQUEST_MARGIN_SECONDS`), absorbs clock skew between the web and worker
processes. A message committed later requests its own turn (and one committed while a turn runs is found by
that turn's read after its commit); the recovery sweep covers a request that is lost anyway.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.phone import canonical_phone, jid_user, phone_from_jid
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.persistence.group_commit import GroupCommitWriter
from luminai_actors.persistence.tables import TALK_ACTIVE
from luminai_actors.services.inbound import InboundOutcome, KnownConversation, inbound_metadata, message_type

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How long before a requested turn may start a message stops counting as covered by it (see the docstring).
TURN_REQUEST_MARGIN_SECONDS = 0.25

# One statement per group commit over a JSON array (one document to encode and send, parsed by PostgreSQL in
# C): each element is one message with what its conversation was known as. talk.status = 0 is TALK_ACTIVE
# (asserted below); the statement is a constant and the batch is one bound value.
FAST_INSERT_BATCH = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS i(
        n int, id uuid, organization_id uuid, talk_id uuid, agent_id uuid, contact_id uuid,
        agent_updated_at timestamptz, fresh_after timestamptz, body text, message_type text,
        whatsapp_message_id text, metadata jsonb, sent_at timestamptz, now timestamptz, reply_jid text)
), allowed AS (
    SELECT i.* FROM input i
    JOIN talk ON talk.id = i.talk_id AND talk.contact_id = i.contact_id AND talk.agent_id = i.agent_id
    JOIN agent ON agent.id = i.agent_id
    WHERE talk.status = 0 AND NOT talk.archived AND talk.closed_at IS NULL
      AND (talk.date_last_message IS NULL OR talk.date_last_message >= i.fresh_after)
      AND agent.active AND agent.whatsapp_active AND agent.updated_at = i.agent_updated_at
    FOR UPDATE OF talk
), ins AS (
    INSERT INTO talk_message (id, organization_id, talk_id, agent_id, from_contact_id, direction, channel,
                              body, message_type, whatsapp_message_id, metadata, send_attempts, sent_at,
                              created_at)
    SELECT id, organization_id, talk_id, agent_id, contact_id, 'inbound', 'whatsapp',
           body, message_type, whatsapp_message_id, metadata, 0, sent_at, now
    FROM allowed ORDER BY n
    ON CONFLICT (agent_id, whatsapp_message_id) DO NOTHING
    RETURNING id
), touch_talk AS (
    UPDATE talk SET date_last_message = last.now, whatsapp_remote_jid = last.reply_jid, updated_at = last.now
    FROM (SELECT DISTINCT ON (a.talk_id) a.talk_id, a.now, a.reply_jid
          FROM allowed a JOIN ins ON ins.id = a.id ORDER BY a.talk_id, a.n DESC) AS last
    WHERE talk.id = last.talk_id
), touch_contact AS (
    UPDATE contact SET last_contact_date = last.now, updated_at = last.now
    FROM (SELECT a.contact_id, max(a.now) AS now
          FROM allowed a JOIN ins ON ins.id = a.id GROUP BY a.contact_id) AS last
    WHERE contact.id = last.contact_id
)
SELECT id FROM ins
"""
assert TALK_ACTIVE == 0, "FAST_INSERT_BATCH spells the active status as 0"


def insert_known_messages(connection: Any, batch: Sequence[Mapping[str, Any]]) -> list[bool]:
    """The group writer's batch: which of the messages were inserted (False: the slow path must decide).

    One statement, so the writer runs it in autocommit: PostgreSQL commits it atomically by itself."""
    document = json.dumps([{**params, "n": n} for n, params in enumerate(batch)], default=str)
    with connection.cursor() as cursor:
        cursor.execute(FAST_INSERT_BATCH, {"batch": document})
        inserted = {str(row[0]) for row in cursor.fetchall()}
    return [str(params["id"]) in inserted for params in batch]


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

    def forget_contact(self, contact_id: uuid.UUID) -> int:
        """Forget every conversation remembered for this contact (erased); how many there were."""
        with self._lock:
            keys = [key for key, known in self._known.items() if known.contact_id == contact_id]
            for key in keys:
                del self._known[key]
            return len(keys)

    def known(self, key: str) -> KnownConversation | None:
        with self._lock:
            return self._known.get(key)

    def submit(
        self, key: str, event: MessageUpsert, finished: Callable[[InboundOutcome | None, datetime], None]
    ) -> bool:
        """Hand a known conversation's message to the group writer; False when the fast path does not apply.

        `finished(outcome, arrived_at)` is called once, on the writer's thread: with the stored outcome after
        the commit, or with None when the slow path must decide the message (it keeps `arrived_at`).
        """
        known = self.known(key)
        if known is None or not fast_path_applies(event, known):
            return False
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
            "metadata": inbound_metadata(event),
            "sent_at": event.sent_at or now,
            "now": now,
            "reply_jid": event.reply_jid,
        }

        def done(inserted: Any, error: BaseException | None) -> None:
            if error is None and inserted:
                stored = InboundOutcome(
                    "stored", None, known.talk_id, message_id, known.contact_id, known=known, fast=True
                )
                finished(stored, now)
            else:
                finished(None, now)

        self.writer.submit(params, done)
        return True


@dataclass(frozen=True, slots=True)
class SlowInbound:
    """A message the fast path handed back: decided by the full lookup, dated when it first arrived."""

    event: MessageUpsert
    key: str
    arrived_at: datetime


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
        if previous is None:
            return False
        margin = min(previous.window / 2, TURN_REQUEST_MARGIN_SECONDS)
        return self._clock() < previous.at + previous.window - margin

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

    def forget(self, talk_ids: Sequence[uuid.UUID]) -> None:
        with self._lock:
            for talk_id in talk_ids:
                self._requested.pop(talk_id, None)

    def now(self) -> float:
        return self._clock()
