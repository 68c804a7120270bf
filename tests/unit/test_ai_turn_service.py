"""run_ai_turn on the in-memory unit of work: one reply per batch of pending messages, leases, TalkFlow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from luminai_actors.ai.brain import BrainReply, HistoryLine, OfflineBrain, TurnContext
from luminai_actors.domain.treeflow import validate_definition
from luminai_actors.errors import BrainError
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.tables import Agent, Organization, Talk, TalkMessage, TreeFlow, User
from luminai_actors.services.ai_turn import TurnOutcome, run_ai_turn
from luminai_actors.services.inbound import record_inbound
from luminai_actors.testing.fake_brain import FakeBrain
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork

T0 = datetime(2025, 10, 21, 14, 0, tzinfo=UTC)
INSTANCE = "acme-support"
FLOW = validate_definition(
    {
        "name": "Qualify",
        "objective": "Find out who the lead is and what they need",
        "steps": [
            {"id": "name", "name": "Name", "objective": "Learn the name", "question": "What is your name?"},
            {"id": "need", "question": "What do you need?"},
        ],
        "closing": "Thanks! Talk soon.",
    }
)


class World:
    """An organization with an agent on `INSTANCE`; `inbound()` records a lead message via the service."""

    def __init__(self) -> None:
        self.repo = FakeRepository(clock=lambda: T0)
        self.uow = FakeUnitOfWork(self.repo)
        org = Organization(name="Acme")
        self.repo.add(org)
        owner = User(organization_id=org.id, name="Owner")
        flow = TreeFlow(organization_id=org.id, name="Qualify", definition=FLOW)
        self.repo.add(owner)
        self.repo.add(flow)
        self.agent = Agent(
            organization_id=org.id,
            tree_flow_id=flow.id,
            user_id=owner.id,
            name="Sofia",
            prompt="You are Sofia, a friendly SDR for Acme.",
            whatsapp_instance_name=INSTANCE,
            whatsapp_active=True,
        )
        self.repo.add(self.agent)
        self._seq = 0

    def inbound(self, text: str, at: datetime = T0) -> uuid.UUID:
        self._seq += 1
        payload: dict[str, Any] = {
            "event": "messages.upsert",
            "instance": INSTANCE,
            "data": {
                "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": f"M{self._seq}"},
                "pushName": "Maria Souza",
                "message": {"conversation": text},
                "messageType": "conversation",
                "messageTimestamp": int(at.timestamp()),
            },
        }
        event = parse_webhook(payload)
        assert isinstance(event, MessageUpsert)
        outcome = record_inbound(self.uow.factory(), event, now=lambda: at)
        assert outcome.status == "stored"
        assert outcome.talk_id is not None
        return outcome.talk_id

    def turn(self, brain: Any, talk_id: uuid.UUID, at: datetime = T0) -> TurnOutcome:
        return run_ai_turn(self.uow.factory(), brain, talk_id, lease_seconds=120, now=lambda: at)

    def talk(self, talk_id: uuid.UUID) -> Talk:
        talk = self.repo.get(Talk, talk_id)
        assert talk is not None
        return talk

    def messages(self, direction: str) -> list[TalkMessage]:
        return [m for m in self.repo.rows(TalkMessage) if m.direction == direction]


@pytest.fixture
def world() -> World:
    return World()


def test_first_turn_greets_and_asks_the_first_question(world: World) -> None:
    talk_id = world.inbound("Oi")

    outcome = world.turn(OfflineBrain(), talk_id, T0 + timedelta(seconds=2))

    [reply] = world.messages("outbound")
    assert (outcome.status, outcome.reply_message_id, outcome.more_pending) == ("replied", reply.id, False)
    assert reply.body == "Hi Maria! I'm Sofia. What is your name?"
    [inbound] = world.messages("inbound")
    assert inbound.processed_at == T0 + timedelta(seconds=2)
    talk = world.talk(talk_id)
    assert talk.talk_flow is not None
    assert (talk.talk_flow["currentStepId"], talk.talk_flow["askedField"]) == ("name", "name")
    assert (talk.ai_lease_until, talk.date_last_message) == (None, T0 + timedelta(seconds=2))


def test_the_reply_is_a_pending_whatsapp_outbound_with_ai_metadata(world: World) -> None:
    talk_id = world.inbound("Oi")
    [inbound] = world.messages("inbound")

    world.turn(FakeBrain(["Olá!"], model="gpt-test", latency_ms=321.0), talk_id)

    [reply] = world.messages("outbound")
    assert (reply.talk_id, reply.agent_id, reply.from_agent_id) == (talk_id, world.agent.id, world.agent.id)
    assert (reply.organization_id, reply.from_contact_id) == (world.agent.organization_id, None)
    assert (reply.direction, reply.channel, reply.message_type, reply.body) == (
        "outbound",
        "whatsapp",
        "text",
        "Olá!",
    )
    assert (reply.send_status, reply.send_attempts, reply.processed_at) == ("pending", 0, None)
    ai = reply.meta["ai"]
    assert (ai["brain"], ai["model"], ai["action"], ai["stepId"], ai["askedField"]) == (
        "fake",
        "gpt-test",
        "ask",
        "name",
        "name",
    )
    # Extraction (3 prompt tokens, 1 ms) and the reply (10 + 5 tokens, 321 ms) both count.
    assert ai["usage"] == {"prompt_tokens": 13, "completion_tokens": 5}
    assert ai["latencyMs"] == 322.0
    assert ai["answeredMessageIds"] == [str(inbound.id)]


def test_the_next_inbound_answers_the_step_and_asks_the_next(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.turn(OfflineBrain(), talk_id)
    world.inbound("Maria Souza", T0 + timedelta(minutes=1))

    outcome = world.turn(OfflineBrain(), talk_id, T0 + timedelta(minutes=1, seconds=3))

    assert outcome.status == "replied"
    assert [m.body for m in world.messages("outbound")][-1] == "What do you need?"
    flow = world.talk(talk_id).talk_flow
    assert flow is not None
    assert flow["currentStepId"] == "need"
    assert flow["collected"]["name"]["value"] == "Maria Souza"
    assert all(m.processed_at is not None for m in world.messages("inbound"))


def test_pending_messages_get_one_reply_and_one_answer(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.turn(OfflineBrain(), talk_id)
    ids = []
    for second, text in enumerate(["Maria", "Souza", "from Acme"]):
        world.inbound(text, T0 + timedelta(minutes=1, seconds=second))
        ids.append(world.messages("inbound")[-1].id)

    outcome = world.turn(OfflineBrain(), talk_id, T0 + timedelta(minutes=2))

    assert outcome.status == "replied"
    assert len(world.messages("outbound")) == 2  # the greeting and this one reply
    assert {m.processed_at for m in world.messages("inbound")[1:]} == {T0 + timedelta(minutes=2)}
    flow = world.talk(talk_id).talk_flow
    assert flow is not None
    assert list(flow["collected"]) == ["name"]
    assert flow["collected"]["name"]["value"] == "Maria\nSouza\nfrom Acme"
    assert flow["collected"]["name"]["messageIds"] == [str(i) for i in ids]


def test_nothing_pending_means_no_reply(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.turn(OfflineBrain(), talk_id)
    brain = FakeBrain()

    outcome = world.turn(brain, talk_id)

    assert outcome == TurnOutcome("nothing_pending")
    assert (len(world.messages("outbound")), brain.contexts) == (1, [])


def test_paused_talk_gets_no_turn(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.talk(talk_id).paused = True
    brain = FakeBrain()

    assert world.turn(brain, talk_id).status == "paused"
    assert (world.messages("outbound"), brain.contexts) == ([], [])
    assert world.messages("inbound")[0].processed_at is None


def test_claimed_talk_is_busy(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.talk(talk_id).ai_lease_until = T0 + timedelta(seconds=30)
    brain = FakeBrain()

    assert world.turn(brain, talk_id).status == "busy"
    assert (world.messages("outbound"), brain.contexts) == ([], [])
    assert world.talk(talk_id).ai_lease_until == T0 + timedelta(seconds=30)  # still the other worker's

    later = world.turn(brain, talk_id, T0 + timedelta(seconds=31))  # the lease has expired
    assert later.status == "replied"


def test_missing_talk(world: World) -> None:
    assert world.turn(FakeBrain(), uuid.uuid4()).status == "missing"


def test_talk_whose_agent_is_gone_is_missing_and_keeps_no_lease(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.talk(talk_id).agent_id = uuid.uuid4()
    brain = FakeBrain()

    assert world.turn(brain, talk_id).status == "missing"
    assert world.talk(talk_id).ai_lease_until is None  # the claim was rolled back with the transaction
    assert (world.messages("outbound"), brain.contexts) == ([], [])


def test_brain_error_releases_the_lease_and_is_raised(world: World) -> None:
    talk_id = world.inbound("Oi")
    brain = FakeBrain(fail_times=1)

    with pytest.raises(BrainError):
        world.turn(brain, talk_id)

    assert world.talk(talk_id).ai_lease_until is None
    assert world.messages("outbound") == []
    assert world.messages("inbound")[0].processed_at is None
    flow = world.talk(talk_id).talk_flow
    assert flow is not None
    assert flow["askedField"] is None  # nothing of the failed turn was kept

    assert world.turn(brain, talk_id).status == "replied"  # at once, no lease to wait for
    assert len(brain.extraction_requests) == 2  # the failure hit the first extraction
    assert len(brain.contexts) == 1


def test_context_carries_prompt_step_question_and_history(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.turn(OfflineBrain(), talk_id)
    world.inbound("Maria", T0 + timedelta(minutes=1))
    world.inbound("Souza", T0 + timedelta(minutes=1, seconds=1))
    brain = FakeBrain()

    world.turn(brain, talk_id, T0 + timedelta(minutes=2))

    [context] = brain.contexts
    assert isinstance(context, TurnContext)
    assert (context.agent_name, context.agent_prompt) == ("Sofia", "You are Sofia, a friendly SDR for Acme.")
    assert (context.flow_name, context.flow_objective, context.closing) == (
        "Qualify",
        "Find out who the lead is and what they need",
        None,  # the closing line is only given when the script closes
    )
    assert (context.action, context.step_id, context.question) == ("ask", "need", "What do you need?")
    assert context.answers["name"]["value"] == "Maria\nSouza"
    assert context.new_messages == ["Maria", "Souza"]
    assert (context.lead_first_name, context.first_contact) == ("Maria", False)
    assert context.history == [
        HistoryLine("lead", "Oi"),
        HistoryLine("agent", "Hi Maria! I'm Sofia. What is your name?"),
        HistoryLine("lead", "Maria"),
        HistoryLine("lead", "Souza"),
    ]


def test_first_context_is_first_contact_on_step_one(world: World) -> None:
    talk_id = world.inbound("Oi")
    brain = FakeBrain()

    world.turn(brain, talk_id)

    [context] = brain.contexts
    assert (context.first_contact, context.step_id, context.step_name, context.step_objective) == (
        True,
        "name",
        "Name",
        "Learn the name",
    )


def test_last_answer_gets_the_closing(world: World) -> None:
    talk_id = world.inbound("Oi")
    world.turn(OfflineBrain(), talk_id)
    world.inbound("Maria", T0 + timedelta(minutes=1))
    world.turn(OfflineBrain(), talk_id, T0 + timedelta(minutes=1))
    world.inbound("A website", T0 + timedelta(minutes=2))

    world.turn(OfflineBrain(), talk_id, T0 + timedelta(minutes=2))

    assert world.messages("outbound")[-1].body == "Thanks! Talk soon."
    flow = world.talk(talk_id).talk_flow
    assert flow is not None
    assert (flow["status"], flow["outcome"]) == ("completed", "completed")


class InterruptedBrain(FakeBrain):
    """While it thinks, something else happens to the talk (`during` runs inside compose)."""

    def __init__(self, during: Any) -> None:
        super().__init__()
        self.during = during

    def compose(self, context: TurnContext) -> BrainReply:
        self.during()
        return super().compose(context)


def test_message_arriving_during_the_turn_stays_pending_for_the_next(world: World) -> None:
    talk_id = world.inbound("Oi")
    brain = InterruptedBrain(lambda: world.inbound("are you there?", T0 + timedelta(seconds=1)))

    outcome = world.turn(brain, talk_id, T0 + timedelta(seconds=2))

    assert (outcome.status, outcome.more_pending) == ("replied", True)
    first, late = world.messages("inbound")
    assert (first.processed_at, late.processed_at) == (T0 + timedelta(seconds=2), None)
    assert brain.contexts[0].new_messages == ["Oi"]


def test_talk_paused_during_the_turn_gets_no_reply(world: World) -> None:
    talk_id = world.inbound("Oi")

    def pause() -> None:
        world.talk(talk_id).paused = True

    outcome = world.turn(InterruptedBrain(pause), talk_id)

    assert outcome.status == "paused"
    assert world.messages("outbound") == []
    assert world.talk(talk_id).ai_lease_until is None


def test_on_reply_gets_the_committed_reply_before_the_turn_looks_for_more(world: World) -> None:
    talk_id = world.inbound("Oi")
    seen: list[tuple[uuid.UUID, list[str]]] = []

    def on_reply(reply_id: uuid.UUID) -> None:  # what the worker does: enqueue the send at once
        seen.append((reply_id, [m.body or "" for m in world.messages("outbound")]))

    outcome = run_ai_turn(
        world.uow.factory(), OfflineBrain(), talk_id, now=lambda: T0 + timedelta(seconds=2), on_reply=on_reply
    )

    [reply] = world.messages("outbound")
    assert seen == [(reply.id, [reply.body])]  # called once, with the reply already stored
    assert outcome.reply_message_id == reply.id
    silent = run_ai_turn(world.uow.factory(), OfflineBrain(), talk_id, on_reply=on_reply)
    assert silent.status == "nothing_pending"
    assert len(seen) == 1  # no reply, no call
