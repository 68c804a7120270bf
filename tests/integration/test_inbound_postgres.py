"""record_inbound on a real PostgreSQL: exactly once under concurrent redelivery, one contact under races."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.errors import DatabaseUnavailable
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.database import create_db_engine, make_session_factory
from luminai_actors.persistence.tables import Contact, Talk, TalkMessage
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services import admin
from luminai_actors.services.inbound import record_inbound

pytestmark = pytest.mark.integration


@pytest.fixture
def factory(clean_pg: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(clean_pg, pool_size=20)
    yield make_session_factory(engine)
    engine.dispose()


def uow_factory(sessions: sessionmaker[Session]) -> Callable[[], SqlAlchemyUnitOfWork]:
    return lambda: SqlAlchemyUnitOfWork(sessions)


def make_agent(sessions: sessionmaker[Session], instance: str, org_name: str = "Acme") -> uuid.UUID:
    uows = uow_factory(sessions)
    org = admin.create_organization(uows, {"name": org_name})
    flow = admin.create_tree_flow(uows, org, {"name": "Q", "steps": [{"id": "s1", "question": "Why?"}]})
    admin.create_agent(
        uows,
        org,
        {
            "name": "SDR",
            "treeFlowId": str(flow),
            "whatsapp": {
                "instanceName": instance,
                "serverUrl": "http://127.0.0.1:1",
                "apiKey": "k",
                "active": True,
            },
        },
    )
    return org


def upsert(instance: str, jid: str, message_id: str, text: str = "hi") -> MessageUpsert:
    event = parse_webhook(
        {
            "event": "messages.upsert",
            "instance": instance,
            "data": {
                "key": {"remoteJid": jid, "fromMe": False, "id": message_id},
                "pushName": "Maria Silva",
                "message": {"conversation": text},
                "messageTimestamp": 1761057639,
            },
        }
    )
    assert isinstance(event, MessageUpsert)
    return event


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_the_same_message_delivered_concurrently_is_stored_once(factory: sessionmaker[Session]) -> None:
    make_agent(factory, "acme-1")
    event = upsert("acme-1", "5511987654321@s.whatsapp.net", "3A5F1C2B9D8E7F6A5B4C")

    results = run_concurrently(16, lambda _: record_inbound(uow_factory(factory), event))

    statuses = sorted(r.status for r in results)
    assert statuses == ["duplicate"] * 15 + ["stored"]
    assert len({r.message_id for r in results}) == 1
    assert count(factory, TalkMessage) == 1
    assert count(factory, Contact) == 1


def test_a_new_contact_racing_from_many_threads_gets_one_contact_and_one_talk(
    factory: sessionmaker[Session],
) -> None:
    make_agent(factory, "acme-1")
    # Both Brazilian spellings of one mobile number, as WhatsApp may report them.
    jids = ["5511987654321@s.whatsapp.net", "551187654321@s.whatsapp.net"]

    results = run_concurrently(
        12,
        lambda i: record_inbound(uow_factory(factory), upsert("acme-1", jids[i % 2], f"MSG{i}", f"text {i}")),
    )

    assert [r.status for r in results] == ["stored"] * 12, results
    assert count(factory, Contact) == 1
    assert count(factory, Talk) == 1
    assert count(factory, TalkMessage) == 12


def test_the_same_phone_in_two_organizations_makes_two_contacts(factory: sessionmaker[Session]) -> None:
    org_a = make_agent(factory, "org-a", "A")
    org_b = make_agent(factory, "org-b", "B")
    jid = "5511999999999@s.whatsapp.net"

    a = record_inbound(uow_factory(factory), upsert("org-a", jid, "ID1"))
    b = record_inbound(uow_factory(factory), upsert("org-b", jid, "ID1"))

    assert (a.status, b.status) == ("stored", "stored")
    assert a.contact_id != b.contact_id
    assert a.talk_id != b.talk_id
    with factory() as session:
        orgs = {c.id: c.organization_id for c in session.scalars(select(Contact))}
    assert orgs == {a.contact_id: org_a, b.contact_id: org_b}


def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    engine = create_engine("postgresql+psycopg://root@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    sessions = make_session_factory(engine)
    with pytest.raises(DatabaseUnavailable):
        record_inbound(uow_factory(sessions), upsert("acme-1", "5511987654321@s.whatsapp.net", "X1"))
    engine.dispose()


def _receiver_process(url: str, barrier: Any, offset: int, results: Any) -> None:
    """One receiver process: 4 threads deliver different messages of the same new contact at once."""
    engine = create_db_engine(url, pool_size=4)
    sessions = make_session_factory(engine)
    jid = "5521998765432@s.whatsapp.net"

    def one(index: int) -> str:
        return record_inbound(uow_factory(sessions), upsert("acme-1", jid, f"P{offset + index}", "hi")).status

    barrier.wait()
    for status in run_concurrently(4, one):
        results.put(status if isinstance(status, str) else repr(status))
    engine.dispose()


def test_two_receiver_processes_racing_on_a_new_contact_create_one_contact_and_one_talk(
    factory: sessionmaker[Session], clean_pg: str
) -> None:
    import multiprocessing

    make_agent(factory, "acme-1")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(target=_receiver_process, args=(clean_pg, barrier, offset, results))
        for offset in (0, 100)
    ]
    for process in processes:
        process.start()
    statuses = [results.get(timeout=60) for _ in range(8)]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0

    assert statuses == ["stored"] * 8
    assert count(factory, Contact) == 1
    assert count(factory, Talk) == 1
    assert count(factory, TalkMessage) == 8
