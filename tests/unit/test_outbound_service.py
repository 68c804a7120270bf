"""deliver_outbound via a real EvolutionClient against a local FakeEvolutionApi (MockTransport for v1)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.tables import Agent, Contact, Organization, Talk, TalkMessage
from luminai_actors.services.outbound import DeliveryOutcome, deliver_outbound
from luminai_actors.testing import FakeEvolutionApi
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork

T0 = datetime(2025, 10, 21, 15, 0, tzinfo=UTC)
INSTANCE = "acme"
API_KEY = "ACME-KEY"
NUMBER = "5511987654321"


@pytest.fixture
def evo() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi() as fake:
        fake.add_instance(INSTANCE, API_KEY)
        yield fake


@pytest.fixture
def client() -> Iterator[EvolutionClient]:
    # The fake Evolution API listens on loopback: allowed as an operator would allow a LAN host.
    evolution = EvolutionClient(timeout=5.0, policy=AddressPolicy.from_entries(["127.0.0.1"]))
    yield evolution
    evolution.close()


class Outbox:
    """An agent, a contact's WhatsApp talk and one pending reply in it, stored in a FakeRepository."""

    def __init__(self, server_url: str, *, remote_jid: str | None = f"{NUMBER}@s.whatsapp.net") -> None:
        self.repo = FakeRepository(clock=lambda: T0)
        self.uow = FakeUnitOfWork(self.repo)
        org = Organization(name="Acme")
        self.repo.add(org)
        self.agent = Agent(
            organization_id=org.id,
            name="Sofia",
            whatsapp_instance_name=INSTANCE,
            whatsapp_server_url=server_url,
            whatsapp_api_key=API_KEY,
            whatsapp_active=True,
        )
        contact = Contact(organization_id=org.id, company_id=uuid.uuid4(), name="Maria", phone="+" + NUMBER)
        self.repo.add(self.agent)  # ids are filled on add, and the rows below refer to them
        self.repo.add(contact)
        self.talk = Talk(
            organization_id=org.id,
            contact_id=contact.id,
            agent_id=self.agent.id,
            owner_id=uuid.uuid4(),
            talk_type_id=uuid.uuid4(),
            subject="WhatsApp - Maria",
            channel=2,
            whatsapp_remote_jid=remote_jid,
        )
        self.repo.add(self.talk)
        self.message = TalkMessage(
            organization_id=org.id,
            talk_id=self.talk.id,
            agent_id=self.agent.id,
            from_agent_id=self.agent.id,
            direction="outbound",
            channel="whatsapp",
            body="Hi Maria! What is your name?",
            send_status="pending",
        )
        self.repo.add(self.message)

    def deliver(self, client: EvolutionClient, at: datetime = T0, **kwargs: Any) -> DeliveryOutcome:
        kwargs.setdefault("max_attempts", 3)
        return deliver_outbound(self.uow.factory(), client, self.message.id, now=lambda: at, **kwargs)


@pytest.fixture
def outbox(evo: FakeEvolutionApi) -> Outbox:
    return Outbox(evo.url)


def test_success_marks_the_message_sent_with_evolutions_answer(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outcome = outbox.deliver(client)

    assert outcome == DeliveryOutcome("sent", 1)
    [request] = evo.sendtext_attempts(INSTANCE)
    assert request.route == f"/message/sendText/{INSTANCE}"
    assert request.json == {"number": NUMBER, "text": "Hi Maria! What is your name?"}
    assert request.headers["apikey"] == API_KEY
    message = outbox.message
    key_id = message.meta["whatsappResponse"]["key"]["id"]
    assert (message.send_status, message.send_attempts, message.send_lease_until) == ("sent", 1, None)
    assert (message.sent_at, message.delivered_at) == (T0, T0)
    assert message.whatsapp_message_id == key_id
    assert message.meta["whatsappMessageId"] == key_id
    assert message.meta["whatsappResponse"]["key"]["remoteJid"] == f"{NUMBER}@s.whatsapp.net"
    assert (message.meta["whatsappSent"], message.meta["whatsappAttempts"]) == (True, 1)
    assert message.meta["whatsappSentAt"] == T0.isoformat()
    assert outbox.talk.needs_human is False


def test_a_sent_message_is_not_sent_again(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox.deliver(client)

    again = outbox.deliver(client, T0 + timedelta(minutes=5))

    assert again == DeliveryOutcome("already_done", 1)
    assert len(evo.sendtext_attempts()) == 1
    assert len(evo.sent_messages()) == 1


def test_server_error_is_retried_later(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    evo.fail_next(1, status=500)

    outcome = outbox.deliver(client, retry_wait=lambda attempt: 30.0 * attempt, lease_seconds=60)

    assert (outcome.status, outcome.attempts) == ("retry", 1)
    assert outcome.error is not None
    assert "500" in outcome.error
    message = outbox.message
    assert (message.send_status, message.send_attempts) == ("pending", 1)
    # The scheduled retry (wait before attempt 2, plus the lease) keeps the recovery sweep away.
    assert message.send_lease_until == T0 + timedelta(seconds=60 + 60)
    assert message.meta["whatsappAttempts"] == 1
    assert "500" in message.meta["whatsappLastError"]
    assert "whatsappSent" not in message.meta

    second = outbox.deliver(client, T0 + timedelta(seconds=61))
    assert second == DeliveryOutcome("sent", 2)
    assert message.meta["whatsappAttempts"] == 2


def test_last_allowed_failure_is_final_and_calls_for_a_human(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    evo.fail_next(3, status=500)
    first = outbox.deliver(client, T0)
    second = outbox.deliver(client, T0 + timedelta(seconds=10))
    at = T0 + timedelta(seconds=20)

    third = outbox.deliver(client, at)

    assert [o.status for o in (first, second, third)] == ["retry", "retry", "failed"]
    assert third.attempts == 3
    message = outbox.message
    assert (message.send_status, message.send_attempts, message.send_lease_until) == ("failed", 3, None)
    assert message.meta["whatsappSent"] is False
    assert "500" in message.meta["whatsappError"]
    assert message.meta["whatsappAttempts"] == 3
    assert message.meta["whatsappFailedAt"] == at.isoformat()
    assert outbox.talk.needs_human is True
    assert len(evo.sendtext_attempts()) == 3

    assert outbox.deliver(client, at).status == "already_done"
    assert len(evo.sendtext_attempts()) == 3


@pytest.mark.parametrize(
    ("setup", "status", "words"),
    [
        (lambda evo, outbox: evo.mark_not_on_whatsapp(NUMBER), 400, "not on WhatsApp"),
        (lambda evo, outbox: setattr(outbox.agent, "whatsapp_api_key", "WRONG"), 401, "Unauthorized"),
        (lambda evo, outbox: setattr(outbox.agent, "whatsapp_instance_name", "ghost"), 404, "does not exist"),
    ],
    ids=["exists-false", "unauthorized", "unknown-instance"],
)
def test_permanent_errors_fail_after_one_call(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient, setup: Any, status: int, words: str
) -> None:
    setup(evo, outbox)

    outcome = outbox.deliver(client, max_attempts=5)

    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert len(evo.requests) == 1
    message = outbox.message
    assert message.send_status == "failed"
    assert f"Evolution API {status}" in message.meta["whatsappError"]
    assert words in message.meta["whatsappError"]
    assert (message.meta["whatsappSent"], message.meta["whatsappAttempts"]) == (False, 1)
    assert outbox.talk.needs_human is True


def test_message_in_flight_is_left_alone(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox.message.send_status = "sending"
    outbox.message.send_attempts = 1
    outbox.message.send_lease_until = T0 + timedelta(seconds=30)

    outcome = outbox.deliver(client, T0)

    assert outcome == DeliveryOutcome("in_flight", 1)
    assert evo.requests == []
    assert outbox.message.send_lease_until == T0 + timedelta(seconds=30)


def test_message_whose_sender_died_is_attempted_again(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox.message.send_status = "sending"
    outbox.message.send_attempts = 1
    outbox.message.send_lease_until = T0 - timedelta(seconds=1)

    outcome = outbox.deliver(client, T0)

    assert outcome == DeliveryOutcome("sent", 2)
    assert len(evo.sent_messages()) == 1


def test_no_attempts_left_fails_without_calling(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox.message.send_attempts = 3

    outcome = outbox.deliver(client, max_attempts=3)

    assert (outcome.status, outcome.attempts) == ("failed", 3)
    assert outcome.error == "no attempts left (3 of 3 used)"
    assert evo.requests == []
    assert outbox.talk.needs_human is True


def test_agent_without_whatsapp_configuration_fails_without_calling(
    outbox: Outbox, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox.agent.whatsapp_server_url = None
    outbox.agent.whatsapp_api_key = None

    outcome = outbox.deliver(client)

    assert outcome.status == "failed"
    assert outcome.error == "agent WhatsApp configuration lacks whatsappServerUrl, whatsappApiKey"
    assert outbox.message.meta["whatsappError"] == outcome.error
    assert evo.requests == []


def test_lid_chat_is_answered_at_the_lid_jid(evo: FakeEvolutionApi, client: EvolutionClient) -> None:
    outbox = Outbox(evo.url, remote_jid="103899771998284@lid")

    assert outbox.deliver(client).status == "sent"

    [request] = evo.sendtext_attempts()
    assert request.json["number"] == "103899771998284@lid"


def test_talk_without_jid_is_answered_at_the_contacts_phone(
    evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox = Outbox(evo.url, remote_jid=None)

    assert outbox.deliver(client).status == "sent"

    [request] = evo.sendtext_attempts()
    assert request.json["number"] == NUMBER


def test_unknown_message_is_missing(outbox: Outbox, client: EvolutionClient) -> None:
    outcome = deliver_outbound(outbox.uow.factory(), client, uuid.uuid4(), max_attempts=3)
    assert outcome.status == "missing"


def test_v1_agent_gets_the_v1_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"key": {"id": "BAE5V1", "remoteJid": f"{NUMBER}@s.whatsapp.net"}})

    outbox = Outbox("https://evo-v1.example.com")
    outbox.agent.whatsapp_metadata = {"apiVersion": "1"}
    outbox.agent.whatsapp_server_url_trusted = True  # set up by the operator: no address rule
    client = EvolutionClient(httpx.MockTransport(handler), timeout=5.0)
    try:
        outcome = outbox.deliver(client)
    finally:
        client.close()

    assert outcome == DeliveryOutcome("sent", 1)
    [request] = seen
    assert str(request.url) == f"https://evo-v1.example.com/message/sendText/{INSTANCE}"
    assert json.loads(request.content) == {
        "number": NUMBER,
        "options": {},
        "textMessage": {"text": "Hi Maria! What is your name?"},
    }
    assert outbox.message.whatsapp_message_id == "BAE5V1"
