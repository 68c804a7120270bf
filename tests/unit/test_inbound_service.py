"""record_inbound on the in-memory unit of work, fed with events `parse_webhook` builds from real shapes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from luminai_actors.domain.talkflow import initial_state
from luminai_actors.domain.treeflow import validate_definition
from luminai_actors.errors import Conflict
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.tables import (
    Agent,
    Base,
    Company,
    Contact,
    Organization,
    Talk,
    TalkAgent,
    TalkMessage,
    TalkType,
    TreeFlow,
    User,
)
from luminai_actors.services.inbound import InboundOutcome, conversation_key, record_inbound
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork

NOW = datetime(2025, 10, 21, 14, 40, tzinfo=UTC)
INSTANCE = "acme-support"
PN = "5511987654321@s.whatsapp.net"
LID = "103899771998284@lid"
FLOW = validate_definition({"name": "Qualify", "steps": [{"id": "name", "question": "What is your name?"}]})


def upsert(
    *,
    message_id: str = "3A5F1C2B9D8E7F6A5B4C",
    remote_jid: str = PN,
    alt: str | None = None,
    instance: str = INSTANCE,
    from_me: bool = False,
    push_name: str | None = "Maria Clara Souza",
    message: dict[str, Any] | None = None,
    message_type: str = "conversation",
    participant: str | None = None,
) -> MessageUpsert:
    """A messages.upsert event as Evolution 2.3 posts it (reference §1.2, example A)."""
    key: dict[str, Any] = {"remoteJid": remote_jid, "fromMe": from_me, "id": message_id}
    if alt is not None:
        key["remoteJidAlt"] = alt
    if participant is not None:
        key["participant"] = participant
    payload = {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": key,
            "pushName": push_name,
            "status": "DELIVERY_ACK",
            "message": message or {"conversation": "Oi, quero agendar"},
            "messageType": message_type,
            "messageTimestamp": 1761057639,
            "source": "ios",
        },
        "date_time": "2025-10-21T11:40:39.512Z",
        "sender": "5511912345678@s.whatsapp.net",
        "server_url": "https://evo.example.com",
        "apikey": "B5E2C1D0-INSTANCE-TOKEN",
    }
    event = parse_webhook(payload)
    assert isinstance(event, MessageUpsert)
    return event


def seed_agent(
    repo: FakeRepository,
    *,
    instance: str = INSTANCE,
    active: bool = True,
    whatsapp_active: bool = True,
) -> Agent:
    """An organization with an owner, a TreeFlow and an agent paired to `instance`."""
    org = Organization(name=f"Org of {instance}")
    repo.add(org)
    owner = User(organization_id=org.id, name="Owner")
    flow = TreeFlow(organization_id=org.id, name="Qualify", definition=FLOW)
    repo.add(owner)
    repo.add(flow)
    agent = Agent(
        organization_id=org.id,
        tree_flow_id=flow.id,
        user_id=owner.id,
        name="Sofia",
        active=active,
        whatsapp_instance_name=instance,
        whatsapp_active=whatsapp_active,
    )
    repo.add(agent)
    return agent


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(clock=lambda: NOW)


@pytest.fixture
def uow(repo: FakeRepository) -> FakeUnitOfWork:
    return FakeUnitOfWork(repo)


@pytest.fixture
def agent(repo: FakeRepository) -> Agent:
    return seed_agent(repo)


def record(uow: FakeUnitOfWork, event: MessageUpsert) -> InboundOutcome:
    return record_inbound(uow.factory(), event, now=lambda: NOW)


def counts(repo: FakeRepository) -> dict[str, int]:
    models: list[type[Base]] = [Contact, Company, Talk, TalkAgent, TalkMessage, TalkType, User]
    return {model.__name__: len(repo.rows(model)) for model in models}


def test_first_message_creates_contact_talk_and_message(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    outcome = record(uow, upsert())

    assert (outcome.status, outcome.needs_ai_turn) == ("stored", True)
    [contact] = repo.rows(Contact)
    assert outcome.contact_id == contact.id
    assert (contact.organization_id, contact.email) == (agent.organization_id, None)
    assert (contact.name, contact.first_name, contact.last_name) == (
        "Maria Clara Souza",
        "Maria",
        "Clara Souza",
    )
    assert (contact.phone, contact.mobile_phone, contact.whatsapp_lid) == (
        "+5511987654321",
        "+5511987654321",
        None,
    )
    assert (contact.lead_source, contact.origin) == ("WhatsApp", "WhatsApp - Evolution API")
    assert contact.last_contact_date == NOW
    [company] = repo.rows(Company)
    assert (contact.company_id, company.name) == (company.id, "Default Company")
    assert uow.committed
    assert uow.locks_taken == [f"contact:{agent.organization_id}:+5511987654321"]


def test_the_talk_is_whatsapp_open_attached_to_the_agent_with_its_flow(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    outcome = record(uow, upsert())

    [talk] = repo.rows(Talk)
    assert outcome.talk_id == talk.id
    assert (talk.channel, talk.status, talk.archived, talk.paused, talk.needs_human) == (
        2,
        0,
        False,
        False,
        False,
    )
    assert (talk.agent_id, talk.owner_id) == (agent.id, agent.user_id)
    assert [(ta.talk_id, ta.agent_id) for ta in repo.rows(TalkAgent)] == [(talk.id, agent.id)]
    assert talk.talk_flow == initial_state(str(agent.tree_flow_id), FLOW)
    assert talk.subject == "WhatsApp - Maria Clara Souza"
    assert (talk.whatsapp_remote_jid, talk.date_last_message) == (PN, NOW)
    assert [t.name for t in repo.rows(TalkType)] == ["WhatsApp"]


def test_the_message_is_stored_inbound_unprocessed_with_its_metadata(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    outcome = record(uow, upsert())

    [message] = repo.rows(TalkMessage)
    assert outcome.message_id == message.id
    assert (message.direction, message.channel, message.message_type) == ("inbound", "whatsapp", "text")
    assert (message.body, message.agent_id, message.from_contact_id) == (
        "Oi, quero agendar",
        agent.id,
        outcome.contact_id,
    )
    assert message.whatsapp_message_id == "3A5F1C2B9D8E7F6A5B4C"
    assert (message.processed_at, message.send_status) == (None, None)
    assert message.sent_at == datetime.fromtimestamp(1761057639, tz=UTC)
    assert message.meta == {
        "whatsappMessageId": "3A5F1C2B9D8E7F6A5B4C",
        "instanceName": INSTANCE,
        "remoteJid": PN,
        "pushName": "Maria Clara Souza",
        "messageType": "conversation",
        "source": "ios",
    }


def test_media_message_stores_caption_type_and_media_metadata(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    image = {
        "imageMessage": {"mimetype": "image/jpeg", "caption": "comprovante", "width": 960, "height": 1280}
    }

    outcome = record(uow, upsert(message=image, message_type="imageMessage"))

    assert outcome.status == "stored"
    [message] = repo.rows(TalkMessage)
    assert (message.body, message.message_type) == ("comprovante", "imageMessage")
    assert message.meta["messageType"] == "imageMessage"
    assert message.meta["media"]["mimetype"] == "image/jpeg"


def test_returning_contact_reuses_contact_and_talk(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    first = record(uow, upsert(message_id="A1"))
    second = record(uow, upsert(message_id="A2", push_name="Maria"))

    assert second.status == "stored"
    assert (second.contact_id, second.talk_id) == (first.contact_id, first.talk_id)
    assert second.message_id != first.message_id
    assert counts(repo) == {
        "Contact": 1,
        "Company": 1,
        "Talk": 1,
        "TalkAgent": 1,
        "TalkMessage": 2,
        "TalkType": 1,
        "User": 1,
    }


def test_default_company_is_created_once_per_organization(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    record(uow, upsert(message_id="A1"))
    record(uow, upsert(message_id="B1", remote_jid="5521998765432@s.whatsapp.net", push_name="João"))

    [company] = repo.rows(Company)
    assert len(repo.rows(Contact)) == 2
    assert {c.company_id for c in repo.rows(Contact)} == {company.id}


def test_redelivered_webhook_is_a_duplicate_and_writes_nothing(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    first = record(uow, upsert())
    before, commits = counts(repo), uow.commits

    again = record(uow, upsert())

    assert (again.status, again.needs_ai_turn) == ("duplicate", False)
    assert (again.message_id, again.talk_id, again.contact_id) == (
        first.message_id,
        first.talk_id,
        first.contact_id,
    )
    assert (counts(repo), uow.commits) == (before, commits)


def test_same_phone_in_two_organizations_is_two_contacts_and_two_talks(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    other = seed_agent(repo, instance="globex-sales")

    ours = record(uow, upsert(message_id="SAME"))
    theirs = record(uow, upsert(message_id="SAME", instance="globex-sales"))

    assert (ours.status, theirs.status) == ("stored", "stored")
    assert ours.contact_id != theirs.contact_id
    assert ours.talk_id != theirs.talk_id
    by_org = {c.organization_id: c.phone for c in repo.rows(Contact)}
    assert by_org == {agent.organization_id: "+5511987654321", other.organization_id: "+5511987654321"}
    assert {t.agent_id for t in repo.rows(Talk)} == {agent.id, other.id}
    assert len(repo.rows(Company)) == 2


@pytest.mark.parametrize(
    "agent_kwargs", [{"instance": "someone-else"}, {"active": False}, {"whatsapp_active": False}]
)
def test_message_for_no_active_agent_is_ignored(
    uow: FakeUnitOfWork, repo: FakeRepository, agent_kwargs: dict[str, Any]
) -> None:
    seed_agent(repo, **agent_kwargs)
    before = counts(repo)

    outcome = record(uow, upsert())

    assert (outcome.status, outcome.needs_ai_turn) == ("ignored", False)
    assert outcome.reason == f"no active agent for instance {INSTANCE!r}"
    assert (counts(repo), uow.commits, uow.locks_taken) == (before, 0, [])


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            upsert(remote_jid="120363025123456789@g.us", participant="5531987650000@s.whatsapp.net"),
            "group chats are ignored",
        ),
        (upsert(remote_jid="status@broadcast", participant=PN), "broadcast chats are ignored"),
        (
            upsert(
                message={"reactionMessage": {"key": {"id": "3EB0A1B2", "fromMe": True}, "text": "👍"}},
                message_type="reactionMessage",
            ),
            "reaction is not a chat turn",
        ),
    ],
)
def test_what_is_not_a_lead_turn_is_ignored(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent, event: MessageUpsert, reason: str
) -> None:
    before = counts(repo)

    outcome = record(uow, event)

    assert (outcome.status, outcome.reason) == ("ignored", reason)
    assert (counts(repo), uow.commits) == (before, 0)


def test_lid_only_sender_is_keyed_by_lid_and_later_gets_the_phone(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    first = record(uow, upsert(message_id="L1", remote_jid=LID, push_name=None))

    [contact] = repo.rows(Contact)
    assert (contact.whatsapp_lid, contact.phone, contact.mobile_phone) == ("103899771998284", None, None)
    assert contact.name == "WhatsApp 103899771998284"
    [talk] = repo.rows(Talk)
    assert talk.whatsapp_remote_jid == LID
    assert uow.locks_taken == [f"contact:{agent.organization_id}:lid:103899771998284"]

    second = record(uow, upsert(message_id="L2", remote_jid=LID, alt=PN))

    assert (second.contact_id, second.talk_id) == (first.contact_id, first.talk_id)
    assert repo.rows(Contact) == [contact]
    assert (contact.phone, contact.mobile_phone, contact.whatsapp_lid) == (
        "+5511987654321",
        "+5511987654321",
        "103899771998284",
    )
    assert talk.whatsapp_remote_jid == PN  # replies go to the phone once it is known
    assert repo.rows(TalkMessage)[1].meta["lid"] == LID


def test_phone_contact_learns_its_lid(uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent) -> None:
    first = record(uow, upsert(message_id="P1"))
    second = record(uow, upsert(message_id="P2", remote_jid=LID, alt=PN))
    third = record(uow, upsert(message_id="P3", remote_jid=LID))  # LID only: found by the learnt LID

    assert first.contact_id == second.contact_id == third.contact_id
    [contact] = repo.rows(Contact)
    assert contact.whatsapp_lid == "103899771998284"


def test_br_number_without_the_ninth_digit_finds_the_contact_with_it(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    with_nine = record(uow, upsert(message_id="N1"))
    without = record(uow, upsert(message_id="N2", remote_jid="551187654321@s.whatsapp.net"))

    assert (without.contact_id, without.talk_id) == (with_nine.contact_id, with_nine.talk_id)
    [contact] = repo.rows(Contact)
    assert contact.phone == "+5511987654321"  # the stored spelling is kept
    assert uow.locks_taken[0] == uow.locks_taken[1]  # both spellings serialise on one lock


def test_conversation_key_is_one_for_both_br_spellings() -> None:
    with_nine = conversation_key(upsert())
    without = conversation_key(upsert(remote_jid="551187654321@s.whatsapp.net"))
    by_alt = conversation_key(upsert(remote_jid=LID, alt="551187654321@s.whatsapp.net"))

    assert with_nine == without == by_alt == f"{INSTANCE}|+5511987654321"
    assert conversation_key(upsert(remote_jid=LID)) == f"{INSTANCE}|lid:103899771998284"
    assert conversation_key(upsert(instance="other")) != with_nine


class ConflictOnceUnitOfWork(FakeUnitOfWork):
    """Its first commit fails as a unique-constraint race would (the transaction is rolled back)."""

    failed = False

    def commit(self) -> None:
        if not self.failed:
            self.failed = True
            self.rollback()
            raise Conflict("duplicate key value violates unique constraint (simulated)")
        super().commit()


def test_conflict_on_commit_is_resolved_by_a_second_pass(repo: FakeRepository, agent: Agent) -> None:
    uow = ConflictOnceUnitOfWork(repo)

    outcome = record(uow, upsert())

    assert (uow.failed, uow.commits, outcome.status) == (True, 1, "stored")
    assert len(uow.locks_taken) == 2  # the whole transaction ran twice
    assert counts(repo) == {
        "Contact": 1,
        "Company": 1,
        "Talk": 1,
        "TalkAgent": 1,
        "TalkMessage": 1,
        "TalkType": 1,
        "User": 1,
    }
    assert repo.rows(TalkMessage)[0].id == outcome.message_id


class RacingUnitOfWork(FakeUnitOfWork):
    """While we wait for the contact lock, another process records the same webhook and commits."""

    def __init__(self, repo: FakeRepository, event: MessageUpsert) -> None:
        super().__init__(repo)
        self.rival_event = event
        self.rival: InboundOutcome | None = None

    def lock(self, key: str) -> None:
        super().lock(key)
        if self.rival is None:
            self.rival = record(FakeUnitOfWork(self.store), self.rival_event)


def test_lost_race_for_the_same_message_returns_the_winners_rows(repo: FakeRepository, agent: Agent) -> None:
    event = upsert()
    uow = RacingUnitOfWork(repo, event)

    outcome = record(uow, event)

    assert uow.rival is not None
    assert uow.rival.status == "stored"
    assert outcome.status == "duplicate"  # our insert hit the unique key; the second pass found theirs
    assert (outcome.message_id, outcome.talk_id, outcome.contact_id) == (
        uow.rival.message_id,
        uow.rival.talk_id,
        uow.rival.contact_id,
    )
    assert uow.commits == 0
    assert (len(repo.rows(Contact)), len(repo.rows(Talk)), len(repo.rows(TalkMessage))) == (1, 1, 1)


def test_fake_refuses_a_second_message_with_the_same_whatsapp_id(
    uow: FakeUnitOfWork, repo: FakeRepository, agent: Agent
) -> None:
    stored = record(uow, upsert())
    talk_id = stored.talk_id
    assert talk_id is not None

    copy = TalkMessage(
        organization_id=agent.organization_id,
        talk_id=talk_id,
        agent_id=agent.id,
        direction="inbound",
        channel="whatsapp",
        whatsapp_message_id="3A5F1C2B9D8E7F6A5B4C",
    )
    with uow:
        uow.repo.add(copy)
        with pytest.raises(Conflict, match="agent_id_whatsapp_message_id"):
            uow.commit()

    assert [m.id for m in repo.rows(TalkMessage)] == [stored.message_id]


def test_fake_fills_column_defaults_on_add(repo: FakeRepository) -> None:
    message = TalkMessage(
        organization_id=uuid.uuid4(), talk_id=uuid.uuid4(), direction="outbound", channel="whatsapp"
    )
    repo.add(message)

    assert isinstance(message.id, uuid.UUID)
    assert message.id.version == 7
    assert (message.meta, message.send_attempts, message.body, message.message_type) == ({}, 0, "", "text")
    assert message.created_at == NOW
