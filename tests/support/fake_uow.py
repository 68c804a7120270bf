"""In-memory `Repository` and `UnitOfWork` for service tests, in the manner of cosmicpython's fakes.

`FakeRepository` keeps lists of the ORM model objects of `persistence.tables` (plain Python objects outside a
session) and answers every query of the `Repository` protocol with the semantics of `SqlAlchemyRepository`:
the same filters and ordering (NULLs sort as PostgreSQL sorts them), the conditional-update claim of
`claim_ai_turn`, `get_for_update` as `get`, and the worker's hot-path methods as on PostgreSQL (the claims
and `finish_turn` do their whole job, or report that they did not and change nothing). Column defaults,
which SQLAlchemy applies only on INSERT, are filled on `add`. The unique constraints services rely on (one
WhatsApp message id per agent, one contact per phone/LID, one open talk per contact and agent, ...) are
checked on `flush` and `commit` and raise `Conflict`.

`FakeUnitOfWork` is a transaction over a shared repository: entering takes a snapshot, `commit()` keeps the
changes, `rollback()` (and leaving without commit) drops the rows added and puts back the attributes changed
since, as a database would; rows added outside any transaction (test set-up) are kept at once. There is no
isolation between units of work. Services take `uow.factory()`, which returns the same unit of work each
time, so the repository persists across their "transactions".
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from sqlalchemy import inspect

from luminai_actors.domain.ids import uuid7
from luminai_actors.errors import Conflict
from luminai_actors.persistence.hot_path import ClaimedTurn, MessageView
from luminai_actors.persistence.repository import Repository
from luminai_actors.persistence.send_path import ClaimedSend
from luminai_actors.persistence.tables import (
    CHANNEL_WHATSAPP,
    SEND_PENDING,
    SEND_SENDING,
    SEND_SENT,
    TALK_ACTIVE,
    Agent,
    Base,
    Company,
    Contact,
    Talk,
    TalkAgent,
    TalkMessage,
    TalkType,
    TreeFlow,
    TreeFlowVersion,
    User,
)
from luminai_actors.persistence.uow import UnitOfWorkFactory

__all__ = ["FakeRepository", "FakeUnitOfWork"]

M = TypeVar("M", bound=Base)
Key = tuple[object, ...]

# The database's unique constraints and indexes services rely on: (model, name, the row's key, or None when
# the row is exempt: outside a partial index's WHERE). A key with a NULL part is exempt too, as in SQL.
_UNIQUE: tuple[tuple[type[Base], str, Callable[[Any], Key | None]], ...] = (
    (
        TalkMessage,
        "uq_talk_message_agent_id_whatsapp_message_id",
        lambda m: (m.agent_id, m.whatsapp_message_id),
    ),
    (Contact, "idx_contact_phone_org", lambda c: (c.phone, c.organization_id)),
    (Contact, "idx_contact_mobile_org", lambda c: (c.mobile_phone, c.organization_id)),
    (Contact, "idx_contact_lid_org", lambda c: (c.whatsapp_lid, c.organization_id)),
    (Contact, "idx_contact_jid_org", lambda c: (c.whatsapp_jid, c.organization_id)),
    (Agent, "idx_agent_whatsapp_instance", lambda a: (a.whatsapp_instance_name,)),
    (TalkType, "uq_talk_type_organization_id_name", lambda t: (t.organization_id, t.name)),
    (TalkAgent, "pk_talk_agent", lambda ta: (ta.talk_id, ta.agent_id)),
    (Talk, "idx_talk_open_per_contact_agent", lambda t: _open_talk_key(t)),
)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def _open_talk_key(t: Talk) -> Key | None:
    is_open = t.status == TALK_ACTIVE and not t.archived and t.closed_at is None
    return (t.contact_id, t.agent_id, t.channel) if is_open else None


def _state(obj: Base) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in vars(obj).items() if not k.startswith("_sa_")}


def _null_highest(value: datetime | None) -> tuple[bool, datetime]:
    # PostgreSQL's order: NULL sorts above every value (last in ASC, first in DESC).
    return (value is None, value or _EPOCH)


def _lease_free(lease_until: datetime | None, now: datetime) -> bool:
    return lease_until is None or lease_until < now


class FakeRepository:
    """`Repository` over in-memory lists of ORM objects; `rows(Model)` lets tests look at what is stored."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self._rows: dict[type[Base], list[Any]] = {}
        self._saved_rows: dict[type[Base], list[Any]] = {}
        self._saved_state: list[tuple[Base, dict[str, Any]]] = []
        self._open_transactions = 0

    def rows(self, model: type[M]) -> list[M]:
        """Every stored row of `model`, in insertion order (a copy: changing it changes nothing)."""
        return list(cast(list[M], self._rows.get(model, [])))

    def check_constraints(self) -> None:
        """Raise `Conflict` when two rows share a unique key, as the database does at flush."""
        for model, name, key_of in _UNIQUE:
            seen: set[Key] = set()
            for key in map(key_of, self._rows.get(model, [])):
                if key is None or None in key:
                    continue
                if key in seen:
                    raise Conflict(f"duplicate key value violates unique constraint {name!r}: {key}")
                seen.add(key)

    def begin(self) -> None:
        self._open_transactions += 1
        self.snapshot()

    def end(self) -> None:
        """Close a transaction, losing what it did not commit."""
        self.restore()
        self._open_transactions = max(0, self._open_transactions - 1)

    def snapshot(self) -> None:
        """Remember the current rows and their attributes (what a rollback goes back to)."""
        self._saved_rows = {model: list(rows) for model, rows in self._rows.items()}
        self._saved_state = [(obj, _state(obj)) for rows in self._rows.values() for obj in rows]

    def restore(self) -> None:
        """Go back to the last snapshot: rows added since disappear, changed attributes are put back."""
        self._rows = {model: list(rows) for model, rows in self._saved_rows.items()}
        for obj, state in self._saved_state:
            for name, value in state.items():
                setattr(obj, name, copy.deepcopy(value))

    def _fill_defaults(self, obj: Base) -> None:
        for attr in inspect(type(obj)).column_attrs:
            if getattr(obj, attr.key) is not None:
                continue
            default: Any = attr.columns[0].default
            value: object = None
            if attr.key == "id":
                value = uuid7()
            elif default is not None and default.is_scalar:
                value = default.arg
            elif default is not None and default.is_callable:
                value = default.arg(None)
                if isinstance(value, datetime):
                    value = self.clock()
            setattr(obj, attr.key, value)

    def _where(self, model: type[M], predicate: Callable[[M], bool]) -> list[M]:
        return [row for row in self.rows(model) if predicate(row)]

    def _first(self, model: type[M], predicate: Callable[[M], bool]) -> M | None:
        return next((row for row in self.rows(model) if predicate(row)), None)

    def add(self, obj: Base) -> None:
        self._fill_defaults(obj)
        rows = self._rows.setdefault(type(obj), [])
        if not any(row is obj for row in rows):
            rows.append(obj)
        if not self._open_transactions:
            self.snapshot()  # set-up outside a transaction is committed at once

    def flush(self) -> None:
        self.check_constraints()

    def get(self, model: type[M], ident: uuid.UUID) -> M | None:
        return self._first(model, lambda row: getattr(row, "id", None) == ident)

    def get_for_update(self, model: type[M], ident: uuid.UUID) -> M | None:
        return self.get(model, ident)

    def agent_by_instance(self, instance_name: str) -> Agent | None:
        return self._first(Agent, lambda a: a.whatsapp_instance_name == instance_name)

    def instances_with_status(self, whatsapp_status: str) -> list[str]:
        agents = self._where(
            Agent, lambda a: a.whatsapp_status == whatsapp_status and a.whatsapp_instance_name
        )
        return [str(a.whatsapp_instance_name) for a in agents]

    def tree_flow_version(self, tree_flow_id: uuid.UUID, version: int) -> TreeFlowVersion | None:
        return self._first(TreeFlowVersion, lambda v: v.tree_flow_id == tree_flow_id and v.version == version)

    def contact_by_phones(self, organization_id: uuid.UUID, phones: Sequence[str]) -> Contact | None:
        rows = sorted(
            self._where(Contact, lambda c: c.organization_id == organization_id), key=lambda c: c.created_at
        )
        for phone in phones:  # the spelling asked first wins, as in SqlAlchemyRepository
            for contact in rows:
                if phone in (contact.phone, contact.mobile_phone):
                    return contact
        return None

    def contact_by_lid(self, organization_id: uuid.UUID, lid: str) -> Contact | None:
        return self._first(Contact, lambda c: c.organization_id == organization_id and c.whatsapp_lid == lid)

    def company_by_name(self, organization_id: uuid.UUID, name: str) -> Company | None:
        found = self._where(Company, lambda c: c.organization_id == organization_id and c.name == name)
        return min(found, key=lambda c: c.created_at, default=None)

    def talk_type_by_name(self, organization_id: uuid.UUID, name: str) -> TalkType | None:
        return self._first(TalkType, lambda t: t.organization_id == organization_id and t.name == name)

    def first_user(self, organization_id: uuid.UUID) -> User | None:
        found = self._where(User, lambda u: u.organization_id == organization_id)
        return min(found, key=lambda u: u.created_at, default=None)

    def open_whatsapp_talk(self, contact_id: uuid.UUID, agent_id: uuid.UUID) -> Talk | None:
        talk_ids = {ta.talk_id for ta in self.rows(TalkAgent) if ta.agent_id == agent_id}
        found = self._where(
            Talk,
            lambda t: (
                t.id in talk_ids
                and t.contact_id == contact_id
                and t.channel == CHANNEL_WHATSAPP
                and t.status == TALK_ACTIVE
                and not t.archived
                and t.closed_at is None
            ),
        )
        return max(found, key=lambda t: _null_highest(t.date_last_message), default=None)  # DESC

    def message_by_whatsapp_id(self, agent_id: uuid.UUID, whatsapp_message_id: str) -> TalkMessage | None:
        return self._first(
            TalkMessage, lambda m: m.agent_id == agent_id and m.whatsapp_message_id == whatsapp_message_id
        )

    def pending_inbound(self, talk_id: uuid.UUID) -> list[TalkMessage]:
        found = self._where(
            TalkMessage,
            lambda m: m.talk_id == talk_id and m.direction == "inbound" and m.processed_at is None,
        )
        return sorted(found, key=lambda m: (_null_highest(m.sent_at), m.created_at, m.id))

    def recent_messages(self, talk_id: uuid.UUID, limit: int) -> list[TalkMessage]:
        found = sorted(
            self._where(TalkMessage, lambda m: m.talk_id == talk_id), key=lambda m: (m.created_at, m.id)
        )
        return found[-limit:] if limit > 0 else []

    def talk_agent_ids(self, talk_id: uuid.UUID) -> list[uuid.UUID]:
        return [ta.agent_id for ta in self.rows(TalkAgent) if ta.talk_id == talk_id]

    def claim_ai_turn(self, talk_id: uuid.UUID, now: datetime, until: datetime) -> bool:
        talk = self.get(Talk, talk_id)
        if talk is None or not _lease_free(talk.ai_lease_until, now):
            return False
        talk.ai_lease_until = until
        return True

    def release_ai_turn(self, talk_id: uuid.UUID) -> None:
        talk = self.get(Talk, talk_id)
        if talk is not None:
            talk.ai_lease_until = None

    def talks_awaiting_ai(self, before: datetime, now: datetime, limit: int) -> list[uuid.UUID]:
        talks = {t.id: t for t in self.rows(Talk)}
        found: list[uuid.UUID] = []
        for m in self.rows(TalkMessage):
            talk = talks.get(m.talk_id)
            if (
                talk is not None
                and m.direction == "inbound"
                and m.processed_at is None
                and m.created_at < before
                and not talk.paused
                and _lease_free(talk.ai_lease_until, now)
                and m.talk_id not in found
            ):
                found.append(m.talk_id)
        return found[:limit]

    def messages_awaiting_send(self, before: datetime, now: datetime, limit: int) -> list[uuid.UUID]:
        found = self._where(
            TalkMessage,
            lambda m: (
                m.direction == "outbound"
                and m.send_status in (SEND_PENDING, SEND_SENDING)
                and m.created_at < before
                and _lease_free(m.send_lease_until, now)
            ),
        )
        return [m.id for m in sorted(found, key=lambda m: m.created_at)][:limit]

    def contact_by_jid(self, organization_id: uuid.UUID, jid: str) -> Contact | None:
        return self._first(Contact, lambda c: c.organization_id == organization_id and c.whatsapp_jid == jid)

    def _unsettled_outbound(self, talk_id: uuid.UUID) -> list[TalkMessage]:
        rows = self._where(
            TalkMessage,
            lambda m: (
                m.talk_id == talk_id
                and m.direction == "outbound"
                and m.send_status in (SEND_PENDING, SEND_SENDING)
            ),
        )
        return sorted(rows, key=lambda m: (m.created_at, m.id))

    def earlier_unsettled_outbound(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> TalkMessage | None:
        return next(
            (m for m in self._unsettled_outbound(talk_id) if (m.created_at, m.id) < (created_at, message_id)),
            None,
        )

    def next_unsettled_outbound(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> TalkMessage | None:
        return next(
            (m for m in self._unsettled_outbound(talk_id) if (m.created_at, m.id) > (created_at, message_id)),
            None,
        )

    def unsettled_outbound_of_agent(self, agent_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
        rows = self._where(
            TalkMessage,
            lambda m: m.agent_id == agent_id and m.direction == "outbound" and m.send_status == SEND_PENDING,
        )
        return [m.id for m in sorted(rows, key=lambda m: (m.created_at, m.id))][:limit]

    def delete(self, obj: Base) -> None:
        rows = self._rows.get(type(obj), [])
        self._rows[type(obj)] = [row for row in rows if row is not obj]

    def unmatched_outbound(self, talk_id: uuid.UUID, body: str) -> TalkMessage | None:
        candidates = self._where(
            TalkMessage,
            lambda m: (
                m.talk_id == talk_id
                and m.direction == "outbound"
                and m.whatsapp_message_id is None
                and m.send_status in (SEND_PENDING, SEND_SENDING)
                and m.body == body
            ),
        )
        return min(candidates, key=lambda m: m.created_at, default=None)

    def sends_in_flight(self, agent_id: uuid.UUID) -> bool:
        return (
            self._first(TalkMessage, lambda m: m.agent_id == agent_id and m.send_status == SEND_SENDING)
            is not None
        )

    def talks_of_contact(self, contact_id: uuid.UUID) -> list[Talk]:
        return sorted(self._where(Talk, lambda t: t.contact_id == contact_id), key=lambda t: t.created_at)

    def messages_of_talk(self, talk_id: uuid.UUID) -> list[TalkMessage]:
        return sorted(self._where(TalkMessage, lambda m: m.talk_id == talk_id), key=lambda m: m.created_at)

    def messages_from_contact(self, contact_id: uuid.UUID) -> list[TalkMessage]:
        return self._where(TalkMessage, lambda m: m.from_contact_id == contact_id)

    # --- the worker's hot path, with the semantics of `persistence/hot_path.py` on PostgreSQL ---------------

    def claim_turn(
        self, talk_id: uuid.UUID, now: datetime, until: datetime, history: int
    ) -> tuple[ClaimedTurn, list[MessageView]] | None:
        talk = self.get(Talk, talk_id)
        if talk is None or talk.paused or not _lease_free(talk.ai_lease_until, now):
            return None
        agent = self.get(Agent, talk.agent_id) if talk.agent_id else None
        contact = self.get(Contact, talk.contact_id)
        if agent is None or contact is None:
            return None
        flow = self.get(TreeFlow, agent.tree_flow_id) if agent.tree_flow_id else None
        talk.ai_lease_until = until
        # a copy, as rows read from a database would be: the turn must not mutate the stored state
        return copy.deepcopy(ClaimedTurn.of(talk, agent, flow, contact)), self.message_views(talk_id, history)

    @staticmethod
    def _view(m: TalkMessage) -> MessageView:
        return MessageView(m.id, m.direction, m.body, m.processed_at, m.sent_at, m.created_at)

    def message_views(self, talk_id: uuid.UUID, limit: int) -> list[MessageView]:
        return [self._view(m) for m in self.recent_messages(talk_id, limit)]

    def pending_views(self, talk_id: uuid.UUID) -> list[MessageView]:
        return [self._view(m) for m in self.pending_inbound(talk_id)]

    def has_pending_inbound(self, talk_id: uuid.UUID) -> bool:
        return bool(self.pending_inbound(talk_id))

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
        talk = self.get(Talk, talk_id)
        if talk is None or talk.paused:
            return False
        talk.ai_lease_until = None
        talk.date_last_message = at
        if talk_flow is not None:
            talk.talk_flow = copy.deepcopy(talk_flow)
        if handoff:
            talk.paused = True
            talk.needs_human = True
        contact = self.get(Contact, talk.contact_id) if opt_out else None
        if contact is not None and contact.opted_out_at is None:
            contact.opted_out_at = at
        for message in self.pending_inbound(talk_id):
            if message.id in answered:
                message.processed_at = at
        for reply in replies:
            self.add(reply)
        return True

    def claim_send(
        self,
        message_id: uuid.UUID,
        *,
        now: datetime,
        lease_until: datetime,
        attempt_at: str,
        max_attempts: int,
    ) -> ClaimedSend | None:
        message = self.get(TalkMessage, message_id)
        if message is None or message.direction != "outbound" or message.send_attempts >= max_attempts:
            return None
        claimable = message.send_status == SEND_PENDING or (
            message.send_status == SEND_SENDING
            and (message.send_lease_until is None or message.send_lease_until <= now)
        )
        if not claimable or self.earlier_unsettled_outbound(message.talk_id, message.created_at, message.id):
            return None
        talk = self.get(Talk, message.talk_id)
        agent_id = message.agent_id or (talk.agent_id if talk else None)
        agent = self.get(Agent, agent_id) if agent_id else None
        contact = self.get(Contact, talk.contact_id) if talk else None
        if talk is None or agent is None or contact is None:
            return None
        if not (agent.whatsapp_server_url and agent.whatsapp_api_key and agent.whatsapp_instance_name):
            return None
        if (
            not agent.active
            or not agent.whatsapp_active
            or agent.whatsapp_status in ("disconnected", "refused")
        ):
            return None
        message.send_status = SEND_SENDING
        message.send_attempts += 1
        message.send_lease_until = lease_until
        message.meta = {
            **message.meta,
            "whatsappAttempts": message.send_attempts,
            "whatsappLastAttemptAt": attempt_at,
        }
        return ClaimedSend(
            talk_id=talk.id,
            created_at=message.created_at,
            body=message.body,
            meta=copy.deepcopy(message.meta),
            attempt=message.send_attempts,
            remote_jid=talk.whatsapp_remote_jid,
            contact_phone=contact.phone,
            contact_mobile_phone=contact.mobile_phone,
            server_url=agent.whatsapp_server_url,
            server_url_trusted=bool(agent.whatsapp_server_url_trusted),
            api_key=agent.whatsapp_api_key,
            instance=agent.whatsapp_instance_name,
            agent_metadata=copy.deepcopy(agent.whatsapp_metadata),
        )

    def record_sent(
        self, message_id: uuid.UUID, *, at: datetime, whatsapp_id: str | None, meta_patch: dict[str, Any]
    ) -> tuple[uuid.UUID, datetime] | None:
        message = self.get(TalkMessage, message_id)
        if message is None:
            return None
        message.send_status = SEND_SENT
        message.send_lease_until = None
        message.sent_at = at
        message.delivered_at = at
        if whatsapp_id is not None:
            message.whatsapp_message_id = whatsapp_id
        kept = {k: v for k, v in message.meta.items() if k not in ("whatsappError", "whatsappFailedAt")}
        message.meta = {**kept, **copy.deepcopy(meta_patch)}
        return message.talk_id, message.created_at

    def next_unsettled_outbound_id(
        self, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID
    ) -> uuid.UUID | None:
        following = self.next_unsettled_outbound(talk_id, created_at, message_id)
        return following.id if following is not None else None


class FakeUnitOfWork:
    """`UnitOfWork` over a `FakeRepository`; records commits and the advisory locks taken."""

    def __init__(self, repo: FakeRepository | None = None) -> None:
        self.store = repo if repo is not None else FakeRepository()
        self.repo: Repository = self.store
        self.committed = False
        self.commits = 0
        self.locks_taken: list[str] = []

    def factory(self) -> UnitOfWorkFactory:
        """What services take as `uow_factory`: every call returns this same unit of work."""
        return lambda: self

    def __enter__(self) -> Self:
        self.store.begin()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.store.end()  # like SqlAlchemyUnitOfWork: what was not committed is lost

    def commit(self) -> None:
        try:
            self.store.check_constraints()
        except Conflict:
            self.rollback()  # the database rolls the transaction back on an IntegrityError
            raise
        self.store.snapshot()
        self.committed = True
        self.commits += 1

    def rollback(self) -> None:
        self.store.restore()

    def lock(self, key: str) -> None:
        self.locks_taken.append(key)
