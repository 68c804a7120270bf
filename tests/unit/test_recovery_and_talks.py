"""find_stalled_work finds lost AI turns and sends by their state; flag_for_human hands a talk to a person."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from luminai_actors.ai.brain import OfflineBrain
from luminai_actors.persistence.tables import Agent, Contact, Talk, TalkMessage
from luminai_actors.services.ai_turn import run_ai_turn
from luminai_actors.services.recovery import find_stalled_work
from luminai_actors.services.talks import flag_for_human, hand_over_after_failure
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork

NOW = datetime(2025, 10, 21, 16, 0, tzinfo=UTC)
OLD = NOW - timedelta(minutes=5)
FRESH = NOW - timedelta(seconds=5)
ORG = uuid.uuid4()


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(clock=lambda: NOW)


@pytest.fixture
def uow(repo: FakeRepository) -> FakeUnitOfWork:
    return FakeUnitOfWork(repo)


def add_talk(repo: FakeRepository, **fields: Any) -> Talk:
    talk = Talk(
        organization_id=ORG,
        contact_id=uuid.uuid4(),
        owner_id=uuid.uuid4(),
        talk_type_id=uuid.uuid4(),
        subject="WhatsApp - Lead",
        channel=2,
        **fields,
    )
    repo.add(talk)
    return talk


def add_message(repo: FakeRepository, talk: Talk, direction: str, **fields: Any) -> TalkMessage:
    message = TalkMessage(
        organization_id=ORG, talk_id=talk.id, direction=direction, channel="whatsapp", body="hi", **fields
    )
    repo.add(message)
    return message


def stalled(uow: FakeUnitOfWork) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    work = find_stalled_work(uow.factory(), older_than_seconds=60, now=NOW)
    return work.talks_awaiting_ai, work.messages_awaiting_send


def test_talks_with_old_unanswered_inbound_are_found(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    waiting = add_talk(repo)
    add_message(repo, waiting, "inbound", created_at=OLD)
    add_message(repo, waiting, "inbound", created_at=OLD + timedelta(seconds=1))  # listed once
    expired = add_talk(repo, ai_lease_until=NOW - timedelta(seconds=1))  # its worker died
    add_message(repo, expired, "inbound", created_at=OLD)

    fresh = add_talk(repo)  # its task is probably still queued
    add_message(repo, fresh, "inbound", created_at=FRESH)
    paused = add_talk(repo, paused=True)
    add_message(repo, paused, "inbound", created_at=OLD)
    running = add_talk(repo, ai_lease_until=NOW + timedelta(seconds=30))
    add_message(repo, running, "inbound", created_at=OLD)
    answered = add_talk(repo)
    add_message(repo, answered, "inbound", created_at=OLD, processed_at=OLD)
    outbound_only = add_talk(repo)
    add_message(repo, outbound_only, "outbound", created_at=OLD, send_status="sent")

    talks, _ = stalled(uow)

    assert sorted(talks) == sorted([waiting.id, expired.id])


def test_outbound_pending_or_stuck_sending_is_found(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = add_talk(repo)
    pending = add_message(repo, talk, "outbound", send_status="pending", created_at=OLD)
    stuck = add_message(
        repo,
        talk,
        "outbound",
        send_status="sending",
        send_lease_until=NOW - timedelta(seconds=1),
        created_at=OLD + timedelta(seconds=1),
    )

    add_message(repo, talk, "outbound", send_status="pending", created_at=FRESH)
    add_message(
        repo,
        talk,
        "outbound",
        send_status="sending",
        send_lease_until=NOW + timedelta(seconds=5),
        created_at=OLD,
    )
    add_message(  # a retry is scheduled: its lease covers the wait
        repo,
        talk,
        "outbound",
        send_status="pending",
        send_lease_until=NOW + timedelta(seconds=30),
        created_at=OLD,
    )
    add_message(repo, talk, "outbound", send_status="sent", created_at=OLD)
    add_message(repo, talk, "outbound", send_status="failed", created_at=OLD)
    add_message(repo, talk, "inbound", created_at=OLD, processed_at=OLD)

    _, messages = stalled(uow)

    assert messages == [pending.id, stuck.id]  # oldest first


def test_nothing_stalled(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    assert stalled(uow) == ([], [])
    assert uow.commits == 0


def test_stalled_work_is_limited(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = add_talk(repo)
    for seconds in range(5):
        add_message(
            repo, talk, "outbound", send_status="pending", created_at=OLD + timedelta(seconds=seconds)
        )

    work = find_stalled_work(uow.factory(), older_than_seconds=60, now=NOW, limit=2)

    assert len(work.messages_awaiting_send) == 2


def test_flag_for_human_pauses_and_records_the_reason(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = add_talk(repo, ai_lease_until=NOW, talk_flow={"currentStepId": "name", "answers": {"a": 1}})
    before = datetime.now(UTC)

    flag_for_human(uow.factory(), talk.id, "AI failed 3 times: timeout")

    assert (talk.paused, talk.needs_human, talk.ai_lease_until) == (True, True, None)
    assert talk.talk_flow is not None
    assert (talk.talk_flow["currentStepId"], talk.talk_flow["answers"]) == ("name", {"a": 1})
    handoff = talk.talk_flow["handoff"]
    assert handoff["reason"] == "AI failed 3 times: timeout"
    assert before <= datetime.fromisoformat(handoff["at"]) <= datetime.now(UTC)
    assert uow.commits == 1


def test_flagged_talk_is_neither_answered_nor_swept(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = add_talk(repo, talk_flow=None)
    add_message(repo, talk, "inbound", created_at=OLD)

    flag_for_human(uow.factory(), talk.id, "lead asked for a person")

    assert talk.talk_flow is not None
    assert list(talk.talk_flow) == ["handoff"]  # a talk without a flow gets only the hand-off
    assert talk.talk_flow["handoff"]["reason"] == "lead asked for a person"
    assert run_ai_turn(uow.factory(), OfflineBrain(), talk.id, now=lambda: NOW).status == "paused"
    assert stalled(uow) == ([], [])


def test_flag_for_human_on_a_missing_talk_does_nothing(uow: FakeUnitOfWork) -> None:
    flag_for_human(uow.factory(), uuid.uuid4(), "whatever")
    assert uow.commits == 0


def _agent_and_contact(repo: FakeRepository, metadata: dict[str, Any], opted_out: bool = False) -> Talk:
    agent = Agent(id=uuid.uuid4(), organization_id=ORG, name="SDR", whatsapp_metadata=metadata)
    contact = Contact(id=uuid.uuid4(), organization_id=ORG, opted_out_at=NOW if opted_out else None)
    repo.add(agent)
    repo.add(contact)
    talk = add_talk(repo, agent_id=agent.id)
    talk.contact_id = contact.id
    add_message(repo, talk, "inbound", created_at=OLD)
    return talk


def test_when_every_attempt_failed_the_lead_gets_the_agents_handoff_message(
    repo: FakeRepository, uow: FakeUnitOfWork
) -> None:
    talk = _agent_and_contact(repo, {"handoffMessage": "Um consultor vai te chamar já já."})

    reply_id = hand_over_after_failure(uow.factory(), talk.id, "LLM request failed: 500")

    assert (talk.paused, talk.needs_human) == (True, True)
    reply = repo.get(TalkMessage, reply_id) if reply_id else None
    assert reply is not None
    assert (reply.direction, reply.send_status, reply.body) == (
        "outbound",
        "pending",
        "Um consultor vai te chamar já já.",
    )
    assert reply.meta["ai"]["action"] == "handoff"
    # a second failure report (a redelivered task) tells the lead nothing more: the talk is a person's now
    assert hand_over_after_failure(uow.factory(), talk.id, "again") is None


def test_an_opted_out_lead_is_not_told_of_a_handoff(repo: FakeRepository, uow: FakeUnitOfWork) -> None:
    talk = _agent_and_contact(repo, {}, opted_out=True)
    assert hand_over_after_failure(uow.factory(), talk.id, "LLM request failed") is None
    assert talk.needs_human is True
