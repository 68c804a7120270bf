"""The inbound hot path of a lead's message: SQLAlchemy Core on the unit of work's connection (PostgreSQL).

A lead's message that reaches `services.inbound.record_inbound` (the first of a new lead above all: later ones
mostly take `services.inbound_fast`) takes three statements (PostgreSQL) instead of the ORM's 8 to 14:

- `inbound_agent`: the agent of the instance and an earlier copy of the message (the dedupe); when the agent
  is active and the message is new, the same statement then takes the contact advisory locks (the unit of
  work's `lock` keys, in the given order), so the snapshots of the statements after it see every contact
  and talk committed under them;
- `lead_lookup`: every contact of the organization known by one of the phone's spellings or by the LID, each
  with its open WhatsApp talk with the agent, and what a new contact and talk need (default company, talk
  type, owner, tree flow);
- `store_lead_message`: the rows the service decided on, in one statement of data-modifying CTEs (a new
  contact, talk and talk_agent; an expired talk closed before its successor is inserted; the talk and the
  contact touched; the message, whose unique (agent, WhatsApp id) key still refuses a redelivery).

The service decides between the reads and the write; what it does not cover it rolls back (nothing was
written) and gives to its ORM path. The three statements run on psycopg's cursor through `direct`.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY

from luminai_actors.persistence import direct
from luminai_actors.persistence.tables import (
    CHANNEL_WHATSAPP,
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
    User,
)

_talk = cast(Table, Talk.__table__)
_agent = cast(Table, Agent.__table__)
_contact = cast(Table, Contact.__table__)
_flow = cast(Table, TreeFlow.__table__)
_msg = cast(Table, TalkMessage.__table__)

_dup = _msg.alias("dup")
_talk_agent = cast(Table, TalkAgent.__table__)
_company = cast(Table, Company.__table__)
_talk_type = cast(Table, TalkType.__table__)
_user = cast(Table, User.__table__)


@dataclass(frozen=True, slots=True)
class InboundAgent:
    """The agent of an instance, with the earlier copy of the message when there is one."""

    id: uuid.UUID
    organization_id: uuid.UUID
    updated_at: datetime
    active: bool
    whatsapp_active: bool
    whatsapp_metadata: dict[str, Any] | None
    user_id: uuid.UUID | None
    tree_flow_id: uuid.UUID | None
    duplicate_id: uuid.UUID | None
    duplicate_talk_id: uuid.UUID | None
    duplicate_contact_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class LeadContact:
    """A contact known by one of the message's identities, with its open WhatsApp talk with the agent."""

    id: uuid.UUID
    name: str
    phone: str | None
    mobile_phone: str | None
    whatsapp_lid: str | None
    last_contact_date: datetime | None
    talk_id: uuid.UUID | None
    talk_flow: dict[str, Any] | None
    talk_remote_jid: str | None
    talk_date_last_message: datetime | None


@dataclass(frozen=True, slots=True)
class LeadLookup:
    contacts: list[LeadContact]
    company_id: uuid.UUID | None
    talk_type_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    tree_flow_id: uuid.UUID | None
    tree_flow_definition: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RowChange:
    """`UPDATE <table> SET <values> WHERE id = <id>` (values by column key)."""

    id: uuid.UUID
    values: Mapping[str, Any]


def _inbound_agent_statement(locks: int) -> Any:
    new_message_of_active_agent = and_(
        _agent.c.active.is_(True), _agent.c.whatsapp_active.is_(True), _dup.c.id.is_(None)
    )
    lock_columns = []
    for n in range(locks):
        # The text of `UnitOfWork.lock`'s key, `contact:{org}:{identity}` (uuid::text is Python's str(uuid)).
        key = (
            literal("contact:", String)
            + sql_cast(_agent.c.organization_id, String)
            + literal(":", String)
            + bindparam(f"identity_{n}", type_=String)
        )
        lock = func.pg_advisory_xact_lock(func.hashtextextended(key, 0))
        lock_columns.append(case((new_message_of_active_agent, lock), else_=null()).label(f"lock_{n}"))
    return (
        select(
            _agent.c.id,
            _agent.c.organization_id,
            _agent.c.updated_at,
            _agent.c.active,
            _agent.c.whatsapp_active,
            _agent.c.whatsapp_metadata,
            _agent.c.user_id,
            _agent.c.tree_flow_id,
            _dup.c.id,
            _dup.c.talk_id,
            _dup.c.from_contact_id,
            *lock_columns,  # evaluated left to right, after the row is found: the locks in the given order
        )
        .select_from(
            _agent.outerjoin(
                _dup,
                and_(_dup.c.agent_id == _agent.c.id, _dup.c.whatsapp_message_id == bindparam("message_id")),
            )
        )
        .where(_agent.c.whatsapp_instance_name == bindparam("instance"))
    )


_INBOUND_AGENT = {locks: _inbound_agent_statement(locks) for locks in (1, 2)}


def inbound_agent(
    connection: Connection, instance: str, whatsapp_message_id: str, identities: Sequence[str]
) -> InboundAgent | None:
    """PostgreSQL: the agent whose WhatsApp instance is `instance` (None: there is none) and the message it
    already stored under `whatsapp_message_id`. When the agent is active on WhatsApp and the message is new,
    the statement also takes the advisory locks `contact:{organization}:{identity}` for the one or two
    `identities`, in their order (the caller sorts them), until the end of the transaction."""
    params: dict[str, Any] = {"instance": instance, "message_id": whatsapp_message_id}
    params.update({f"identity_{n}": identity for n, identity in enumerate(identities)})
    row = direct.first(connection, _INBOUND_AGENT[len(identities)], params)
    return InboundAgent(*row[:11]) if row is not None else None


def _first_id(table: Table, *where: Any) -> Any:
    return select(table.c.id).where(*where).order_by(table.c.created_at).limit(1).scalar_subquery()


_LEAD_DEFAULTS = select(
    _first_id(
        _company,
        _company.c.organization_id == bindparam("org"),
        _company.c.name == bindparam("company_name"),
    ).label("company_id"),
    select(_talk_type.c.id)
    .where(_talk_type.c.organization_id == bindparam("org"), _talk_type.c.name == bindparam("talk_type_name"))
    .scalar_subquery()
    .label("talk_type_id"),
    func.coalesce(
        select(_user.c.id).where(_user.c.id == bindparam("user_id")).scalar_subquery(),
        _first_id(_user, _user.c.organization_id == bindparam("org")),
    ).label("owner_id"),
    select(_flow.c.id).where(_flow.c.id == bindparam("tree_flow_id")).scalar_subquery().label("flow_id"),
    select(_flow.c.definition)
    .where(_flow.c.id == bindparam("tree_flow_id"))
    .scalar_subquery()
    .label("flow_definition"),
).subquery("defaults")

# `Repository.open_whatsapp_talk` of each contact found.
_OPEN_TALK = (
    select(_talk.c.id, _talk.c.talk_flow, _talk.c.whatsapp_remote_jid, _talk.c.date_last_message)
    .select_from(_talk.join(_talk_agent, _talk_agent.c.talk_id == _talk.c.id))
    .where(
        _talk.c.contact_id == _contact.c.id,
        _talk_agent.c.agent_id == bindparam("agent_id"),
        _talk.c.channel == CHANNEL_WHATSAPP,
        _talk.c.status == TALK_ACTIVE,
        _talk.c.archived.is_(False),
        _talk.c.closed_at.is_(None),
    )
    .order_by(_talk.c.date_last_message.desc())
    .limit(1)
    .lateral("open_talk")
)

_LEAD_LOOKUP = (
    select(
        _LEAD_DEFAULTS,
        _contact.c.id,
        _contact.c.name,
        _contact.c.phone,
        _contact.c.mobile_phone,
        _contact.c.whatsapp_lid,
        _contact.c.last_contact_date,
        _OPEN_TALK,
    )
    .select_from(
        _LEAD_DEFAULTS.outerjoin(
            _contact,
            and_(
                _contact.c.organization_id == bindparam("org"),
                or_(
                    # one array parameter, not an expanding IN list: the same text for any number of
                    # spellings (see `direct`)
                    _contact.c.phone == any_(bindparam("phones", type_=ARRAY(String))),
                    _contact.c.mobile_phone == any_(bindparam("phones", type_=ARRAY(String))),
                    _contact.c.whatsapp_lid == bindparam("lid", type_=String),
                ),
            ),
        ).outerjoin(_OPEN_TALK, true())
    )
    .order_by(_contact.c.created_at, _contact.c.id)
)


def lead_lookup(
    connection: Connection,
    *,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    phones: Sequence[str],
    lid: str | None,
    company_name: str,
    talk_type_name: str,
    user_id: uuid.UUID | None,
    tree_flow_id: uuid.UUID | None,
) -> LeadLookup:
    """The organization's contacts whose phone or mobile phone is one of `phones` or whose LID is `lid`
    (oldest first), each with its open WhatsApp talk with the agent, and what a new contact and talk need:
    the oldest company named `company_name`, the talk type `talk_type_name`, the owner (the user `user_id`,
    else the organization's first user) and the tree flow `tree_flow_id` (None for each that is missing)."""
    rows = direct.rows(
        connection,
        _LEAD_LOOKUP,
        {
            "org": organization_id,
            "agent_id": agent_id,
            "phones": list(phones),
            "lid": lid,
            "company_name": company_name,
            "talk_type_name": talk_type_name,
            "user_id": user_id,
            "tree_flow_id": tree_flow_id,
        },
    )
    first = rows[0]
    contacts = [LeadContact(*row[5:]) for row in rows if row[5] is not None]
    return LeadLookup(contacts, *first[:5])


@functools.cache
def _insert_columns(model: type[Base]) -> dict[str, tuple[str, Any]]:
    """(column key, column default or None) of each column of `model`, by attribute name."""
    return {
        attr.key: (attr.columns[0].key, attr.columns[0].default) for attr in model.__mapper__.column_attrs
    }


def inserted_values(model: type[Base], row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a flush of `model(**row)` inserts, by column key: those set, and unset ones with a scalar
    default (callable defaults, ids and times, are the caller's to set). NULLs are left out: the table has
    no server defaults, and fewer parameters keep psycopg's conversion of the statement cached. `row` is by
    attribute name, as the model's constructor takes it (no model object is built: its instrumentation
    cost more than the rest of the new lead's Python work outside the statements)."""
    columns = _insert_columns(model)
    unknown = row.keys() - columns.keys()
    assert not unknown, f"not columns of {model.__name__}: {sorted(unknown)}"
    values: dict[str, Any] = {}
    for name, (key, default) in columns.items():
        value = row.get(name)
        if value is None and default is not None:
            assert default.is_scalar, f"{model.__name__}.{name} is the caller's to set"
            value = default.arg
        if value is not None:
            values[key] = value
    return values


def _bound(table: Table, prefix: str, columns: Sequence[str]) -> dict[str, Any]:
    return {name: bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in columns}


def _keyed_update(table: Table, prefix: str, columns: Sequence[str]) -> Any:
    """UPDATE of the row whose id is bound as `{prefix}key`, setting `columns` from `{prefix}{column}`."""
    return update(table).where(table.c.id == bindparam(f"{prefix}key")).values(_bound(table, prefix, columns))


_TALK_AGENT_COLUMNS = tuple(column.key for column in _talk_agent.c)
_Shape = tuple[
    tuple[str, ...] | None,  # new contact
    tuple[str, ...] | None,  # new talk (and its talk_agent)
    tuple[str, ...] | None,  # expired talk closed
    tuple[str, ...] | None,  # talk touched
    tuple[str, ...] | None,  # contact touched
    tuple[str, ...],  # message
]


@functools.lru_cache(maxsize=256)
def _store_statement(shape: _Shape) -> Any:
    new_contact, new_talk, closed, touched_talk, touched_contact, message = shape
    ctes: list[Any] = []
    if new_contact is not None:
        ctes.append(insert(_contact).values(_bound(_contact, "c_", new_contact)).cte("new_contact"))
    closing = None
    if closed is not None:
        closing = _keyed_update(_talk, "x_", closed).returning(_talk.c.id).cte("closed_talk")
        ctes.append(closing)
    if new_talk is not None:
        talk_insert = insert(_talk)
        if closing is None:
            talk_insert = talk_insert.values(_bound(_talk, "t_", new_talk))
        else:
            # The closed talk leaves the unique index of open talks before its successor enters it: the
            # INSERT reads the UPDATE's output first (CTEs run in no particular order otherwise).
            values = _bound(_talk, "t_", new_talk)
            talk_insert = talk_insert.from_select(
                list(new_talk),
                select(*values.values()).where(
                    select(func.count()).select_from(closing).scalar_subquery() >= 0
                ),
            )
        ctes.append(talk_insert.cte("new_talk"))
        ctes.append(
            insert(_talk_agent).values(_bound(_talk_agent, "a_", _TALK_AGENT_COLUMNS)).cte("new_talk_agent")
        )
    if touched_talk is not None:
        ctes.append(_keyed_update(_talk, "u_", touched_talk).cte("touched_talk"))
    if touched_contact is not None:
        ctes.append(_keyed_update(_contact, "v_", touched_contact).cte("touched_contact"))
    statement = insert(_msg).values(_bound(_msg, "m_", message))
    return statement.add_cte(*ctes) if ctes else statement


def _params(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{name}": value for name, value in values.items()}


def store_lead_message(
    connection: Connection,
    message: Mapping[str, Any],
    *,
    contact: Mapping[str, Any] | None = None,
    talk: Mapping[str, Any] | None = None,
    talk_agent: Mapping[str, Any] | None = None,
    closed_talk: RowChange | None = None,
    touched_talk: RowChange | None = None,
    touched_contact: RowChange | None = None,
) -> None:
    """PostgreSQL: insert a lead's message with what it needs, in one statement: a new `contact`; a new
    `talk` with its `talk_agent` row (inserted after `closed_talk`, the expired talk it replaces, is closed);
    the changes of an existing talk and contact. The new rows are given by attribute name, as the models'
    constructors take them, and inserted as `inserted_values` says. A unique key that refuses a row (a
    redelivered message, a contact or talk another process just created) raises IntegrityError and nothing
    is written."""
    message_row = inserted_values(TalkMessage, message)
    contact_row = inserted_values(Contact, contact) if contact is not None else None
    talk_row = inserted_values(Talk, talk) if talk is not None else None
    talk_agent_row = inserted_values(TalkAgent, talk_agent) if talk_agent is not None else None
    assert (talk_row is None) == (talk_agent_row is None), "a new talk comes with its talk_agent row"
    shape: _Shape = (
        tuple(contact_row) if contact_row is not None else None,
        tuple(talk_row) if talk_row is not None else None,
        tuple(closed_talk.values) if closed_talk is not None else None,
        tuple(touched_talk.values) if touched_talk is not None else None,
        tuple(touched_contact.values) if touched_contact is not None else None,
        tuple(message_row),
    )
    params = _params("m_", message_row)
    if contact_row is not None:
        params.update(_params("c_", contact_row))
    if talk_row is not None:
        params.update(_params("t_", talk_row))
    if talk_agent_row is not None:
        params.update(_params("a_", talk_agent_row))
    for prefix, change in (("x_", closed_talk), ("u_", touched_talk), ("v_", touched_contact)):
        if change is not None:
            params.update(_params(prefix, change.values))
            params[f"{prefix}key"] = change.id
    direct.rows(connection, _store_statement(shape), params)
