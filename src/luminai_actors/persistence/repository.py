"""Queries the services need, behind a small protocol so service tests can run on an in-memory fake.

`Repository` (`persistence.ports`) is what services see; `SqlAlchemyRepository` implements it on a Session.
Objects are the ORM models of `tables.py` (plain Python objects until added to a session), so the fake
stores the same classes. The worker's hot path (AI turn, send) has its own methods, in SQLAlchemy Core
(`hot_path.py`, `send_path.py`): they return plain rows, and the claims among them report "not done"
(None) when they cannot do their whole job in one statement, leaving the general path to the service.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, or_, select, text, update
from sqlalchemy.orm import Session

from luminai_actors.persistence import hot_path, send_path
from luminai_actors.persistence.hot_path import ClaimedTurn, MessageView
from luminai_actors.persistence.ports import M, Repository
from luminai_actors.persistence.send_path import ClaimedSend
from luminai_actors.persistence.tables import (
    CHANNEL_WHATSAPP,
    SEND_PENDING,
    SEND_SENDING,
    SEND_UNSETTLED_WHERE,
    TALK_ACTIVE,
    Agent,
    Base,
    Company,
    Contact,
    Talk,
    TalkAgent,
    TalkMessage,
    TalkType,
    TreeFlowVersion,
    User,
)

__all__ = ["M", "Repository", "SqlAlchemyRepository"]
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


# `idx_talk_message_send_unsettled`'s own predicate, as SQL text rather than bound values: PostgreSQL uses a
# partial index only when it can prove the query's WHERE implies the index's, which a generic plan of a
# prepared statement (psycopg prepares what a connection runs often) cannot do with parameters.
_UNSETTLED_SEND = text(SEND_UNSETTLED_WHERE)


class SqlAlchemyRepository:
    """Repository on a SQLAlchemy Session (PostgreSQL or SQLite)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._postgres: bool | None = None

    @property
    def postgres(self) -> bool:
        if self._postgres is None:
            self._postgres = self.session.get_bind().dialect.name == "postgresql"
        return self._postgres

    def add(self, obj: Base) -> None:
        self.session.add(obj)

    def flush(self) -> None:
        self.session.flush()

    def get(self, model: type[M], ident: uuid.UUID) -> M | None:
        return self.session.get(model, ident)

    def get_for_update(self, model: type[M], ident: uuid.UUID) -> M | None:
        return self.session.get(model, ident, with_for_update=True, populate_existing=True)

    def agent_by_instance(self, instance_name: str) -> Agent | None:
        return self.session.scalar(select(Agent).where(Agent.whatsapp_instance_name == instance_name))

    def instances_with_status(self, whatsapp_status: str) -> list[str]:
        agents = select(Agent.whatsapp_instance_name).where(Agent.whatsapp_status == whatsapp_status)
        return [str(name) for name in self.session.scalars(agents) if name]

    def tree_flow_version(self, tree_flow_id: uuid.UUID, version: int) -> TreeFlowVersion | None:
        return self.session.scalar(
            select(TreeFlowVersion).where(
                TreeFlowVersion.tree_flow_id == tree_flow_id, TreeFlowVersion.version == version
            )
        )

    def contact_by_phones(self, organization_id: uuid.UUID, phones: Sequence[str]) -> Contact | None:
        if not phones:
            return None
        rows = self.session.scalars(
            select(Contact)
            .where(
                Contact.organization_id == organization_id,
                or_(Contact.phone.in_(phones), Contact.mobile_phone.in_(phones)),
            )
            .order_by(Contact.created_at)
        ).all()
        # Prefer the spelling asked first (the one WhatsApp just reported).
        for phone in phones:
            for contact in rows:
                if phone in (contact.phone, contact.mobile_phone):
                    return contact
        return None

    def contact_by_lid(self, organization_id: uuid.UUID, lid: str) -> Contact | None:
        return self.session.scalar(
            select(Contact).where(Contact.organization_id == organization_id, Contact.whatsapp_lid == lid)
        )

    def contact_by_jid(self, organization_id: uuid.UUID, jid: str) -> Contact | None:
        return self.session.scalar(
            select(Contact).where(Contact.organization_id == organization_id, Contact.whatsapp_jid == jid)
        )

    def company_by_name(self, organization_id: uuid.UUID, name: str) -> Company | None:
        return self.session.scalar(
            select(Company)
            .where(Company.organization_id == organization_id, Company.name == name)
            .order_by(Company.created_at)
            .limit(1)
        )

    def talk_type_by_name(self, organization_id: uuid.UUID, name: str) -> TalkType | None:
        return self.session.scalar(
            select(TalkType).where(TalkType.organization_id == organization_id, TalkType.name == name)
        )

    def first_user(self, organization_id: uuid.UUID) -> User | None:
        return self.session.scalar(
            select(User).where(User.organization_id == organization_id).order_by(User.created_at).limit(1)
        )

    def open_whatsapp_talk(self, contact_id: uuid.UUID, agent_id: uuid.UUID) -> Talk | None:
        return self.session.scalar(
            select(Talk)
            .join(TalkAgent, TalkAgent.talk_id == Talk.id)
            .where(
                Talk.contact_id == contact_id,
                TalkAgent.agent_id == agent_id,
                Talk.channel == CHANNEL_WHATSAPP,
                Talk.status == TALK_ACTIVE,
                Talk.archived.is_(False),
                Talk.closed_at.is_(None),
            )
            .order_by(Talk.date_last_message.desc())
            .limit(1)
        )

    def message_by_whatsapp_id(self, agent_id: uuid.UUID, whatsapp_message_id: str) -> TalkMessage | None:
        return self.session.scalar(
            select(TalkMessage).where(
                TalkMessage.agent_id == agent_id, TalkMessage.whatsapp_message_id == whatsapp_message_id
            )
        )

    def pending_inbound(self, talk_id: uuid.UUID) -> list[TalkMessage]:
        return list(
            self.session.scalars(
                select(TalkMessage)
                .where(
                    TalkMessage.talk_id == talk_id,
                    TalkMessage.direction == "inbound",
                    TalkMessage.processed_at.is_(None),
                )
                .order_by(TalkMessage.sent_at, TalkMessage.created_at, TalkMessage.id)
            )
        )

    def recent_messages(self, talk_id: uuid.UUID, limit: int) -> list[TalkMessage]:
        rows = self.session.scalars(
            select(TalkMessage)
            .where(TalkMessage.talk_id == talk_id)
            .order_by(TalkMessage.created_at.desc(), TalkMessage.id.desc())
            .limit(limit)
        ).all()
        return list(reversed(rows))

    def talk_agent_ids(self, talk_id: uuid.UUID) -> list[uuid.UUID]:
        return list(self.session.scalars(select(TalkAgent.agent_id).where(TalkAgent.talk_id == talk_id)))

    def claim_ai_turn(self, talk_id: uuid.UUID, now: datetime, until: datetime) -> bool:
        result = self.session.execute(
            update(Talk)
            .where(Talk.id == talk_id, or_(Talk.ai_lease_until.is_(None), Talk.ai_lease_until < now))
            .values(ai_lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def release_ai_turn(self, talk_id: uuid.UUID) -> None:
        self.session.execute(
            update(Talk)
            .where(Talk.id == talk_id)
            .values(ai_lease_until=None)
            .execution_options(synchronize_session=False)
        )

    def talks_awaiting_ai(self, before: datetime, now: datetime, limit: int) -> list[uuid.UUID]:
        return list(
            self.session.scalars(
                select(TalkMessage.talk_id)
                .join(Talk, Talk.id == TalkMessage.talk_id)
                .where(
                    TalkMessage.direction == "inbound",
                    TalkMessage.processed_at.is_(None),
                    TalkMessage.created_at < before,
                    Talk.paused.is_(False),
                    or_(Talk.ai_lease_until.is_(None), Talk.ai_lease_until < now),
                )
                .group_by(TalkMessage.talk_id)
                .limit(limit)
            )
        )

    def messages_awaiting_send(self, before: datetime, now: datetime, limit: int) -> list[uuid.UUID]:
        return list(
            self.session.scalars(
                select(TalkMessage.id)
                .where(
                    _UNSETTLED_SEND,
                    TalkMessage.created_at < before,
                    or_(TalkMessage.send_lease_until.is_(None), TalkMessage.send_lease_until < now),
                )
                .order_by(TalkMessage.created_at)
                .limit(limit)
            )
        )

    def delete(self, obj: Base) -> None:
        self.session.delete(obj)

    def unmatched_outbound(self, talk_id: uuid.UUID, body: str) -> TalkMessage | None:
        return self.session.scalar(
            select(TalkMessage)
            .where(
                TalkMessage.talk_id == talk_id,
                TalkMessage.direction == "outbound",
                TalkMessage.whatsapp_message_id.is_(None),
                TalkMessage.send_status.in_((SEND_PENDING, SEND_SENDING)),
                TalkMessage.body == body,
            )
            .order_by(TalkMessage.created_at)
            .limit(1)
        )

    def sends_in_flight(self, agent_id: uuid.UUID) -> bool:
        found = self.session.scalar(
            select(TalkMessage.id)
            .where(TalkMessage.agent_id == agent_id, _UNSETTLED_SEND, TalkMessage.send_status == SEND_SENDING)
            .limit(1)
        )
        return found is not None

    def talks_of_contact(self, contact_id: uuid.UUID) -> list[Talk]:
        return list(
            self.session.scalars(select(Talk).where(Talk.contact_id == contact_id).order_by(Talk.created_at))
        )

    def messages_of_talk(self, talk_id: uuid.UUID) -> list[TalkMessage]:
        return list(
            self.session.scalars(
                select(TalkMessage).where(TalkMessage.talk_id == talk_id).order_by(TalkMessage.created_at)
            )
        )

    def messages_from_contact(self, contact_id: uuid.UUID) -> list[TalkMessage]:
        return list(
            self.session.scalars(select(TalkMessage).where(TalkMessage.from_contact_id == contact_id))
        )

    def _unsettled_outbound(self, talk_id: uuid.UUID) -> Select[TalkMessage]:
        return select(TalkMessage).where(
            TalkMessage.talk_id == talk_id,
            TalkMessage.direction == "outbound",
            TalkMessage.send_status.in_((SEND_PENDING, SEND_SENDING)),
        )

    def earlier_unsettled_outbound(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> TalkMessage | None:
        earlier = or_(
            TalkMessage.created_at < created_at,
            and_(TalkMessage.created_at == created_at, TalkMessage.id < message_id),
        )
        return self.session.scalar(self._unsettled_outbound(talk_id).where(earlier).limit(1))

    def next_unsettled_outbound(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> TalkMessage | None:
        later = or_(
            TalkMessage.created_at > created_at,
            and_(TalkMessage.created_at == created_at, TalkMessage.id > message_id),
        )
        query = self._unsettled_outbound(talk_id).where(later)
        return self.session.scalar(query.order_by(TalkMessage.created_at, TalkMessage.id).limit(1))

    def unsettled_outbound_of_agent(self, agent_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
        return list(
            self.session.scalars(
                select(TalkMessage.id)
                .where(
                    TalkMessage.agent_id == agent_id,
                    _UNSETTLED_SEND,
                    TalkMessage.send_status == SEND_PENDING,
                )
                .order_by(TalkMessage.created_at, TalkMessage.id)
                .limit(limit)
            )
        )

    # --- the worker's hot path: Core statements on the session's connection (`hot_path.py`) ---------------

    def claim_turn(
        self, talk_id: uuid.UUID, now: datetime, until: datetime, history: int
    ) -> tuple[ClaimedTurn, list[MessageView]] | None:
        """PostgreSQL only (one `UPDATE … FROM … RETURNING`, the talk's last `history` messages included);
        elsewhere None: the caller's general path."""
        if not self.postgres:
            return None
        return hot_path.claim_turn(self.session.connection(), talk_id, now, until, history)

    def message_views(self, talk_id: uuid.UUID, limit: int) -> list[MessageView]:
        return hot_path.message_views(self.session.connection(), talk_id, limit)

    def pending_views(self, talk_id: uuid.UUID) -> list[MessageView]:
        return hot_path.pending_views(self.session.connection(), talk_id)

    def _reader(self) -> Connection:
        """The connection for a single read. Outside a transaction (the worker's look after its commit) on
        PostgreSQL it runs in autocommit: no BEGIN and ROLLBACK round trips around one SELECT."""
        if self.postgres and not self.session.in_transaction():
            return self.session.connection(execution_options=_AUTOCOMMIT)
        return self.session.connection()

    def has_pending_inbound(self, talk_id: uuid.UUID) -> bool:
        return hot_path.has_pending(self._reader(), talk_id)

    def finish_turn(
        self,
        talk_id: uuid.UUID,
        *,
        at: datetime,
        talk_flow: dict[str, Any] | None,
        handoff: bool,
        opt_out: bool,
        answered: Sequence[uuid.UUID],
        replies: Sequence[TalkMessage],
    ) -> bool:
        return hot_path.finish_turn(
            self.session.connection(),
            talk_id,
            at=at,
            talk_flow=talk_flow,
            handoff=handoff,
            opt_out=opt_out,
            answered=answered,
            replies=replies,
        )

    def claim_send(
        self,
        message_id: uuid.UUID,
        *,
        now: datetime,
        lease_until: datetime,
        attempt_at: str,
        max_attempts: int,
    ) -> ClaimedSend | None:
        """PostgreSQL only (one `UPDATE … FROM … RETURNING`); elsewhere None: the caller's general path."""
        if not self.postgres:
            return None
        return send_path.claim_send(
            self.session.connection(),
            message_id,
            now=now,
            lease_until=lease_until,
            attempt_at=attempt_at,
            max_attempts=max_attempts,
        )

    def record_sent(
        self, message_id: uuid.UUID, *, at: datetime, whatsapp_id: str | None, meta_patch: dict[str, Any]
    ) -> tuple[uuid.UUID, datetime] | None:
        """PostgreSQL only (the metadata is merged in SQL); elsewhere None: the caller's general path."""
        if not self.postgres:
            return None
        return send_path.record_sent(
            self.session.connection(), message_id, at=at, whatsapp_id=whatsapp_id, meta_patch=meta_patch
        )

    def next_unsettled_outbound_id(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> uuid.UUID | None:
        return send_path.next_unsettled_id(self._reader(), talk_id, created_at, message_id)
