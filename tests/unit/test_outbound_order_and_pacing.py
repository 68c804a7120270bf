"""deliver_outbound's order, waiting and pacing rules, and the pacers and reply splitting they rest on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.tables import TalkMessage
from luminai_actors.services.outbound import deliver_outbound
from luminai_actors.services.pacing import MemoryPacer
from luminai_actors.services.reply_parts import split_reply, typing_delay_ms
from luminai_actors.testing import FakeEvolutionApi
from tests.unit.test_outbound_service import INSTANCE, T0, Outbox


@pytest.fixture
def evo() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi() as fake:
        fake.add_instance(INSTANCE, "ACME-KEY")
        yield fake


@pytest.fixture
def client() -> Iterator[EvolutionClient]:
    # The fake Evolution API listens on loopback: allowed as an operator would allow a LAN host.
    evolution = EvolutionClient(timeout=5.0, policy=AddressPolicy.from_entries(["127.0.0.1"]))
    yield evolution
    evolution.close()


def second_reply(outbox: Outbox, text: str = "And your email?") -> TalkMessage:
    message = TalkMessage(
        organization_id=outbox.talk.organization_id,
        talk_id=outbox.talk.id,
        agent_id=outbox.agent.id,
        from_agent_id=outbox.agent.id,
        direction="outbound",
        channel="whatsapp",
        body=text,
        send_status="pending",
        created_at=T0 + timedelta(seconds=1),
    )
    outbox.repo.add(message)
    return message


def deliver(outbox: Outbox, client: EvolutionClient, message: TalkMessage) -> str:
    at = T0 + timedelta(seconds=2)
    return deliver_outbound(outbox.uow.factory(), client, message.id, max_attempts=3, now=lambda: at).status


def test_a_later_reply_waits_for_an_earlier_unsettled_one_which_hands_over_when_settled(
    evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox = Outbox(evo.url)
    later = second_reply(outbox)

    assert deliver(outbox, client, later) == "blocked"
    assert evo.sendtext_attempts() == []

    first = deliver_outbound(outbox.uow.factory(), client, outbox.message.id, max_attempts=3, now=lambda: T0)
    assert first.status == "sent"
    assert first.next_message_id == later.id
    assert deliver(outbox, client, later) == "sent"
    assert [r.json["text"] for r in evo.sendtext_attempts()] == [outbox.message.body, later.body]


def test_a_failed_earlier_reply_no_longer_blocks(evo: FakeEvolutionApi, client: EvolutionClient) -> None:
    outbox = Outbox(evo.url)
    later = second_reply(outbox)
    outbox.message.send_status = "failed"

    assert deliver(outbox, client, later) == "sent"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"whatsapp_status": "disconnected"}, "WhatsApp instance is disconnected"),
        ({"whatsapp_status": "refused"}, "WhatsApp instance is refused"),
        ({"active": False}, "agent is inactive"),
    ],
)
def test_an_unavailable_agent_burns_no_attempt_then_gives_up_after_the_max_wait(
    evo: FakeEvolutionApi, client: EvolutionClient, change: dict[str, object], reason: str
) -> None:
    outbox = Outbox(evo.url)
    for name, value in change.items():
        setattr(outbox.agent, name, value)
    waiting = deliver_outbound(
        outbox.uow.factory(), client, outbox.message.id, max_attempts=3, max_wait_seconds=60, now=lambda: T0
    )
    assert (waiting.status, waiting.error, outbox.message.send_attempts) == ("waiting", reason, 0)

    late = deliver_outbound(
        outbox.uow.factory(),
        client,
        outbox.message.id,
        max_attempts=3,
        max_wait_seconds=60,
        now=lambda: outbox.message.created_at + timedelta(seconds=61),
    )
    assert late.status == "failed"
    assert reason in outbox.message.meta["whatsappError"]
    assert outbox.message.meta["whatsappAttempts"] == 0
    assert evo.sendtext_attempts() == []


def test_a_paced_instance_defers_without_spending_an_attempt(
    evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    outbox = Outbox(evo.url)
    clock = [100.0]
    pacer = MemoryPacer(rate=2, clock=lambda: clock[0])
    assert pacer.try_acquire(INSTANCE) == 0.0  # another send just took the slot

    paced = deliver_outbound(
        outbox.uow.factory(), client, outbox.message.id, max_attempts=3, pacer=pacer, now=lambda: T0
    )
    assert paced.status == "paced"
    assert paced.delay == pytest.approx(0.5)
    assert outbox.message.send_attempts == 0
    clock[0] += 0.5
    sent = deliver_outbound(
        outbox.uow.factory(), client, outbox.message.id, max_attempts=3, pacer=pacer, now=lambda: T0
    )
    assert sent.status == "sent"


def test_memory_pacer_spaces_slots_per_instance() -> None:
    clock = [0.0]
    pacer = MemoryPacer(rate=4, clock=lambda: clock[0])
    assert pacer.try_acquire("a") == 0.0
    assert pacer.try_acquire("a") == pytest.approx(0.25)
    assert pacer.try_acquire("b") == 0.0  # instances are independent
    clock[0] = 0.25
    assert pacer.try_acquire("a") == 0.0


def test_split_reply_and_typing_delay() -> None:
    assert split_reply("Hi!\n\nWhat is your name?\n \nAnd email?") == [
        "Hi!",
        "What is your name?",
        "And email?",
    ]
    assert split_reply("one paragraph\nwith two lines") == ["one paragraph\nwith two lines"]
    assert typing_delay_ms("hi", 50) == 1000
    assert typing_delay_ms("x" * 100, 50) == 5000
    assert typing_delay_ms("x" * 10_000, 50) == 20_000
