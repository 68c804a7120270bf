"""The AI turn's hot path in few statements: SQLAlchemy Core on the session's connection, no ORM loading
(the send's are in `send_path`).

An AI turn and a send each run a handful of statements per task; with the ORM they cost 12 and 8 statements
and most of the worker's CPU (identity map, unit-of-work flush, one entity load per table). Here:

- `claim_turn` (PostgreSQL): one `UPDATE talk … FROM agent, contact … RETURNING` takes the AI lease of a talk
  that is not paused and returns everything the turn reads about it (TalkFlow state, agent, tree flow,
  contact, and its recent messages as one JSON array); its transaction commits without waiting for the disk
  (the lease needs no durability of its own);
- `message_views` / `pending_views`: the talk's recent (or pending) messages as plain rows;
- `finish_turn` (portable): the talk's update with its lease released (only if it is not paused: the
  statement's WHERE), the opt-out of its contact, one `UPDATE` marking the answered messages processed, and
  the reply's INSERT; on PostgreSQL the talk's update, the marking and the inserts are one statement of
  data-modifying CTEs;
- `send_path.claim_send` and `send_path.record_sent`: the same for a send attempt and its settlement.

Every one of them either does its whole job or reports that it did not (`None` / `False`) with nothing
written, and the service then takes its general path (the ORM code, which knows every reason: missing,
paused, in flight, blocked, waiting, failed, …). The claims that need PostgreSQL's `UPDATE … FROM …
RETURNING` of joined tables report "not done" on other databases (SQLite: the embedded default), which
therefore run the general path, as before.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    String,
    Table,
    Uuid,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

from luminai_actors.persistence.tables import (
    Agent,
    Contact,
    Talk,
    TalkMessage,
    TreeFlow,
    utcnow,
)

_talk = cast(Table, Talk.__table__)
_agent = cast(Table, Agent.__table__)
_contact = cast(Table, Contact.__table__)
_flow = cast(Table, TreeFlow.__table__)
_msg = cast(Table, TalkMessage.__table__)


def inline_words(*words: str) -> list[Any]:
    """Constants for an `IN` list, written into the SQL (a list of bound values is expanded per execution,
    which would make each execution compile its own SQL)."""
    assert all(word.isidentifier() for word in words), words
    return [literal_column(f"'{word}'", String) for word in words]


#: (attribute of TalkMessage, its column's key) for building INSERT parameters from a model object.
_MESSAGE_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (attr.key, attr.columns[0].key) for attr in TalkMessage.__mapper__.column_attrs
)


@dataclass(frozen=True, slots=True)
class ClaimedTurn:
    """What an AI turn reads about its talk, returned by the statement that took the talk's lease."""

    talk_flow: dict[str, Any] | None
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    agent_name: str
    agent_prompt: str | None
    agent_metadata: dict[str, Any] | None
    tree_flow_definition: dict[str, Any] | None
    tree_flow_name: str | None
    contact_first_name: str | None
    contact_phone: str | None
    contact_opted_out: bool

    @classmethod
    def of(cls, talk: Talk, agent: Agent, tree_flow: TreeFlow | None, contact: Contact | None) -> ClaimedTurn:
        """The same fields read from loaded rows (the ORM path, and the fake repository)."""
        return cls(
            talk_flow=talk.talk_flow,
            agent_id=agent.id,
            organization_id=agent.organization_id,
            agent_name=agent.name,
            agent_prompt=agent.prompt,
            agent_metadata=agent.whatsapp_metadata,
            tree_flow_definition=tree_flow.definition if tree_flow else None,
            tree_flow_name=tree_flow.name if tree_flow else None,
            contact_first_name=contact.first_name if contact else None,
            contact_phone=contact.phone if contact else None,
            contact_opted_out=bool(contact and contact.opted_out_at),
        )


@dataclass(frozen=True, slots=True)
class MessageView:
    """A talk message as the AI turn reads it (a plain row, not an ORM object)."""

    id: uuid.UUID
    direction: str
    body: str
    processed_at: datetime | None
    sent_at: datetime | None
    created_at: datetime


def _lease_free(column: Any, now: Any) -> Any:
    return or_(column.is_(None), column < now)


# --- AI turn ------------------------------------------------------------------------------------------------


_VIEW_COLUMNS = (
    _msg.c.id,
    _msg.c.direction,
    _msg.c.body,
    _msg.c.processed_at,
    _msg.c.sent_at,
    _msg.c.created_at,
)
_RECENT = (
    select(*_VIEW_COLUMNS)
    .where(_msg.c.talk_id == bindparam("talk_id"))
    .order_by(_msg.c.created_at.desc(), _msg.c.id.desc())
    .limit(bindparam("limit"))
)
# `_RECENT` as one JSON array of [id, direction, body, processed_at, sent_at, created_at], oldest first: a
# column of the claim's RETURNING, which saves the turn the round trip of reading its history.
_recent = _RECENT.subquery("recent")
_RECENT_JSON = select(
    func.json_agg(aggregate_order_by(func.json_build_array(*_recent.c), _recent.c.created_at, _recent.c.id))
).scalar_subquery()
_PENDING_WHERE = (
    _msg.c.talk_id == bindparam("talk_id"),
    _msg.c.direction == "inbound",
    _msg.c.processed_at.is_(None),
)
_PENDING = (
    select(*_VIEW_COLUMNS).where(*_PENDING_WHERE).order_by(_msg.c.sent_at, _msg.c.created_at, _msg.c.id)
)
_ANY_PENDING = select(_msg.c.id).where(*_PENDING_WHERE).limit(1)

_CLAIM_TURN = (
    update(_talk)
    .where(
        _talk.c.id == bindparam("talk_id"),
        _talk.c.paused.is_(False),
        _lease_free(_talk.c.ai_lease_until, bindparam("now")),
        _agent.c.id == _talk.c.agent_id,
        _contact.c.id == _talk.c.contact_id,
    )
    .values(ai_lease_until=bindparam("until"))
    .returning(
        _talk.c.talk_flow,
        _agent.c.id,
        _agent.c.organization_id,
        _agent.c.name,
        _agent.c.prompt,
        _agent.c.whatsapp_metadata,
        select(_flow.c.definition).where(_flow.c.id == _agent.c.tree_flow_id).scalar_subquery(),
        select(_flow.c.name).where(_flow.c.id == _agent.c.tree_flow_id).scalar_subquery(),
        _contact.c.first_name,
        _contact.c.phone,
        _contact.c.opted_out_at.is_not(None),
        _RECENT_JSON,
        _talk.c.date_last_message,
        # This transaction's commit need not wait for its WAL flush (see `claim_turn`).
        func.set_config("synchronous_commit", "off", True),
    )
)


def _mark_processed(talk_match: Any, answered: Any) -> Any:
    """The `answered` messages of the talk `talk_match` selects, marked processed at `at`."""
    return (
        update(_msg)
        .where(talk_match, _msg.c.direction == "inbound", _msg.c.processed_at.is_(None), answered)
        .values(processed_at=bindparam("at"))
    )


# (an UPDATE may not name a bind parameter after one of its columns)
_MARK_PROCESSED = _mark_processed(
    _msg.c.talk_id == bindparam("the_talk"), _msg.c.id.in_(bindparam("answered", expanding=True))
)
#: PostgreSQL's form of the `answered` condition: one array parameter instead of an expanding IN list, so
#: that the statement's text is the same for any number of messages (see `direct`).
_ANSWERED_ANY = _msg.c.id == any_(bindparam("answered", type_=ARRAY(Uuid)))
_OPT_OUT = (
    update(_contact)
    .where(
        _contact.c.id
        == select(_talk.c.contact_id).where(_talk.c.id == bindparam("talk_id")).scalar_subquery(),
        _contact.c.opted_out_at.is_(None),
    )
    .values(opted_out_at=bindparam("at"))
)
_INSERT_MESSAGE = insert(_msg)


def _finish_statement(with_flow: bool, handoff: bool, nested: bool = False) -> Any:
    """The talk's update of `finish_turn`. `nested`: for `_finish_in_one`, whose statement also updates
    talk_message, so the talk is bound as `the_talk` (no parameter may be named after a column of a table the
    statement updates), and `updated_at` as `talk_touched_at` (inside a CTE SQLAlchemy runs no Python-side
    `onupdate`: the caller passes the wall clock)."""
    values: dict[str, Any] = {"ai_lease_until": None, "date_last_message": bindparam("at")}
    if nested:
        values["updated_at"] = bindparam("talk_touched_at")
    if with_flow:  # a turn that leaves no state (an opted-out contact's, before any flow) leaves it alone
        values["talk_flow"] = bindparam("new_flow", type_=_talk.c.talk_flow.type)
    if handoff:
        values.update(paused=True, needs_human=True)
    talk_id = bindparam("the_talk" if nested else "talk_id", type_=_talk.c.id.type)
    return update(_talk).where(_talk.c.id == talk_id, _talk.c.paused.is_(False)).values(values)


_FINISH = {
    (flow, handoff): _finish_statement(flow, handoff) for flow in (False, True) for handoff in (False, True)
}


def claim_turn(
    connection: Connection, talk_id: uuid.UUID, now: datetime, until: datetime, history: int
) -> tuple[ClaimedTurn, list[MessageView]] | None:
    """PostgreSQL: take the AI lease of a talk that exists and is not paused, whose lease is free and whose
    agent and contact exist, and read the turn's context and the talk's last `history` messages (oldest
    first, as `message_views`) in the same statement; the history is read again, in a statement of its
    own, when a message was stored while the claim waited for the talk's row. None: nothing changed.

    The statement also makes its transaction's commit asynchronous (`synchronous_commit` off, for this
    transaction only), which saves the turn one wait for a WAL flush before the brain runs. A lease lost to a
    server crash costs nothing: the turn then fails with that server anyway and runs again after it, since
    its messages are still unanswered; and the turn's next commit, which stores the reply synchronously,
    flushes the WAL up to and including this one."""
    row = connection.execute(
        _CLAIM_TURN, {"talk_id": talk_id, "now": now, "until": until, "limit": history}
    ).first()
    if row is None:
        return None
    *claimed, recent_json, last_message_at, _ = row
    recent = [_view_of_json(item) for item in recent_json or ()]
    if last_message_at is not None and (not recent or last_message_at > recent[-1].created_at):
        # The talk's row was updated after this statement's snapshot (the UPDATE waited for its lock, or
        # found it changed, and then claimed the newest version): the history, read in that snapshot, lacks
        # the message that transaction stored. Read it again (a new snapshot) so that the message joins this
        # turn (or holds it back while a burst is still arriving) instead of getting a turn of its own.
        recent = message_views(connection, talk_id, history)
    return ClaimedTurn(*claimed), recent


def _timestamp(text: str | None) -> datetime | None:
    """A timestamptz as PostgreSQL writes it in JSON (ISO 8601 with the session's offset), in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC) if text is not None else None


def _view_of_json(item: list[Any]) -> MessageView:
    message_id, direction, body, processed_at, sent_at, created_at = item
    created = _timestamp(created_at)
    assert created is not None, "talk_message.created_at is NOT NULL"
    return MessageView(
        uuid.UUID(message_id), direction, body, _timestamp(processed_at), _timestamp(sent_at), created
    )


def message_views(connection: Connection, talk_id: uuid.UUID, limit: int) -> list[MessageView]:
    """The talk's last `limit` messages, oldest first (`Repository.recent_messages` as plain rows)."""
    rows = connection.execute(_RECENT, {"talk_id": talk_id, "limit": limit}).all()
    return [MessageView(*row) for row in reversed(rows)]


def pending_views(connection: Connection, talk_id: uuid.UUID) -> list[MessageView]:
    """`Repository.pending_inbound` as plain rows."""
    return [MessageView(*row) for row in connection.execute(_PENDING, {"talk_id": talk_id}).all()]


def has_pending(connection: Connection, talk_id: uuid.UUID) -> bool:
    return connection.execute(_ANY_PENDING, {"talk_id": talk_id}).first() is not None


def finish_turn(
    connection: Connection,
    talk_id: uuid.UUID,
    *,
    at: datetime,
    talk_flow: dict[str, Any] | None,
    handoff: bool,
    opt_out: bool,
    answered: Sequence[uuid.UUID],
    replies: Sequence[TalkMessage],
) -> bool:
    """Store a turn's result, unless the talk is gone or paused (then False and nothing is written). The talk
    is updated first (its row lock orders this against inbound messages and other turns, as before)."""
    params: dict[str, Any] = {"talk_id": talk_id, "at": at, "new_flow": talk_flow}
    rows = [_reply_values(reply) for reply in replies]
    if connection.dialect.name == "postgresql" and len({tuple(row) for row in rows}) <= 1:
        params["the_talk"] = params.pop("talk_id")
        params["talk_touched_at"] = utcnow()  # what the ORM's `onupdate` writes
        statement = _finish_in_one(
            talk_flow is not None, handoff, bool(answered), tuple(rows[0]) if rows else (), len(rows)
        )
        params |= {
            f"r{index}_{column}": value for index, row in enumerate(rows) for column, value in row.items()
        }
        if answered:
            params["answered"] = list(answered)
        if connection.execute(statement, params).scalar_one() != 1:
            return False
        if opt_out:
            connection.execute(_OPT_OUT, {"talk_id": talk_id, "at": at})
        return True
    done = connection.execute(_FINISH[(talk_flow is not None, handoff)], params)
    if done.rowcount != 1:
        return False
    if opt_out:
        connection.execute(_OPT_OUT, {"talk_id": talk_id, "at": at})
    if answered:
        connection.execute(_MARK_PROCESSED, {"the_talk": talk_id, "answered": list(answered), "at": at})
    for row in rows:
        connection.execute(_INSERT_MESSAGE, row)
    return True


def _reply_values(reply: TalkMessage) -> dict[str, Any]:
    """The reply's row: its set columns (the others keep their defaults)."""
    return {column: value for attr, column in _MESSAGE_COLUMNS if (value := getattr(reply, attr)) is not None}


@functools.cache
def _finish_in_one(
    with_flow: bool, handoff: bool, answered: bool, columns: tuple[str, ...], replies: int
) -> Any:
    """PostgreSQL: `finish_turn`'s statements as one, with data-modifying CTEs: the talk's update (the first
    to run, as it alone reads the talk row and waits for its lock), then, only if it matched, the answered
    messages marked processed and the replies inserted; returns how many talks matched (0 or 1). All parts
    share one snapshot, which changes nothing here: the messages marked are named by id, and the inserts
    read nothing."""
    finished = _finish_statement(with_flow, handoff, nested=True).returning(_talk.c.id).cte("finished")
    ctes = []
    if answered:
        ctes.append(_mark_processed(_msg.c.talk_id.in_(select(finished.c.id)), _ANSWERED_ANY).cte("marked"))
    if replies:
        rows = [
            select(
                *(bindparam(f"r{index}_{column}", type_=_msg.c[column].type) for column in columns)
            ).select_from(finished)
            for index in range(replies)
        ]
        source = rows[0] if replies == 1 else union_all(*rows)
        ctes.append(insert(_msg).from_select(list(columns), source).cte("inserted"))
    return select(func.count()).select_from(finished).add_cte(*ctes)
