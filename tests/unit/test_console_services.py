"""The console's use cases on the in-memory fakes: retry a failed reply, send as a human, ask Evolution for a
QR code; all scoped by organization and audited. (The console's settings form goes through
`services.lifecycle.update_agent`: tests/unit/test_agent_edit.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from luminai_actors.errors import BrokerUnavailable, Conflict, NotFound, ValidationError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.tables import Agent, AuditLog, Contact, Talk, TalkMessage
from luminai_actors.services import console
from luminai_actors.services.api_keys import OPERATOR, Principal
from luminai_actors.testing import FakeEvolutionApi
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork

NOW = datetime(2025, 10, 21, 16, 0, tzinfo=UTC)
ORG = uuid.uuid4()
OTHER = Principal(uuid.uuid4())
OWN_KEY = uuid.uuid4()
OWN = Principal(ORG, OWN_KEY)


class RecordingDispatcher:
    def __init__(self, fail: bool = False) -> None:
        self.sends: list[uuid.UUID] = []
        self.fail = fail

    def request_send(self, message_id: uuid.UUID) -> None:
        if self.fail:
            raise BrokerUnavailable("redis is down")
        self.sends.append(message_id)


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(clock=lambda: NOW)


@pytest.fixture
def uow(repo: FakeRepository) -> FakeUnitOfWork:
    return FakeUnitOfWork(repo)


def add_agent(repo: FakeRepository, instance: str = "acme", **fields: Any) -> Agent:
    values: dict[str, Any] = {
        "organization_id": ORG,
        "name": "Sofia",
        "whatsapp_instance_name": instance,
        "whatsapp_server_url": "http://evolution.test",
        "whatsapp_api_key": "secret-key",
        "whatsapp_webhook_token": "hook-token",
        "whatsapp_active": True,
        "whatsapp_metadata": {"qrcode": {"code": "2@abc"}, "custom": 1},
        **fields,
    }
    agent = Agent(**values)
    repo.add(agent)
    return agent


def add_talk(repo: FakeRepository, agent: Agent | None, **fields: Any) -> Talk:
    contact = Contact(
        organization_id=ORG, company_id=uuid.uuid4(), name="Maria", mobile_phone="+5511987654321"
    )
    repo.add(contact)
    talk = Talk(
        organization_id=ORG,
        contact_id=contact.id,
        agent_id=agent.id if agent is not None else None,
        owner_id=uuid.uuid4(),
        talk_type_id=uuid.uuid4(),
        subject="WhatsApp - Maria",
        channel=2,
        whatsapp_remote_jid="5511987654321@s.whatsapp.net",
        **fields,
    )
    repo.add(talk)
    return talk


def add_message(repo: FakeRepository, talk: Talk, direction: str, **fields: Any) -> TalkMessage:
    message = TalkMessage(
        organization_id=ORG,
        talk_id=talk.id,
        agent_id=talk.agent_id,
        direction=direction,
        channel="whatsapp",
        body=fields.pop("body", "hi"),
        **fields,
    )
    repo.add(message)
    return message


def failed_reply(repo: FakeRepository, talk: Talk) -> TalkMessage:
    return add_message(
        repo,
        talk,
        "outbound",
        send_status="failed",
        send_attempts=3,
        whatsapp_message_id="3EB0OLD",
        meta={
            "whatsappSent": False,
            "whatsappError": "Evolution API 500: Connection Closed",
            "whatsappAttempts": 3,
            "whatsappFailedAt": NOW.isoformat(),
            "whatsappLastError": "Evolution API 500: Connection Closed",
            "ai": {"model": "offline"},
        },
    )


# retry ---------------------------------------------------------------------------------------------------
def test_retry_resets_a_failed_reply_keeps_its_history_and_enqueues_it(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    talk = add_talk(repo, add_agent(repo))
    message = failed_reply(repo, talk)
    dispatcher = RecordingDispatcher()

    console.retry_failed_message(uow.factory(), dispatcher, OWN, message.id, now=lambda: NOW)

    assert message.send_status == "pending"
    assert message.send_attempts == 0
    assert message.whatsapp_message_id is None
    assert message.meta["whatsappAttempts"] == 0
    assert "whatsappError" not in message.meta
    assert "whatsappSent" not in message.meta
    assert message.meta["ai"] == {"model": "offline"}
    assert message.meta["retryHistory"] == [
        {
            "error": "Evolution API 500: Connection Closed",
            "attempts": 3,
            "failedAt": NOW.isoformat(),
            "whatsappStatus": None,
            "whatsappMessageId": "3EB0OLD",
            "retriedAt": NOW.isoformat(),
        }
    ]
    assert dispatcher.sends == [message.id]
    (entry,) = repo.rows(AuditLog)
    assert (entry.action, entry.entity_id, entry.actor) == ("message.retry", message.id, f"key:{OWN_KEY}")
    assert (entry.before["sendStatus"], entry.after) == ("failed", {"sendStatus": "pending"})


def test_a_second_retry_appends_to_the_history(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = add_talk(repo, add_agent(repo))
    message = failed_reply(repo, talk)
    console.retry_failed_message(uow.factory(), RecordingDispatcher(), OWN, message.id)
    message.send_status, message.send_attempts = "failed", 3
    message.meta = {**message.meta, "whatsappError": "again"}
    console.retry_failed_message(uow.factory(), RecordingDispatcher(), OWN, message.id)
    assert [h["error"] for h in message.meta["retryHistory"]] == [
        "Evolution API 500: Connection Closed",
        "again",
    ]


@pytest.mark.parametrize("status", ["pending", "sending", "sent"])
def test_only_a_failed_reply_can_be_retried(repo: FakeRepository, uow: FakeUnitOfWork, status: str) -> None:
    talk = add_talk(repo, add_agent(repo))
    message = add_message(repo, talk, "outbound", send_status=status, send_attempts=1)
    dispatcher = RecordingDispatcher()
    with pytest.raises(Conflict):
        console.retry_failed_message(uow.factory(), dispatcher, OPERATOR, message.id)
    assert message.send_status == status
    assert dispatcher.sends == []


def test_retry_of_another_organizations_message_is_not_found(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    message = failed_reply(repo, add_talk(repo, add_agent(repo)))
    with pytest.raises(NotFound):
        console.retry_failed_message(uow.factory(), RecordingDispatcher(), OTHER, message.id)
    assert message.send_status == "failed"


def test_retry_stays_pending_for_the_recovery_sweep_when_the_broker_is_down(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    message = failed_reply(repo, add_talk(repo, add_agent(repo)))
    console.retry_failed_message(uow.factory(), RecordingDispatcher(fail=True), OWN, message.id)
    assert message.send_status == "pending"


# human send ----------------------------------------------------------------------------------------------
def test_a_human_message_is_an_outbound_reply_for_the_sender_and_answers_the_lead(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    agent = add_agent(repo)
    talk = add_talk(repo, agent)
    waiting = add_message(
        repo, talk, "inbound", body="is anyone there?", created_at=NOW - timedelta(seconds=9)
    )
    dispatcher = RecordingDispatcher()

    sent = console.send_human_message(
        uow.factory(), dispatcher, OWN, talk.id, "  Hi, Ana here  ", now=lambda: NOW
    )

    assert (sent.direction, sent.body, sent.send_status, sent.send_attempts) == (
        "outbound",
        "Hi, Ana here",
        "pending",
        0,
    )
    assert (sent.agent_id, sent.from_agent_id, sent.from_contact_id) == (agent.id, None, None)
    assert sent.meta == {"human": True, "sentVia": "console"}
    assert waiting.processed_at == NOW
    assert talk.paused
    assert talk.talk_flow == {
        "handoff": {"reason": "a person replied from the console", "at": NOW.isoformat()}
    }
    assert talk.date_last_message == NOW
    assert dispatcher.sends == [sent.id]
    assert repo.rows(TalkMessage)[-1] is sent
    (entry,) = repo.rows(AuditLog)
    assert (entry.action, entry.entity_id, entry.organization_id) == ("message.send", sent.id, ORG)
    assert entry.after == {"talkId": str(talk.id), "characters": 12, "pausedBot": True}
    assert "Ana" not in str(
        entry.after
    )  # the audit keeps no words of a conversation (erasure would miss them)


def test_a_human_message_leaves_the_bot_on_when_the_agent_says_so(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    talk = add_talk(repo, add_agent(repo, whatsapp_metadata={"pauseOnHumanReply": False}))
    console.send_human_message(uow.factory(), RecordingDispatcher(), OWN, talk.id, "hello")
    assert not talk.paused


@pytest.mark.parametrize("text", ["", "   ", "x" * 4097])
def test_a_human_message_must_have_text(repo: FakeRepository, uow: FakeUnitOfWork, text: str) -> None:
    talk = add_talk(repo, add_agent(repo))
    with pytest.raises(ValidationError) as caught:
        console.send_human_message(uow.factory(), RecordingDispatcher(), OWN, talk.id, text)
    assert caught.value.field == "text"
    assert repo.rows(TalkMessage) == []


def test_no_human_message_to_an_opted_out_contact_or_without_an_agent(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    talk = add_talk(repo, add_agent(repo))
    repo.rows(Contact)[0].opted_out_at = NOW
    with pytest.raises(Conflict, match="opted out"):
        console.send_human_message(uow.factory(), RecordingDispatcher(), OWN, talk.id, "hi")
    orphan = add_talk(repo, None)
    with pytest.raises(Conflict, match="no agent"):
        console.send_human_message(uow.factory(), RecordingDispatcher(), OWN, orphan.id, "hi")
    assert repo.rows(TalkMessage) == []


def test_a_human_message_to_another_organizations_talk_is_not_found(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    talk = add_talk(repo, add_agent(repo))
    with pytest.raises(NotFound):
        console.send_human_message(uow.factory(), RecordingDispatcher(), OTHER, talk.id, "hi")
    assert repo.rows(TalkMessage) == []


# QR code -------------------------------------------------------------------------------------------------
def test_a_closed_instance_answers_a_qr_code_that_is_kept_on_the_agent(
    repo: FakeRepository, uow: FakeUnitOfWork, fake_evolution: FakeEvolutionApi
) -> None:
    fake_evolution.add_instance("acme", "secret-key", state="close")
    agent = add_agent(repo, whatsapp_server_url=fake_evolution.url, whatsapp_status="disconnected")
    client = EvolutionClient(policy=AddressPolicy.from_entries(["127.0.0.1"]))
    try:
        result = console.request_qrcode(uow.factory(), client, OWN, agent.id, now=lambda: NOW)
        assert result["status"] == "connecting"
        assert result["instance"] == "acme"
        qrcode = agent.whatsapp_metadata["qrcode"] if agent.whatsapp_metadata else {}
        assert qrcode["base64"].startswith("data:image/png;base64,iVBOR")
        assert qrcode["code"].startswith("2@")
        assert qrcode["count"] == 1
        assert qrcode["at"] == NOW.isoformat()
        assert agent.whatsapp_status == "connecting"

        fake_evolution.set_state("acme", "open")
        again = console.request_qrcode(uow.factory(), client, OWN, agent.id, now=lambda: NOW)
        assert again == {"instance": "acme", "status": "connected", "qrcode": None}
        assert agent.whatsapp_status == "connected"
        assert agent.whatsapp_last_connected_at == NOW
        with pytest.raises(NotFound):
            console.request_qrcode(uow.factory(), client, OTHER, agent.id)
    finally:
        client.close()
