"""The append statement of known conversations on PostgreSQL (`persistence.append`): the same rows as the
general path; every change the general path would decide differently (duplicate, closed, expired talk,
changed agent, a new LID) falls back to it; a lost database connection loses nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.persistence.tables import TALK_CLOSED, Agent, Contact, Talk, TalkMessage, TreeFlow
from luminai_actors.testing import FakeEvolutionApi
from tests.integration.test_pipeline_inprocess import WEBHOOK, setup_agent

pytestmark = pytest.mark.integration

LEAD = "5511987654321"


def upsert(
    instance: str, message_id: str, text_: str = "oi", *, lead: str = LEAD, lid: str | None = None
) -> Any:
    key: dict[str, Any] = {"remoteJid": f"{lead}@s.whatsapp.net", "fromMe": False, "id": message_id}
    if lid is not None:
        key = {"remoteJid": f"{lid}@lid", "remoteJidAlt": f"{lead}@s.whatsapp.net", "fromMe": False,
               "id": message_id, "addressingMode": "lid"}  # fmt: skip
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": key,
            "pushName": "Maria",
            "message": {"conversation": text_},
            "messageTimestamp": 1761057639,
        },
    }


def paths(container: Container) -> dict[str, float]:
    counts = {"fast": 0.0, "slow": 0.0}
    for metric in container.metrics.inbound_path.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["path"]] = sample.value
    return counts


def rows(container: Container) -> list[TalkMessage]:
    with container.session_factory() as session:
        return list(session.scalars(select(TalkMessage).order_by(TalkMessage.created_at, TalkMessage.id)))


@pytest.fixture
def app(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> tuple[Container, TestClient]:
    # A long debounce keeps AI turns (and a talk closed by a finished TreeFlow) out of these tests.
    container, client = make_app(ai_debounce_seconds=60.0)
    assert container.settings.fast_ingest, "the append statement is on by default"
    setup_agent(client, evolution, "acme")
    return container, client


def post(client: TestClient, body: Any) -> Any:
    response = client.post(WEBHOOK, json=body)
    assert response.status_code == 200, response.text
    return response


def test_second_message_takes_the_fast_path_and_writes_what_the_slow_path_writes(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    first = post(client, upsert("acme", "M1", "primeira"))
    second = post(client, upsert("acme", "M2", "segunda"))

    assert paths(container) == {"fast": 1.0, "slow": 1.0}
    slow_row, fast_row = rows(container)
    assert str(slow_row.id) == first.headers["x-luminai-message-id"]
    assert str(fast_row.id) == second.headers["x-luminai-message-id"]
    assert (fast_row.talk_id, fast_row.from_contact_id, fast_row.agent_id, fast_row.organization_id) == (
        slow_row.talk_id, slow_row.from_contact_id, slow_row.agent_id, slow_row.organization_id,
    )  # fmt: skip
    for column in ("direction", "channel", "message_type", "send_status", "send_attempts", "processed_at"):
        assert getattr(fast_row, column) == getattr(slow_row, column), column
    assert fast_row.body == "segunda"
    assert fast_row.whatsapp_message_id == "M2"
    assert set(fast_row.meta) == set(slow_row.meta)
    assert fast_row.meta["whatsappMessageId"] == "M2"
    with container.session_factory() as session:
        talk = session.get(Talk, fast_row.talk_id)
        contact = session.get(Contact, fast_row.from_contact_id)
        assert talk is not None
        assert contact is not None
        assert talk.date_last_message == fast_row.created_at
        assert contact.last_contact_date == fast_row.created_at
        assert talk.whatsapp_remote_jid == f"{LEAD}@s.whatsapp.net"


def test_a_redelivery_of_a_known_conversation_is_a_duplicate_with_the_first_id(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    post(client, upsert("acme", "M1"))
    stored = post(client, upsert("acme", "M2"))
    again = post(client, upsert("acme", "M2"))

    assert again.json()["duplicate"] is True
    assert again.headers["x-luminai-message-id"] == stored.headers["x-luminai-message-id"]
    assert [r.whatsapp_message_id for r in rows(container)] == ["M1", "M2"]


def _close_talk(container: Container, **changes: Any) -> None:
    with container.session_factory() as session:
        [talk] = session.scalars(select(Talk)).all()
        for name, value in changes.items():
            setattr(talk, name, value)
        session.commit()


@pytest.mark.parametrize(
    "change",
    [
        {"status": TALK_CLOSED},
        {"archived": True},
        {"date_last_message": datetime.now(UTC) - timedelta(days=3)},  # past the 24 h expiry
    ],
    ids=["closed", "archived", "expired"],
)
def test_a_talk_that_ended_behind_the_actors_back_starts_a_new_talk(
    app: tuple[Container, TestClient], change: dict[str, Any]
) -> None:
    container, client = app
    post(client, upsert("acme", "M1"))
    post(client, upsert("acme", "M2"))
    _close_talk(container, **change)

    post(client, upsert("acme", "M3"))

    first, second, third = rows(container)
    assert first.talk_id == second.talk_id != third.talk_id
    assert paths(container) == {"fast": 1.0, "slow": 2.0}
    assert third.talk_id != first.talk_id
    assert container.router.snapshot()[0]["handled"] == 3  # one actor handled the conversation's three


def test_an_agent_switched_off_or_told_to_ignore_the_chat_is_obeyed_at_once(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    post(client, upsert("acme", "M1"))
    with container.session_factory() as session:
        agent = session.scalars(select(Agent)).one()
        agent.whatsapp_metadata = {
            **(agent.whatsapp_metadata or {}),
            "ignoreJids": [f"{LEAD}@s.whatsapp.net"],
        }
        session.commit()

    ignored = post(client, upsert("acme", "M2"))

    assert "ignored" in ignored.json()
    assert [r.whatsapp_message_id for r in rows(container)] == ["M1"]


def test_a_lid_the_contact_lacks_goes_through_the_full_lookup_and_is_recorded(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    post(client, upsert("acme", "M1"))
    post(client, upsert("acme", "M2", lid="99887766"))
    post(client, upsert("acme", "M3", lid="99887766"))

    with container.session_factory() as session:
        [contact] = session.scalars(select(Contact).where(Contact.phone.is_not(None))).all()
        assert contact.whatsapp_lid == "99887766"
    assert len({r.talk_id for r in rows(container)}) == 1
    assert paths(container) == {"fast": 1.0, "slow": 2.0}  # M3 knows the LID now


def test_a_lost_database_connection_loses_nothing(app: tuple[Container, TestClient]) -> None:
    container, client = app
    post(client, upsert("acme", "M1"))
    post(client, upsert("acme", "M2"))
    outsider = create_engine(container.engine.url, poolclass=NullPool)  # not one of the pool's connections
    try:
        with outsider.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                )
            ).all()
    finally:
        outsider.dispose()
    assert killed, "the pool held idle connections that could be terminated"

    answers = [client.post(WEBHOOK, json=upsert("acme", "M3")).status_code]
    if answers[0] != 200:  # refused, not accepted: Evolution retries, and so do we
        answers.append(client.post(WEBHOOK, json=upsert("acme", "M3")).status_code)
    fourth = post(client, upsert("acme", "M4"))

    assert answers[-1] == 200
    assert set(answers) <= {200, 503}
    stored = rows(container)
    assert [r.whatsapp_message_id for r in stored] == ["M1", "M2", "M3", "M4"]
    assert str(stored[3].id) == fourth.headers["x-luminai-message-id"]


def test_many_conversations_at_once_are_each_stored_once_in_order(app: tuple[Container, TestClient]) -> None:
    container, client = app
    leads = [f"55119876{n:05d}" for n in range(24)]
    for n, lead in enumerate(leads):
        post(client, upsert("acme", f"A{n}", lead=lead))
    start = threading.Barrier(len(leads))
    answers: dict[str, int] = {}

    def lead_writes(n: int, lead: str) -> None:
        start.wait()
        for k in range(5):
            answers[f"B{n}-{k}"] = client.post(
                WEBHOOK, json=upsert("acme", f"B{n}-{k}", lead=lead)
            ).status_code

    threads = [threading.Thread(target=lead_writes, args=(n, lead)) for n, lead in enumerate(leads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert set(answers.values()) == {200}
    assert len(answers) == 24 * 5
    stored = rows(container)
    assert len(stored) == 24 * 6
    assert len({r.whatsapp_message_id for r in stored}) == 24 * 6
    by_talk: dict[uuid.UUID, list[str]] = {}
    for r in stored:
        by_talk.setdefault(r.talk_id, []).append(r.whatsapp_message_id or "")
    for n in range(len(leads)):
        [ids] = [v for v in by_talk.values() if v[0] == f"A{n}"]
        assert ids == [f"A{n}"] + [f"B{n}-{k}" for k in range(5)]
    # the organization's first lead created its defaults (general path); the other 23 started by one statement
    assert paths(container) == {"fast": 23 + 24 * 5, "slow": 1}


def test_a_new_lead_is_stored_by_one_statement_with_what_the_general_path_writes(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    post(client, upsert("acme", "A1", lead="5511911110001"))  # the organization's first: its defaults too
    post(client, upsert("acme", "B1", lead="5511911110002"))

    assert paths(container) == {"fast": 1.0, "slow": 1.0}
    with container.session_factory() as session:
        general, started = session.scalars(select(Contact).order_by(Contact.phone)).all()
        assert (general.phone, started.phone) == ("+5511911110001", "+5511911110002")
        for column in ("organization_id", "company_id", "name", "first_name", "last_name", "lead_source",
                       "origin", "whatsapp_lid", "whatsapp_jid", "opted_out_at"):  # fmt: skip
            assert getattr(started, column) == getattr(general, column), column
        assert started.mobile_phone == started.phone
        first_talk, second_talk = (
            session.scalars(select(Talk).where(Talk.contact_id == c.id)).one() for c in (general, started)
        )
        for column in ("organization_id", "agent_id", "owner_id", "talk_type_id", "channel", "status",
                       "archived", "paused", "needs_human", "talk_flow", "closed_at"):  # fmt: skip
            assert getattr(second_talk, column) == getattr(first_talk, column), column
        assert second_talk.subject == "WhatsApp - Maria"
        assert second_talk.whatsapp_remote_jid == "5511911110002@s.whatsapp.net"
        links = session.execute(text("SELECT talk_id FROM talk_agent")).scalars().all()
        assert set(links) == {first_talk.id, second_talk.id}


def test_a_tree_flow_edited_since_it_was_cached_is_the_one_a_new_lead_starts(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    post(client, upsert("acme", "A1", lead="5511911110001"))
    with container.session_factory() as session:
        agent = session.scalars(select(Agent)).one()
        flow = session.get(TreeFlow, agent.tree_flow_id)
        assert flow is not None
        flow.definition = {**flow.definition, "version": flow.version + 1}
        flow.version += 1
        session.commit()
        version = flow.version

    post(client, upsert("acme", "B1", lead="5511911110002"))

    assert paths(container) == {"fast": 0.0, "slow": 2.0}  # the cached flow was stale: the general path
    with container.session_factory() as session:
        talk = session.scalars(select(Talk).order_by(Talk.created_at.desc())).first()
        assert talk is not None
        assert talk.talk_flow["treeFlowVersion"] == version


def test_a_redelivery_is_answered_duplicate_by_the_one_statement_with_the_stored_id(
    app: tuple[Container, TestClient],
) -> None:
    container, client = app
    first = post(client, upsert("acme", "M1", "primeira"))
    again = post(client, upsert("acme", "M1", "primeira"))  # Evolution retried: the first answer was lost
    second = post(client, upsert("acme", "M2", "segunda"))
    second_again = post(client, upsert("acme", "M2", "segunda"))

    assert again.json().get("duplicate") is True
    assert second_again.json().get("duplicate") is True
    assert again.headers["x-luminai-message-id"] == first.headers["x-luminai-message-id"]
    assert second_again.headers["x-luminai-message-id"] == second.headers["x-luminai-message-id"]
    assert paths(container) == {"fast": 3.0, "slow": 1.0}  # only the new person took the general path
    assert len(rows(container)) == 2
