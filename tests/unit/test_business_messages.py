"""Messages from the business side (typed on its phone, or our own sends echoed back) and identity merges."""

from __future__ import annotations

import pytest

from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.tables import Agent, Contact, Talk, TalkMessage
from luminai_actors.services.inbound import record_inbound
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork
from tests.unit.test_inbound_service import INSTANCE, LID, NOW, PN, record, seed_agent, upsert


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(clock=lambda: NOW)


@pytest.fixture
def uow(repo: FakeRepository) -> FakeUnitOfWork:
    return FakeUnitOfWork(repo)


@pytest.fixture
def agent(repo: FakeRepository) -> Agent:
    return seed_agent(repo)


def send_message_event(message_id: str, text: str, remote_jid: str = PN) -> MessageUpsert:
    """`send.message`: what Evolution posts for a message sent through its REST API (reference §3)."""
    event = parse_webhook(
        {
            "event": "send.message",
            "instance": INSTANCE,
            "data": {
                "key": {"remoteJid": remote_jid, "fromMe": True, "id": message_id},
                "pushName": "Você",
                "status": "PENDING",
                "message": {"conversation": text},
                "messageType": "conversation",
                "messageTimestamp": 1761057900,
                "source": "web",
            },
        }
    )
    assert isinstance(event, MessageUpsert)
    return event


def reply_in_flight(repo: FakeRepository, talk: Talk, agent: Agent, text: str, status: str) -> TalkMessage:
    message = TalkMessage(
        organization_id=talk.organization_id,
        talk_id=talk.id,
        agent_id=agent.id,
        from_agent_id=agent.id,
        direction="outbound",
        channel="whatsapp",
        body=text,
        send_status=status,
        meta={"whatsappAttempts": 1},
    )
    repo.add(message)
    return message


def messages(repo: FakeRepository) -> list[TalkMessage]:
    return repo.rows(TalkMessage)


def test_a_person_typing_on_the_business_phone_is_stored_as_human_outbound_and_pauses_the_bot(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert())
    typed = upsert(
        message_id="3EB0HUMAN", from_me=True, push_name="Você", message={"conversation": "Oi! Sou o João"}
    )

    outcome = record(uow, typed)

    assert outcome.status == "stored"
    assert outcome.needs_ai_turn is False
    human = next(m for m in messages(repo) if m.whatsapp_message_id == "3EB0HUMAN")
    assert (human.direction, human.from_agent_id, human.from_contact_id) == ("outbound", None, None)
    assert human.meta["human"] is True
    assert human.meta["sentVia"] == "phone"
    [talk] = repo.rows(Talk)
    assert talk.paused is True
    assert "business phone" in talk.talk_flow["handoff"]["reason"]
    assert record(uow, typed).status == "duplicate"  # the same echo again stores nothing
    assert len(messages(repo)) == 2


def test_pause_on_human_reply_can_be_turned_off_per_agent(uow: FakeUnitOfWork, repo: FakeRepository) -> None:
    agent = seed_agent(repo)
    agent.whatsapp_metadata = {"pauseOnHumanReply": False}
    record(uow, upsert())

    record(uow, upsert(message_id="3EB0HUMAN", from_me=True, message={"conversation": "typed by hand"}))

    assert repo.rows(Talk)[0].paused is False


def test_a_human_first_message_to_a_new_number_names_the_contact_by_phone_not_by_the_business(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert(from_me=True, push_name="Acme Vendas"))

    [contact] = repo.rows(Contact)
    assert contact.name == "+5511987654321"
    assert contact.first_name is None


def test_our_own_send_echoed_by_send_message_is_matched_not_stored_twice(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert())
    [talk] = repo.rows(Talk)
    ours = reply_in_flight(repo, talk, agent, "Qual o seu nome?", "sending")

    outcome = record(uow, send_message_event("3EB0OURS", "Qual o seu nome?"))

    assert (outcome.status, outcome.message_id, outcome.needs_ai_turn) == ("duplicate", ours.id, False)
    assert ours.whatsapp_message_id == "3EB0OURS"
    # The worker may have died after Evolution accepted: the echo settles the send, so it is not resent.
    assert ours.send_status == "sent"
    assert ours.meta["whatsappSent"] is True
    assert ours.meta["whatsappReconciledBy"] == "send.message"
    assert talk.paused is False
    assert len(messages(repo)) == 2


def test_a_send_message_for_a_message_we_did_not_send_is_stored_as_human_via_api(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert())

    outcome = record(uow, send_message_event("3EB0OTHERTOOL", "Sent from another tool"))

    assert outcome.status == "stored"
    other = next(m for m in messages(repo) if m.whatsapp_message_id == "3EB0OTHERTOOL")
    assert other.meta["sentVia"] == "api"
    assert other.from_agent_id is None


def test_a_lid_contact_and_a_phone_contact_of_one_person_are_merged(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert(message_id="BY-PHONE"))  # known by phone
    record(uow, upsert(message_id="BY-LID", remote_jid=LID))  # the same person, LID only: second contact
    assert len(repo.rows(Contact)) == 2

    outcome = record(uow, upsert(message_id="BOTH", remote_jid=LID, alt=PN))  # LID + PN: one person

    [contact] = repo.rows(Contact)
    assert contact.phone == "+5511987654321"
    assert contact.whatsapp_lid == LID.split("@")[0]
    open_talks = [t for t in repo.rows(Talk) if t.closed_at is None]
    assert len(open_talks) == 1
    assert outcome.talk_id == open_talks[0].id
    assert {m.talk_id for m in messages(repo)} == {open_talks[0].id}
    assert {m.from_contact_id for m in messages(repo)} == {contact.id}


def test_an_event_with_phone_and_lid_takes_both_identity_locks_in_order(
    uow: FakeUnitOfWork, agent: Agent
) -> None:
    record(uow, upsert(remote_jid=LID, alt=PN))

    assert uow.locks_taken == sorted(uow.locks_taken)
    assert len(uow.locks_taken) == 2


def test_an_agent_can_ignore_chats_by_jid(uow: FakeUnitOfWork, repo: FakeRepository) -> None:
    agent = seed_agent(repo)
    agent.whatsapp_metadata = {"ignoreJids": [PN]}

    outcome = record(uow, upsert())

    assert outcome.status == "ignored"
    assert messages(repo) == []


def test_send_message_events_are_not_ignored_before_the_database(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    outcome = record_inbound(uow.factory(), send_message_event("3EB0X", "hello"), now=lambda: NOW)

    assert outcome.status == "stored"
    assert messages(repo)[0].meta["sentVia"] == "api"
