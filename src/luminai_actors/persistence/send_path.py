"""The send's hot path (see `hot_path` for the rule both follow): SQLAlchemy Core, no ORM loading.

- `claim_send` (PostgreSQL): one `UPDATE talk_message … FROM talk, agent, contact … RETURNING` records a send
  attempt (status `sending`, attempt count, lease, metadata) of a reply that is next in its talk's order,
  has attempts left and whose agent is configured and available, and returns what sendText needs;
- `record_sent` (PostgreSQL): one `UPDATE … RETURNING` that settles the send with its metadata merged in SQL;
- `next_unsettled_id` (portable): the talk's next reply waiting to be sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from luminai_actors.persistence.hot_path import inline_words
from luminai_actors.persistence.tables import (
    SEND_PENDING,
    SEND_SENDING,
    SEND_SENT,
    WHATSAPP_WAITING_STATUSES,
    Agent,
    Contact,
    Talk,
    TalkMessage,
)

_talk = cast(Table, Talk.__table__)
_agent = cast(Table, Agent.__table__)
_contact = cast(Table, Contact.__table__)
_msg = cast(Table, TalkMessage.__table__)
_earlier = _msg.alias("earlier")


@dataclass(frozen=True, slots=True)
class ClaimedSend:
    """A reply whose send attempt was just recorded, with what sendText needs."""

    talk_id: uuid.UUID
    created_at: datetime
    body: str
    meta: dict[str, Any]
    attempt: int
    remote_jid: str | None
    contact_phone: str | None
    contact_mobile_phone: str | None
    server_url: str
    server_url_trusted: bool
    api_key: str
    instance: str
    agent_metadata: dict[str, Any] | None


# --- Send ---------------------------------------------------------------------------------------------------

_CLAIMABLE = or_(
    _msg.c.send_status == SEND_PENDING,
    and_(
        _msg.c.send_status == SEND_SENDING,
        or_(_msg.c.send_lease_until.is_(None), _msg.c.send_lease_until <= bindparam("now")),
    ),
)
_EARLIER_UNSETTLED = exists().where(
    _earlier.c.talk_id == _msg.c.talk_id,
    _earlier.c.direction == "outbound",
    _earlier.c.send_status.in_(inline_words(SEND_PENDING, SEND_SENDING)),
    or_(
        _earlier.c.created_at < _msg.c.created_at,
        and_(_earlier.c.created_at == _msg.c.created_at, _earlier.c.id < _msg.c.id),
    ),
)


def _configured(column: Any) -> Any:
    return func.coalesce(column, "") != ""


# A claim that takes over a reply still `sending` (its worker died mid-call, the lease expired) notes that the
# previous attempt may have gone out (`services.maybe_sent`); the SET reads the row as it was.
_PREVIOUS_ATTEMPT = _msg.c.metadata.op("->", return_type=JSONB)(literal("whatsappLastAttemptAt", String))
_MAYBE_SENT_IF_TAKEN_OVER = case(
    (
        and_(_msg.c.send_status == SEND_SENDING, _PREVIOUS_ATTEMPT.is_not(None)),
        func.jsonb_build_object(literal("whatsappMaybeSentAt", String), _PREVIOUS_ATTEMPT),
    ),
    else_=sql_cast(literal("{}", String), JSONB),
)

_CLAIM_SEND = (
    update(_msg)
    .where(
        _msg.c.id == bindparam("message_id"),
        _msg.c.direction == "outbound",
        _CLAIMABLE,
        _msg.c.send_attempts < bindparam("max_attempts"),
        ~_EARLIER_UNSETTLED,
        _talk.c.id == _msg.c.talk_id,
        _agent.c.id == func.coalesce(_msg.c.agent_id, _talk.c.agent_id),
        _contact.c.id == _talk.c.contact_id,
        _configured(_agent.c.whatsapp_server_url),
        _configured(_agent.c.whatsapp_api_key),
        _configured(_agent.c.whatsapp_instance_name),
        _agent.c.active.is_(True),
        _agent.c.whatsapp_active.is_(True),
        or_(
            _agent.c.whatsapp_status.is_(None),
            _agent.c.whatsapp_status.not_in(inline_words(*WHATSAPP_WAITING_STATUSES)),
        ),
    )
    .values(
        send_status=SEND_SENDING,
        send_attempts=_msg.c.send_attempts + 1,
        send_lease_until=bindparam("lease_until"),
        metadata=_msg.c.metadata.op("||")(
            func.jsonb_build_object(
                literal("whatsappAttempts", String),
                _msg.c.send_attempts + 1,
                literal("whatsappLastAttemptAt", String),
                bindparam("attempt_at", type_=String),
            )
        ).op("||")(_MAYBE_SENT_IF_TAKEN_OVER),
    )
    .returning(
        _msg.c.talk_id,
        _msg.c.created_at,
        _msg.c.body,
        _msg.c.metadata,
        _msg.c.send_attempts,
        _talk.c.whatsapp_remote_jid,
        _contact.c.phone,
        _contact.c.mobile_phone,
        _agent.c.whatsapp_server_url,
        _agent.c.whatsapp_server_url_trusted,
        _agent.c.whatsapp_api_key,
        _agent.c.whatsapp_instance_name,
        _agent.c.whatsapp_metadata,
    )
)

_RECORD_SENT = (
    update(_msg)
    .where(_msg.c.id == bindparam("message_id"))
    .values(
        send_status=SEND_SENT,
        send_lease_until=None,
        sent_at=bindparam("at"),
        delivered_at=bindparam("at"),
        whatsapp_message_id=func.coalesce(bindparam("whatsapp_id", type_=String), _msg.c.whatsapp_message_id),
        metadata=_msg.c.metadata.op("-")(literal("whatsappError", String))
        .op("-")(literal("whatsappFailedAt", String))
        .op("||")(bindparam("patch", type_=JSONB)),
    )
    .returning(_msg.c.talk_id, _msg.c.created_at)
)

_NEXT_UNSETTLED = (
    select(_msg.c.id)
    .where(
        _msg.c.talk_id == bindparam("talk_id"),
        _msg.c.direction == "outbound",
        _msg.c.send_status.in_(inline_words(SEND_PENDING, SEND_SENDING)),
        or_(
            _msg.c.created_at > bindparam("created_at"),
            and_(_msg.c.created_at == bindparam("created_at"), _msg.c.id > bindparam("message_id")),
        ),
    )
    .order_by(_msg.c.created_at, _msg.c.id)
    .limit(1)
)


def claim_send(
    connection: Connection,
    message_id: uuid.UUID,
    *,
    now: datetime,
    lease_until: datetime,
    attempt_at: str,
    max_attempts: int,
) -> ClaimedSend | None:
    """PostgreSQL: record the next attempt of a reply that can be sent now (see the module docstring) and
    return it. None: nothing changed."""
    row = connection.execute(
        _CLAIM_SEND,
        {
            "message_id": message_id,
            "now": now,
            "lease_until": lease_until,
            "attempt_at": attempt_at,
            "max_attempts": max_attempts,
        },
    ).first()
    if row is None:
        return None
    return ClaimedSend(*row)


def record_sent(
    connection: Connection,
    message_id: uuid.UUID,
    *,
    at: datetime,
    whatsapp_id: str | None,
    meta_patch: dict[str, Any],
) -> tuple[uuid.UUID, datetime] | None:
    """PostgreSQL: settle a send as sent; its metadata loses `whatsappError`/`whatsappFailedAt` and gains
    `meta_patch`. Returns the message's talk and creation time; None when the message does not exist."""
    row = connection.execute(
        _RECORD_SENT, {"message_id": message_id, "at": at, "whatsapp_id": whatsapp_id, "patch": meta_patch}
    ).first()
    return (row[0], row[1]) if row is not None else None


def next_unsettled_id(
    connection: Connection, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
) -> uuid.UUID | None:
    """`Repository.next_unsettled_outbound`, only its id."""
    row = connection.execute(
        _NEXT_UNSETTLED, {"talk_id": talk_id, "created_at": created_at, "message_id": message_id}
    ).first()
    return row[0] if row is not None else None
