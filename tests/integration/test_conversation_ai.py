"""The SDR follows its script: TreeFlow steps, extraction, debounce, opt-out, pause, LLM failures.

Through the real app on PostgreSQL with the in-process broker; the OpenAI brain talks to a local fake
OpenAI-compatible server through the real openai client, the offline brain needs nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.persistence.tables import Contact, Talk, TalkMessage
from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI
from tests.integration.test_pipeline_inprocess import AUTH, WEBHOOK, WEBHOOK_SECRET, wait_for

pytestmark = pytest.mark.integration

INSTANCE = "acme-sdr"
PN = "5511987654321@s.whatsapp.net"
SCRIPT = {
    "name": "Sales qualification",
    "objective": "Qualify inbound leads and book a meeting",
    "steps": [
        {
            "id": "contact",
            "name": "Contact details",
            "questions": ["Who am I talking to?"],
            "fields": [
                {"name": "name", "type": "text", "description": "full name"},
                {"name": "email", "type": "email", "question": "What is your email?"},
            ],
        },
        {
            "id": "size",
            "name": "Company size",
            "question": "How many people work at your company?",
            "fields": [{"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}],
            "transitions": [{"when": {"field": "company_size", "equals": "1-10"}, "outcome": "disqualified"}],
            "outcome": "qualified",
        },
    ],
    "outcomes": {
        "disqualified": {"message": "Thanks! We only serve larger teams for now."},
        "qualified": {"message": "Great fit! A colleague will call you."},
    },
}


def setup(client: TestClient, evolution: FakeEvolutionApi, script: dict[str, Any] | None = None) -> str:
    evolution.add_instance(INSTANCE, "k1")
    org = client.post("/api/admin/organizations", json={"name": "Acme"}, headers=AUTH).json()["id"]
    flow = client.post(f"/api/admin/organizations/{org}/tree-flows", json=script or SCRIPT, headers=AUTH)
    assert flow.status_code == 201, flow.text
    agent = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={
            "name": "Sofia",
            "prompt": "You are Sofia, a friendly SDR for Acme.",
            "treeFlowId": flow.json()["id"],
            "whatsapp": {
                "instanceName": INSTANCE,
                "serverUrl": evolution.url,
                "apiKey": "k1",
                "active": True,
                "webhookToken": WEBHOOK_SECRET,
            },
        },
        headers=AUTH,
    )
    assert agent.status_code == 201, agent.text
    return str(org)


def say(client: TestClient, text: str) -> None:
    key = {"remoteJid": PN, "fromMe": False, "id": uuid.uuid4().hex[:20].upper()}
    payload = {
        "event": "messages.upsert",
        "instance": INSTANCE,
        "data": {
            "key": key,
            "pushName": "Maria",
            "message": {"conversation": text},
            "messageTimestamp": 1761057639,
        },
    }
    assert client.post(WEBHOOK, json=payload).status_code == 200


def replies(evolution: FakeEvolutionApi, count: int, timeout: float = 15) -> list[str]:
    wait_for(lambda: len(evolution.sent_messages()) >= count, timeout=timeout)
    return [m["text"] for m in evolution.sent_messages()]


def talk(container: Container) -> Talk:
    with container.session_factory() as session:
        [found] = session.scalars(select(Talk).where(Talk.closed_at.is_(None)))
        return found


def outbound(container: Container) -> list[TalkMessage]:
    with container.session_factory() as session:
        query = (
            select(TalkMessage).where(TalkMessage.direction == "outbound").order_by(TalkMessage.created_at)
        )
        return list(session.scalars(query))


# --- the offline brain follows the script ------------------------------------------------------------------


def test_a_lead_who_answers_everything_in_one_message(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    setup(client, evolution)

    say(client, "Hi! My name is Maria Souza, email maria@acme.com, we are 51+ people")

    assert replies(evolution, 1) == ["Great fit! A colleague will call you."]
    flow = talk(container).talk_flow or {}
    assert (flow["status"], flow["outcome"]) == ("completed", "qualified")
    assert {k: v["value"] for k, v in flow["collected"].items()} == {
        "name": "Maria Souza",
        "email": "maria@acme.com",
        "company_size": "51+",
    }
    assert [h["stepId"] for h in flow["history"]] == ["contact", "size"]


def test_a_lead_who_answers_across_several_messages_and_fixes_an_invalid_email(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    org = setup(client, evolution)

    say(client, "Oi")
    assert replies(evolution, 1)[-1] == "Hi Maria! I'm Sofia. Who am I talking to?"
    say(client, "Maria Souza")
    assert replies(evolution, 2)[-1] == "What is your email?"
    say(client, "maria@acme")
    assert (
        replies(evolution, 3)[-1] == "Sorry, 'maria@acme' is not a valid email address. What is your email?"
    )
    say(client, "maria@acme.com.br")
    assert replies(evolution, 4)[-1] == "How many people work at your company?"
    say(client, "11-50")
    assert replies(evolution, 5)[-1] == "Great fit! A colleague will call you."

    shown = client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json()[0]["talkFlow"]
    assert shown["collected"]["email"]["value"] == "maria@acme.com.br"
    assert shown["invalid"] == {}
    assert shown["outcome"] == "qualified"
    ai = outbound(container)[-1].meta["ai"]
    # the closing is the script's own text, sent as written: no model wrote it
    assert (ai["brain"], ai["model"], ai["outcome"]) == ("offline", "verbatim", "qualified")


def test_a_conditional_transition_leads_to_its_outcome(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    setup(client, evolution)

    say(client, "my name is Ana, ana@tiny.io")
    assert replies(evolution, 1)[-1] == "Hi Maria! I'm Sofia. How many people work at your company?"
    say(client, "1-10")

    assert replies(evolution, 2)[-1] == "Thanks! We only serve larger teams for now."
    assert (talk(container).talk_flow or {})["outcome"] == "disqualified"


def test_a_handoff_outcome_pauses_the_bot_for_a_human(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    script = {"name": "Q", "steps": [{"id": "need", "question": "What do you need?", "outcome": "handoff"}]}
    setup(client, evolution, script)

    say(client, "Hello")
    replies(evolution, 1)
    say(client, "Talk to a person please")
    assert replies(evolution, 2)[-1] == "I'm passing you to a colleague who will continue from here."
    current = talk(container)
    assert (current.paused, current.needs_human) == (True, True)
    say(client, "hello?")
    time.sleep(0.5)
    assert len(evolution.sent_messages()) == 2  # paused: no more bot replies


def test_opt_out_is_confirmed_once_then_silence(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    setup(client, evolution)

    say(client, "Oi")
    replies(evolution, 1)
    say(client, "PARE")
    assert replies(evolution, 2)[-1] == "Entendido — você não receberá mais mensagens nossas. Até mais!"
    say(client, "ainda está aí?")
    wait_for(lambda: all(m.processed_at for m in _inbound(container)))

    time.sleep(0.3)
    assert len(evolution.sent_messages()) == 2
    with container.session_factory() as session:
        [contact] = session.scalars(select(Contact))
    assert contact.opted_out_at is not None


def _inbound(container: Container) -> list[TalkMessage]:
    with container.session_factory() as session:
        return list(session.scalars(select(TalkMessage).where(TalkMessage.direction == "inbound")))


def test_a_burst_of_three_messages_is_answered_once(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app(ai_debounce_seconds=1.0)
    setup(client, evolution)

    for text in ("Oi", "meu nome é Maria", "maria@acme.com"):
        say(client, text)

    assert replies(evolution, 1) == ["Hi Maria! I'm Sofia. How many people work at your company?"]
    time.sleep(1.5)
    assert len(evolution.sent_messages()) == 1
    [reply] = outbound(container)
    assert len(reply.meta["ai"]["answeredMessageIds"]) == 3


def test_a_paused_talk_gets_no_turn_until_resumed(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    setup(client, evolution)
    say(client, "Oi")
    replies(evolution, 1)
    talk_id = talk(container).id

    paused = client.post(f"/api/admin/talks/{talk_id}/pause", headers=AUTH)
    assert paused.json() == {"id": str(talk_id), "paused": True}
    say(client, "Maria Souza")
    time.sleep(0.5)
    assert len(evolution.sent_messages()) == 1

    resumed = client.post(f"/api/admin/talks/{talk_id}/resume", headers=AUTH)
    assert resumed.json()["answering"] is True
    assert replies(evolution, 2)[-1] == "What is your email?"
    assert client.post(f"/api/admin/talks/{uuid.uuid4()}/pause", headers=AUTH).status_code == 404


def test_an_idle_talk_expires_and_the_next_message_starts_a_fresh_one(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app(talk_expiry_hours=0.5 / 3600)  # half a second
    setup(client, evolution)
    say(client, "Oi")
    replies(evolution, 1)
    first = talk(container).id
    time.sleep(0.7)

    say(client, "Oi de novo")

    assert replies(evolution, 2)[-1] == "Hi Maria! I'm Sofia. Who am I talking to?"  # a new script run
    with container.session_factory() as session:
        talks = list(session.scalars(select(Talk).order_by(Talk.created_at)))
    assert [t.id == first for t in talks] == [True, False]
    assert talks[0].closed_at is not None
    assert (talks[0].talk_flow or {})["closedReason"] == "expired"


# --- the OpenAI brain through the real openai client ----------------------------------------------------


def openai_settings(server: FakeOpenAI) -> dict[str, Any]:
    """The OpenAI brain with a second call writing each reply (these tests are about that prompt)."""
    return {
        "openai_api_key": "sk-test",
        "openai_base_url": server.url + "/v1",
        "ai_model": "fake-gpt",
        "ai_one_call": False,
    }


def test_the_openai_brain_extracts_with_a_schema_and_replies_from_prompt_step_and_history(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    container, client = make_app(**openai_settings(openai_server))
    setup(client, evolution)
    openai_server.script(
        {"name": None, "email": None, "company_size": None, "optOut": False},
        "Olá! Com quem eu falo?",
        {"name": "Maria Souza", "email": "not-an-email", "company_size": None, "optOut": False},
        "Obrigada, Maria! Pode me passar um email válido?",
    )

    say(client, "Oi, tudo bem?")
    replies(evolution, 1)
    say(client, "Sou a Maria Souza, email not-an-email")
    assert replies(evolution, 2)[-1] == "Obrigada, Maria! Pode me passar um email válido?"

    _first_extraction, _first_reply, extraction, reply = openai_server.chat_requests()
    schema = extraction["response_format"]["json_schema"]
    assert schema["strict"] is True
    # only the current step's fields are asked for: a later step's are taken when the lead writes them
    assert set(schema["schema"]["properties"]) == {"name", "email", "optOut"}
    assert schema["schema"]["properties"]["email"]["type"] == ["string", "null"]
    assert extraction["messages"][-1]["content"] == "Sou a Maria Souza, email not-an-email"
    assert reply["model"] == "fake-gpt"
    system = reply["messages"][0]["content"]
    assert "You are Sofia, a friendly SDR for Acme." in system
    assert "Qualify inbound leads and book a meeting" in system
    assert "Current step: Contact details." in system
    assert "The lead's email was not valid" in system
    assert "What is your email?" in system
    assert '"name": "Maria Souza"' in system
    assert [m["role"] for m in reply["messages"][1:]] == ["user", "assistant", "user"]
    assert reply["messages"][-1]["content"] == "Sou a Maria Souza, email not-an-email"
    flow = talk(container).talk_flow or {}
    assert flow["collected"]["name"]["value"] == "Maria Souza"
    assert "email" in flow["invalid"]
    ai = outbound(container)[-1].meta["ai"]
    assert (ai["brain"], ai["model"]) == ("openai", "fake-gpt")
    assert ai["usage"]["totalTokens"] > 0
    assert ai["latencyMs"] >= 0


def test_an_llm_judged_opt_out_is_honoured(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    container, client = make_app(**openai_settings(openai_server))
    setup(client, evolution)
    openai_server.script({"name": None, "email": None, "company_size": None, "optOut": True})

    say(client, "Por favor, parem de me escrever, obrigado")

    assert replies(evolution, 1) == ["Entendido — você não receberá mais mensagens nossas. Até mais!"]
    with container.session_factory() as session:
        assert session.scalars(select(Contact)).one().opted_out_at is not None


def test_a_message_during_a_running_turn_is_answered_by_the_next_turn(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    container, client = make_app(**openai_settings(openai_server))
    setup(client, evolution)
    openai_server.hang_next(1, 1.5)  # the first extraction is slow: the turn is running when message 2 comes
    openai_server.script({}, "First answer: who am I talking to?", {}, "Second answer: your name?")

    say(client, "Oi")
    wait_for(lambda: len(openai_server.chat_requests()) >= 1)
    say(client, "Você está aí?")

    assert replies(evolution, 2) == ["First answer: who am I talking to?", "Second answer: your name?"]
    first, second = outbound(container)
    inbound_ids = [str(m.id) for m in sorted(_inbound(container), key=lambda m: m.created_at)]
    assert first.meta["ai"]["answeredMessageIds"] == inbound_ids[:1]
    assert second.meta["ai"]["answeredMessageIds"] == inbound_ids[1:]


def test_an_llm_failing_three_times_hands_the_talk_to_a_human_and_the_lead_is_told(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    container, client = make_app(**openai_settings(openai_server))
    setup(client, evolution)
    openai_server.fail_next(3, status=500)

    say(client, "Oi")

    wait_for(lambda: talk(container).needs_human, timeout=20)  # retries after ~2 s and ~4 s
    current = talk(container)
    assert current.paused is True
    assert "LLM request failed" in (current.talk_flow or {})["handoff"]["reason"]
    assert len(openai_server.chat_requests()) == 3
    # the lead is not left in silence: the handoff message, in their language, once
    assert replies(evolution, 1) == ["Vou passar você para um colega que continua daqui."]
    assert outbound(container)[-1].meta["ai"]["action"] == "handoff"
    assert _inbound(container)[0].processed_at is None  # kept for the human, not dropped
