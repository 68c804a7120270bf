"""The lead hot path of inbound messages on a real PostgreSQL (`services.inbound_lead.record_lead`, statements
in `persistence/lead_path.py`): three statements instead of the ORM path's 8 to 14, and the same rows.

Most tests run every message twice, on two organizations of one database: once through the ORM path (the
repository's `hot_path_connection` answers None, as on SQLite) and once as production runs it, then compare
everything both organizations hold, column by column, with ids replaced by their role and times by what
they are (the message's time, or the clock at the write for an `updated_at` the ORM's onupdate fills). Which
path the second run took is read from the statements it executed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence import lead_path
from luminai_actors.persistence.database import create_db_engine, make_session_factory, upgrade_database
from luminai_actors.persistence.repository import SqlAlchemyRepository
from luminai_actors.persistence.tables import (
    TALK_CLOSED,
    Agent,
    Base,
    Company,
    Contact,
    Talk,
    TalkAgent,
    TalkMessage,
    TalkType,
    User,
)
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services import admin
from luminai_actors.services.inbound import InboundOutcome, record_inbound

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 6, 9, 0, tzinfo=UTC)
PHONE = "5511987654321"  # a Brazilian mobile; WhatsApp may also report it without the ninth digit
PHONE_OLD_SPELLING = "551187654321"
EXPIRY = timedelta(hours=24)


@dataclass
class Db:
    engine: Engine
    sessions: sessionmaker[Session]
    statements: list[str]


@pytest.fixture
def db(clean_pg: str) -> Iterator[Db]:
    engine = create_db_engine(clean_pg, pool_size=20)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    yield Db(engine, make_session_factory(engine), statements)
    engine.dispose()


class OrmOnlyUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work whose repository offers no hot-path connection: `record_inbound` takes the ORM path."""

    def __enter__(self) -> OrmOnlyUnitOfWork:
        super().__enter__()
        self.repo.hot_path_connection = lambda: None  # type: ignore[method-assign]
        return self


def label(statement: str) -> str:
    """Which step executed a statement: the three of the hot path, or the ORM path's."""
    if statement.startswith("SELECT agent.id") and "pg_advisory_xact_lock" in statement:
        return "agent"
    if statement.startswith("SELECT defaults.company_id"):
        return "lookup"
    if statement.startswith("WITH") or (
        statement.startswith("INSERT INTO talk_message") and "%(m_id)" in statement
    ):
        return "store"
    return "orm"


def path_of(statements: list[str]) -> str:
    labels = [label(s) for s in statements]
    if labels == ["agent", "lookup", "store"]:
        return "hot"
    if labels == ["agent"]:
        return "hot-read-only"  # a duplicate, an inactive agent, ignoreJids
    if labels[:2] == ["agent", "lookup"] and "store" not in labels and len(labels) > 2:
        return "fallback"
    if "agent" not in labels and "lookup" not in labels and "store" not in labels:
        return "orm"
    return "mixed: " + ", ".join(labels)


def upsert(
    instance: str,
    message_id: str,
    *,
    phone: str | None = PHONE,
    lid: str | None = None,
    text_: str = "oi",
    push_name: str | None = "Maria da Silva Souza",
) -> MessageUpsert:
    if lid is not None:
        key: dict[str, Any] = {"remoteJid": f"{lid}@lid", "fromMe": False, "id": message_id}
        if phone is not None:
            key.update(remoteJidAlt=f"{phone}@s.whatsapp.net", addressingMode="lid")
    else:
        assert phone is not None
        key = {"remoteJid": f"{phone}@s.whatsapp.net", "fromMe": False, "id": message_id}
    data: dict[str, Any] = {
        "key": key,
        "message": {"conversation": text_},
        "messageTimestamp": int(T0.timestamp()) - 5,
    }
    if push_name is not None:
        data["pushName"] = push_name
    parsed = parse_webhook({"event": "messages.upsert", "instance": instance, "data": data})
    assert isinstance(parsed, MessageUpsert)
    return parsed


@dataclass
class Side:
    instance: str
    org: uuid.UUID
    agent: uuid.UUID
    flow: uuid.UUID
    uows: Callable[[], SqlAlchemyUnitOfWork]


# Every table an inbound message can write, and how its rows belong to an organization.
TABLES: tuple[type[Base], ...] = (Company, User, TalkType, Contact, Talk, TalkAgent, TalkMessage)


class Twin:
    """Two organizations with the same agent and tree flow: `orm` only takes the ORM path, `hot` runs as in
    production. `send` gives both the same message and checks that they then hold the same rows."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.wall_from = datetime.now(UTC)  # what the clock said before any row of the test was written
        self.orm = self._side("orm", lambda: OrmOnlyUnitOfWork(db.sessions, hold_connection=True))
        self.hot = self._side("hot", lambda: SqlAlchemyUnitOfWork(db.sessions, hold_connection=True))

    def _side(self, name: str, uows: Callable[[], SqlAlchemyUnitOfWork]) -> Side:
        org = admin.create_organization(uows, {"name": f"Org {name}"})
        flow = admin.create_tree_flow(
            uows,
            org,
            {
                "name": "Qualify",
                "steps": [
                    {"id": "need", "fields": [{"name": "need", "required": True}], "question": "What for?"},
                    {"id": "size", "fields": [{"name": "size", "required": True}], "question": "How many?"},
                ],
            },
        )
        instance = f"twin-{name}"
        agent = admin.create_agent(
            uows,
            org,
            {
                "name": "Sofia",
                "treeFlowId": str(flow),
                "whatsapp": {
                    "instanceName": instance,
                    "serverUrl": "http://127.0.0.1:1",
                    "apiKey": "k",
                    "active": True,
                },
            },
        )
        return Side(instance, org, agent, flow, uows)

    def record(self, side: Side, message_id: str, at: datetime, **event_args: Any) -> InboundOutcome:
        return record_inbound(
            side.uows, upsert(side.instance, message_id, **event_args), now=lambda: at, talk_expiry=EXPIRY
        )

    def send(
        self, message_id: str, at: datetime = T0, **event_args: Any
    ) -> tuple[InboundOutcome, InboundOutcome, str]:
        """The message on both sides; returns both outcomes and the hot side's path."""
        self.db.statements.clear()
        by_orm = self.record(self.orm, message_id, at, **event_args)
        assert path_of(self.db.statements) == "orm"
        self.orm_statements = list(self.db.statements)
        self.db.statements.clear()
        by_hot = self.record(self.hot, message_id, at, **event_args)
        self.hot_statements = list(self.db.statements)
        assert self.canonical(self.orm, outcome_fields(by_orm)) == self.canonical(
            self.hot, outcome_fields(by_hot)
        )
        self.assert_same_rows()
        return by_orm, by_hot, path_of(self.hot_statements)

    def rows(self, side: Side) -> dict[str, list[dict[str, Any]]]:
        with self.db.sessions() as session:
            talks = select(Talk.id).where(Talk.organization_id == side.org)
            found: dict[str, list[dict[str, Any]]] = {}
            for model in TABLES:
                query = select(model)
                if model is TalkAgent:
                    query = query.where(TalkAgent.talk_id.in_(talks)).order_by(TalkAgent.talk_id)
                else:
                    query = query.where(model.organization_id == side.org).order_by(model.id)  # type: ignore[attr-defined]
                found[model.__tablename__] = [
                    {attr.columns[0].key: getattr(row, attr.key) for attr in model.__mapper__.column_attrs}
                    for row in session.scalars(query)
                ]
            return found

    def canonical(self, side: Side, value: Any) -> Any:
        """`value` with ids named by their role (table and rank, uuid7 being ordered) and times by kind."""
        names = {side.org: "org", side.agent: "agent", side.flow: "flow"}
        for table, rows in self.rows(side).items():
            for n, row in enumerate(rows):
                if "id" in row:
                    names[row["id"]] = f"{table}#{n}"
        return self._canon(value, names, side)

    def _canon(self, value: Any, names: dict[uuid.UUID, str], side: Side) -> Any:
        if isinstance(value, uuid.UUID):
            return names.get(value, "an unknown id")
        if isinstance(value, str):
            by_text = {str(k): v for k, v in names.items()}
            return by_text.get(value, value.replace(side.instance, "<instance>"))
        if isinstance(value, datetime):
            if value.year >= T0.year:
                return value  # a message's time (the tests' times are in the future): the same on both sides
            assert self.wall_from <= value <= datetime.now(UTC), value
            return "wall clock"
        if isinstance(value, dict):
            return {k: self._canon(v, names, side) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._canon(v, names, side) for v in value]
        return value

    def assert_same_rows(self) -> None:
        orm, hot = (
            self.canonical(self.orm, self.rows(self.orm)),
            self.canonical(self.hot, self.rows(self.hot)),
        )
        for table in orm:
            assert hot[table] == orm[table], table

    def set_talks(self, **values: Any) -> None:
        """Change the talks of both organizations alike."""
        with self.db.sessions() as session:
            session.execute(update(Talk).values(**values))
            session.commit()


def outcome_fields(outcome: InboundOutcome) -> dict[str, Any]:
    values = {f.name: getattr(outcome, f.name) for f in fields(outcome)}
    if outcome.known is not None:
        values["known"] = {f.name: getattr(outcome.known, f.name) for f in fields(outcome.known)}
    return values


@pytest.fixture
def twin(db: Db) -> Twin:
    return Twin(db)


@pytest.fixture
def primed(twin: Twin) -> Twin:
    """Both organizations past their first lead (who falls back: the ORM creates the default company, talk
    type and owner); the lead of the tests is a second one."""
    _, _, path = twin.send("FIRST", T0 - timedelta(hours=1), phone="5521999990000", push_name="Ana")
    assert path == "fallback"
    return twin


def table_counts(twin: Twin, side: Side) -> dict[str, int]:
    return {table: len(rows) for table, rows in twin.rows(side).items()}


# --- the path taken, and the rows ---------------------------------------------------------------------------


def test_a_new_lead_takes_three_statements_and_writes_the_rows_of_the_orm_path(primed: Twin) -> None:
    _, by_hot, path = primed.send("M1", T0)

    assert path == "hot"
    assert by_hot.status == "stored"
    assert by_hot.known is not None
    assert (by_hot.known.contact_id, by_hot.known.talk_id) == (by_hot.contact_id, by_hot.talk_id)
    assert by_hot.known.phone == f"+{PHONE}"
    assert len(primed.orm_statements) == 14  # the ORM path: see test_statement_counts
    with primed.db.sessions() as session:
        contact = session.get(Contact, by_hot.contact_id)
        talk = session.get(Talk, by_hot.talk_id)
        assert contact is not None
        assert talk is not None
        assert (contact.name, contact.first_name, contact.last_name) == (
            "Maria da Silva Souza",
            "Maria",
            "da Silva Souza",
        )
        assert talk.subject == "WhatsApp - Maria da Silva Souza"
        assert talk.talk_flow is not None
        assert talk.talk_flow["currentStepId"] == "need"
        assert talk.talk_flow["treeFlowId"] == str(primed.hot.flow)
        assert talk.whatsapp_remote_jid == f"{PHONE}@s.whatsapp.net"
        assert talk.date_last_message == T0
        assert talk.updated_at != T0  # the ORM's onupdate: the clock at the write
        assert contact.updated_at == T0


def test_a_lead_without_a_push_name_is_named_by_the_phone(primed: Twin) -> None:
    _, by_hot, path = primed.send("M1", T0, push_name=None)

    assert path == "hot"
    with primed.db.sessions() as session:
        contact = session.get(Contact, by_hot.contact_id)
        assert contact is not None
        assert (contact.name, contact.first_name, contact.last_name) == (f"+{PHONE}", None, None)


def test_the_next_message_of_a_known_contact_with_an_open_talk(primed: Twin) -> None:
    _, first, _ = primed.send("M1", T0)
    _, second, path = primed.send("M2", T0 + timedelta(minutes=1), text_="quero saber o preço")

    assert path == "hot"
    assert len(primed.orm_statements) == 8
    assert (second.contact_id, second.talk_id) == (first.contact_id, first.talk_id)
    # Another spelling of the same number, and a message at the same instant (nothing to touch).
    _, third, path = primed.send("M3", T0 + timedelta(minutes=1), phone=PHONE_OLD_SPELLING)
    assert path == "hot"
    assert (third.contact_id, third.talk_id) == (first.contact_id, first.talk_id)
    assert third.known is not None
    assert third.known.phone == f"+{PHONE}"  # the contact's phone, not the spelling of this message
    assert table_counts(primed, primed.hot)["talk_message"] == 4


def test_a_message_after_the_talk_expired_closes_it_and_starts_a_new_one(primed: Twin) -> None:
    _, first, _ = primed.send("M1", T0)
    _, second, path = primed.send("M2", T0 + EXPIRY + timedelta(minutes=1))

    assert path == "hot"
    assert second.contact_id == first.contact_id
    assert second.talk_id != first.talk_id
    with primed.db.sessions() as session:
        old = session.get(Talk, first.talk_id)
        new = session.get(Talk, second.talk_id)
        assert old is not None
        assert new is not None
        assert (old.status, old.closed_at) == (TALK_CLOSED, T0 + EXPIRY + timedelta(minutes=1))
        assert old.talk_flow is not None
        assert old.talk_flow["closedReason"] == "expired"
        assert new.talk_flow is not None
        assert "closedReason" not in new.talk_flow


@pytest.mark.parametrize(
    "closed",
    [{"status": TALK_CLOSED, "closed_at": T0}, {"archived": True}],
    ids=["closed", "archived"],
)
def test_a_known_contact_without_an_open_talk_gets_a_new_one(primed: Twin, closed: dict[str, Any]) -> None:
    _, first, _ = primed.send("M1", T0)
    primed.set_talks(**closed)

    _, second, path = primed.send("M2", T0 + timedelta(minutes=5))

    assert path == "hot"
    assert second.contact_id == first.contact_id
    assert second.talk_id != first.talk_id


def test_a_contact_known_by_its_lid_only(primed: Twin) -> None:
    _, first, path = primed.send("L1", T0, phone=None, lid="4455667788")
    assert path == "hot"  # a new contact without a phone
    _, second, path = primed.send("L2", T0 + timedelta(minutes=1), phone=None, lid="4455667788")

    assert path == "hot"
    assert (second.contact_id, second.talk_id) == (first.contact_id, first.talk_id)
    assert second.known is not None
    assert (second.known.phone, second.known.lid) == (None, "4455667788")


def test_a_contact_known_by_phone_and_lid_whichever_the_message_carries(primed: Twin) -> None:
    _, first, path = primed.send("B1", T0, lid="4455667788")
    assert path == "hot"
    for n, identity in enumerate([{"lid": "4455667788"}, {}, {"phone": None, "lid": "4455667788"}]):
        _, later, path = primed.send(f"B{n + 2}", T0 + timedelta(minutes=n + 1), **identity)
        assert path == "hot", identity
        assert (later.contact_id, later.talk_id) == (first.contact_id, first.talk_id)


def test_the_owner_is_the_agents_user_when_it_has_one(primed: Twin) -> None:
    with primed.db.sessions() as session:
        for side in (primed.orm, primed.hot):
            user = User(organization_id=side.org, name="Seller", created_at=T0 + timedelta(days=1))
            session.add(user)
            session.flush()
            session.execute(update(Agent).where(Agent.id == side.agent).values(user_id=user.id))
        session.commit()

    _, by_hot, path = primed.send("M1", T0)

    assert path == "hot"
    with primed.db.sessions() as session:
        talk = session.get(Talk, by_hot.talk_id)
        assert talk is not None
        owner = session.get(User, talk.owner_id)
        assert owner is not None
        assert owner.name == "Seller"


# --- what falls back to the ORM path -----------------------------------------------------------------------


def test_the_first_lead_of_an_organization_falls_back_and_the_second_takes_the_hot_path(twin: Twin) -> None:
    _, first, path = twin.send("M1", T0)

    assert path == "fallback"  # no default company, talk type or owner yet: the ORM path creates them
    assert first.status == "stored"
    counts = table_counts(twin, twin.hot)
    assert (counts["company"], counts["talk_type"], counts["user"]) == (1, 1, 1)

    _, second, path = twin.send("M2", T0, phone="5521988887777", push_name="João")
    assert path == "hot"
    assert second.contact_id != first.contact_id


def test_a_lid_to_learn_falls_back(primed: Twin) -> None:
    _, first, _ = primed.send("M1", T0)
    _, second, path = primed.send("M2", T0 + timedelta(minutes=1), lid="4455667788")

    assert path == "fallback"
    assert second.contact_id == first.contact_id
    assert second.known is not None
    assert second.known.lid == "4455667788"
    _, _, path = primed.send("M3", T0 + timedelta(minutes=2), lid="4455667788")
    assert path == "hot"  # learned


def test_a_phone_to_learn_falls_back(primed: Twin) -> None:
    _, first, _ = primed.send("L1", T0, phone=None, lid="4455667788")
    _, second, path = primed.send("L2", T0 + timedelta(minutes=1), lid="4455667788")

    assert path == "fallback"
    assert second.contact_id == first.contact_id
    assert second.known is not None
    assert second.known.phone == f"+{PHONE}"


def test_one_person_known_twice_is_merged_by_the_orm_path(primed: Twin) -> None:
    _, by_phone, _ = primed.send("P1", T0)
    _, by_lid, _ = primed.send("L1", T0 + timedelta(minutes=1), phone=None, lid="4455667788", push_name="M")
    assert by_phone.contact_id != by_lid.contact_id

    _, merged, path = primed.send("PL1", T0 + timedelta(minutes=2), lid="4455667788")

    assert path == "fallback"
    assert merged.contact_id == by_phone.contact_id
    assert table_counts(primed, primed.hot)["contact"] == 2  # the first lead's, and Maria's


def test_two_contacts_for_the_two_spellings_of_a_number_fall_back(primed: Twin) -> None:
    # Contacts made before the spellings were known to be one number (an import, say).
    with primed.db.sessions() as session:
        for side in (primed.orm, primed.hot):
            company = session.scalars(select(Company.id).where(Company.organization_id == side.org)).one()
            for n, phone in enumerate((f"+{PHONE_OLD_SPELLING}", f"+{PHONE}")):
                session.add(
                    Contact(
                        organization_id=side.org,
                        company_id=company,
                        name=f"Twin {n}",
                        phone=phone,
                        created_at=T0 - timedelta(days=2 - n),
                        updated_at=T0 - timedelta(days=2 - n),
                    )
                )
                session.flush()
        session.commit()

    _, by_hot, path = primed.send("M1", T0)

    assert path == "fallback"
    with primed.db.sessions() as session:
        contact = session.get(Contact, by_hot.contact_id)
        assert contact is not None
        assert contact.name == "Twin 1"  # the spelling reported first wins


def test_an_inactive_agent_and_ignore_jids_are_decided_by_the_first_statement(primed: Twin) -> None:
    with primed.db.sessions() as session:
        session.execute(update(Agent).values(whatsapp_metadata={"ignoreJids": ["@s.whatsapp.net"]}))
        session.commit()
    _, by_hot, path = primed.send("M1", T0)
    assert (by_hot.status, by_hot.reason) == ("ignored", "the agent's ignoreJids lists this chat")
    assert path == "hot-read-only"  # read the agent (and took the locks), wrote nothing

    with primed.db.sessions() as session:
        session.execute(update(Agent).values(whatsapp_metadata=None, active=False))
        session.commit()
    _, by_hot, path = primed.send("M1", T0)
    assert (by_hot.status, by_hot.reason) == ("ignored", "no active agent for instance 'twin-hot'")
    assert path == "hot-read-only"


def test_a_redelivered_message_is_a_duplicate_after_one_statement(primed: Twin) -> None:
    _, stored, _ = primed.send("M1", T0)
    _, again, path = primed.send("M1", T0 + timedelta(seconds=30))

    assert path == "hot-read-only"
    assert len(primed.orm_statements) == 2
    assert (again.status, again.message_id, again.talk_id, again.contact_id) == (
        "duplicate",
        stored.message_id,
        stored.talk_id,
        stored.contact_id,
    )
    assert table_counts(primed, primed.hot)["talk_message"] == 2  # the first lead's and M1


def test_business_side_and_shared_chats_never_start_the_hot_path(primed: Twin, db: Db) -> None:
    primed.send("M1", T0)
    for payload in (
        {"key": {"remoteJid": f"{PHONE}@s.whatsapp.net", "fromMe": True, "id": "OURS"}},
        {"key": {"remoteJid": "120363000000000000@g.us", "fromMe": False, "id": "GROUP"}},
    ):
        body = {**payload, "message": {"conversation": "oi"}, "messageTimestamp": int(T0.timestamp())}
        parsed = parse_webhook({"event": "messages.upsert", "instance": primed.hot.instance, "data": body})
        assert isinstance(parsed, MessageUpsert)
        db.statements.clear()
        record_inbound(primed.hot.uows, parsed, now=lambda: T0, ignored_chats=frozenset())
        assert path_of(db.statements) == "orm"


# --- races --------------------------------------------------------------------------------------------------


def test_the_hot_path_takes_the_advisory_locks_of_the_orm_path(primed: Twin, db: Db) -> None:
    keys = [f"contact:{primed.hot.org}:+{PHONE}", f"contact:{primed.hot.org}:lid:4455667788"]

    def free(key: str) -> bool:
        with db.engine.connect() as other:
            return bool(
                other.execute(
                    text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
                ).scalar()
            )

    with primed.hot.uows() as uow:
        connection = uow.repo.hot_path_connection()
        assert connection is not None
        agent = lead_path.inbound_agent(
            connection, primed.hot.instance, "NEW", [f"+{PHONE}", "lid:4455667788"]
        )
        assert agent is not None
        assert [free(key) for key in keys] == [False, False]
        uow.rollback()
        assert [free(key) for key in keys] == [True, True]


def test_concurrent_first_messages_of_a_new_lead_make_one_contact_and_one_talk(primed: Twin, db: Db) -> None:
    count = 12
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    spellings = (PHONE, PHONE_OLD_SPELLING)

    def run(n: int) -> None:
        # A third of the writers take the ORM path: both paths serialise on the same locks.
        uows = primed.hot.uows if n % 3 else lambda: OrmOnlyUnitOfWork(db.sessions, hold_connection=True)
        event_ = upsert(primed.hot.instance, f"C{n}", phone=spellings[n % 2], text_=f"msg {n}")
        barrier.wait()
        try:
            results[n] = record_inbound(
                uows, event_, now=lambda: T0 + timedelta(seconds=n), talk_expiry=EXPIRY
            )
        except Exception as exc:
            results[n] = exc

    db.statements.clear()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [r.status for r in results] == ["stored"] * count, results
    assert len({r.contact_id for r in results}) == 1
    assert len({r.talk_id for r in results}) == 1
    counts = table_counts(primed, primed.hot)
    assert (counts["contact"], counts["talk"], counts["talk_message"]) == (2, 2, count + 1)
    hot_stores = sum(label(s) == "store" for s in db.statements)
    assert hot_stores == count - len(range(0, count, 3))  # every hot-path writer stored without falling back


def test_a_racing_insert_of_the_same_message_ends_in_the_conflict_retry(primed: Twin, db: Db) -> None:
    _, first, _ = primed.send("M1", T0)
    rival_id = uuid.uuid4()
    raced: list[bool] = []

    def rival_stores_it_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if raced or label(" ".join(statement.split())) != "store":
            return
        raced.append(True)
        # Another process stored the message between our read and our write (without our locks: racing).
        with db.sessions() as session:
            session.add(
                TalkMessage(
                    id=rival_id,
                    organization_id=primed.hot.org,
                    talk_id=first.talk_id,
                    agent_id=primed.hot.agent,
                    from_contact_id=first.contact_id,
                    direction="inbound",
                    channel="whatsapp",
                    body="rival",
                    whatsapp_message_id="M2",
                )
            )
            session.commit()

    event.listen(db.engine, "before_cursor_execute", rival_stores_it_first)
    db.statements.clear()
    try:
        outcome = primed.record(primed.hot, "M2", T0 + timedelta(minutes=1))
    finally:
        event.remove(db.engine, "before_cursor_execute", rival_stores_it_first)

    assert (outcome.status, outcome.message_id) == ("duplicate", rival_id)
    # Ours refused by the unique key (the rival's INSERT came in between): Conflict, and the second pass.
    assert [label(s) for s in db.statements] == ["agent", "lookup", "store", "orm", "agent"]
    with db.sessions() as session:
        talk = session.get(Talk, first.talk_id)
        contact = session.get(Contact, first.contact_id)
        assert talk is not None
        assert contact is not None
        assert talk.date_last_message == T0  # the failed write touched nothing
        assert contact.last_contact_date == T0


# --- cost ---------------------------------------------------------------------------------------------------


def test_statement_counts(primed: Twin) -> None:
    """Statements executed per message (BEGIN and COMMIT are not cursor executions; they add two round trips
    to each path, and the pool's ping of a connection that sat idle one more)."""
    counts: dict[str, tuple[int, int]] = {}
    primed.send("M1", T0)
    counts["new lead"] = (len(primed.orm_statements), len(primed.hot_statements))
    primed.send("M2", T0 + timedelta(minutes=1))
    counts["known contact, open talk"] = (len(primed.orm_statements), len(primed.hot_statements))
    primed.send("M3", T0 + EXPIRY * 2)
    counts["known contact, expired talk"] = (len(primed.orm_statements), len(primed.hot_statements))
    primed.send("M3", T0 + EXPIRY * 2)
    counts["redelivery"] = (len(primed.orm_statements), len(primed.hot_statements))

    assert counts == {
        "new lead": (14, 3),
        "known contact, open talk": (8, 3),
        "known contact, expired talk": (14, 3),
        "redelivery": (2, 1),
    }


# --- SQLite -------------------------------------------------------------------------------------------------


def test_sqlite_keeps_the_orm_path(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)

    def uows() -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(sessions)

    org = admin.create_organization(uows, {"name": "Embedded"})
    admin.create_agent(
        uows,
        org,
        {
            "name": "S",
            "whatsapp": {
                "instanceName": "emb",
                "serverUrl": "http://127.0.0.1:1",
                "apiKey": "k",
                "active": True,
            },
        },
    )
    with sessions() as session:
        assert SqlAlchemyRepository(session).hot_path_connection() is None

    outcomes = [record_inbound(uows, upsert("emb", f"S{n}"), now=lambda: T0) for n in range(2)]

    assert [o.status for o in outcomes] == ["stored", "stored"]
    assert outcomes[0].talk_id == outcomes[1].talk_id
    engine.dispose()
