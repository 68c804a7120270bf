"""`LuminaiHarness` and its pytest fixtures: the real container on a temporary SQLite file, no sleeps.

The fixtures come from `luminai_actors.testing.pytest_plugin` (tests/conftest.py's `pytest_plugins`, or
`-p luminai_actors.testing.pytest_plugin`). Waiting is `drain()`, `say_in_background()` and Events only.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.services.inbound import InboundOutcome
from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI, LuminaiHarness
from luminai_actors.testing import harness as harness_module
from luminai_actors.testing.harness import AdminCallFailed

WAIT = 10.0  # an upper bound for what takes milliseconds
QUESTION = "What do you need?"
FLOW = {"name": "Q", "steps": [{"id": "need", "question": QUESTION}]}


def add_agent(luminai: LuminaiHarness, instance: str = "acme", **kw: Any) -> str:
    org = luminai.admin.create_organization("Acme")
    flow = luminai.admin.create_tree_flow(org, FLOW)
    luminai.admin.create_agent(org, instance, tree_flow=flow, **kw)
    return org


@dataclass(frozen=True)
class Gate:
    entered: threading.Event  # set once a conversation actor is inside handle_inbound
    release: threading.Event  # lets every blocked actor go on


@pytest.fixture
def gate(luminai: LuminaiHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Conversation actors block in `handle_inbound` until `gate.release` is set (always set at the end)."""
    gate = Gate(threading.Event(), threading.Event())
    original: Callable[[MessageUpsert], InboundOutcome] = luminai.container.handle_inbound

    def blocked(event: MessageUpsert) -> InboundOutcome:
        gate.entered.set()
        if not gate.release.wait(WAIT):
            raise TimeoutError("the test never released the conversation actor")
        return original(event)

    monkeypatch.setattr(luminai.container, "handle_inbound", blocked)
    try:
        yield gate
    finally:
        gate.release.set()


def test_a_lead_message_is_answered_once_with_the_greeting(
    luminai: LuminaiHarness, fake_evolution: FakeEvolutionApi
) -> None:
    org = add_agent(luminai)

    response = luminai.say("acme", "Oi, quero agendar", push_name="Maria")
    luminai.drain()

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Webhook processed"}
    assert luminai.evolution is fake_evolution  # the fixture is the harness's fake
    assert luminai.replies("acme") == [f"Hi Maria! I'm SDR. {QUESTION}"]
    [sent] = fake_evolution.sent_messages()
    assert sent["number"] == "5511987654321"
    [talk] = luminai.talks(org)
    bodies = [(m["direction"], m["body"]) for m in luminai.messages(talk["id"])]
    assert bodies == [("inbound", "Oi, quero agendar"), ("outbound", f"Hi Maria! I'm SDR. {QUESTION}")]
    assert luminai.replies("another-instance") == []


def test_the_mailbox_lists_waiting_events_in_order_and_actors_report_its_depth(
    luminai: LuminaiHarness, gate: Gate
) -> None:
    org = add_agent(luminai)
    key = luminai.conversation_key("acme")

    first = luminai.say_in_background("acme", "first", message_id="M1")
    assert gate.entered.wait(WAIT)  # M1 is being handled, not queued
    second = luminai.say_in_background("acme", "second", message_id="M2")
    third = luminai.say_in_background("acme", "third", message_id="M3")

    waiting = [(event.message_id, event.content.text) for event in luminai.mailbox(key)]
    assert waiting == [("M2", "second"), ("M3", "third")]
    [actor] = luminai.actors()
    assert (actor["key"], actor["mailboxDepth"], actor["inFlight"], actor["handled"]) == (key, 2, 3, 0)
    assert not first.done()  # 200 only after the commit, which has not happened

    gate.release.set()
    assert [f.result(WAIT).status_code for f in (first, second, third)] == [200, 200, 200]
    luminai.drain()

    assert luminai.mailbox(key) == []
    [actor] = luminai.actors()
    assert (actor["mailboxDepth"], actor["inFlight"], actor["handled"]) == (0, 0, 3)
    [talk] = luminai.talks(org)
    inbound = [m["body"] for m in luminai.messages(talk["id"]) if m["direction"] == "inbound"]
    assert inbound == ["first", "second", "third"]
    assert luminai.replies("acme")[0] == f"Hi Lead! I'm SDR. {QUESTION}"


def test_queues_are_empty_after_drain(luminai: LuminaiHarness) -> None:
    add_agent(luminai)
    luminai.say("acme", "Oi")
    luminai.say("acme", "Oi", phone="+55 21 99876-5432")

    luminai.drain()

    assert luminai.queues() == {"ai": 0, "ai.DQ": 0, "ai.XQ": 0, "send": 0, "send.DQ": 0, "send.XQ": 0}
    assert len(luminai.replies("acme")) == 2
    assert {actor["key"] for actor in luminai.actors()} == {"acme|+5511987654321", "acme|+5521998765432"}


def test_the_openai_variant_writes_replies_through_the_fake_and_records_the_requests(
    luminai_openai: LuminaiHarness, fake_openai: FakeOpenAI
) -> None:
    add_agent(luminai_openai)

    luminai_openai.say("acme", "Oi, quero agendar")
    luminai_openai.drain()

    assert luminai_openai.openai is fake_openai
    # one call per turn: the values and an acknowledgement; the step's question goes out as written
    [request] = fake_openai.chat_requests()
    assert "ack" in request["response_format"]["json_schema"]["schema"]["properties"]
    assert request["messages"][-1] == {"role": "user", "content": "Oi, quero agendar"}
    [reply] = luminai_openai.replies("acme")
    assert reply.endswith(QUESTION)


def test_drain_raises_timeout_error_while_an_actor_never_finishes(
    luminai: LuminaiHarness, gate: Gate
) -> None:
    add_agent(luminai)
    pending = luminai.say_in_background("acme", "Oi")
    assert gate.entered.wait(WAIT)

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="conversation actors still busy"):
        luminai.drain(timeout=0.2)
    assert time.monotonic() - started < 2

    gate.release.set()
    assert pending.result(WAIT).status_code == 200
    luminai.drain()
    assert len(luminai.replies("acme")) == 1


def test_drain_raises_timeout_error_while_a_send_is_still_running(
    luminai: LuminaiHarness, fake_evolution: FakeEvolutionApi
) -> None:
    add_agent(luminai)
    fake_evolution.hang_next(1, 0.5)
    luminai.say("acme", "Oi")

    with pytest.raises(TimeoutError):
        luminai.drain(timeout=0.05)

    luminai.drain()
    assert len(luminai.replies("acme")) == 1


def test_the_agent_webhook_token_is_sent_unless_headers_are_explicit(luminai: LuminaiHarness) -> None:
    add_agent(luminai, token="s3cr3t")
    payload = luminai.message("acme", "Oi")

    assert luminai.post_webhook(payload, headers={}).status_code == 401
    assert luminai.post_webhook(payload).status_code == 200
    duplicate = luminai.post_webhook(payload, headers={"X-Webhook-Token": "s3cr3t"})
    assert duplicate.json()["duplicate"] is True


def test_a_lid_addressed_message_shares_the_phone_conversation(luminai: LuminaiHarness) -> None:
    add_agent(luminai)
    payload = luminai.message("acme", "Oi", lid="103899771998284")

    assert payload["data"]["key"]["remoteJid"] == "103899771998284@lid"
    assert payload["data"]["key"]["remoteJidAlt"] == "5511987654321@s.whatsapp.net"
    assert luminai.conversation_key("acme", lid="103899771998284") == luminai.conversation_key("acme")
    assert luminai.post_webhook(payload).status_code == 200
    luminai.drain()
    assert [fake["number"] for fake in luminai.evolution.sent_messages()] == ["5511987654321"]


def test_admin_helpers_raise_on_an_unexpected_answer(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    luminai.admin.create_agent(org, "acme")

    with pytest.raises(AdminCallFailed, match="409") as caught:
        luminai.admin.create_agent(org, "acme")
    assert caught.value.status_code == 409
    assert luminai.admin.get(f"/api/admin/organizations/{org}/contacts") == []


def running(fake: FakeEvolutionApi) -> bool:
    return fake.running


def test_close_stops_everything_and_removes_the_temporary_folder() -> None:
    harness = LuminaiHarness()
    with harness:
        folder = harness.temp_dir
        assert folder is not None
        assert (folder / "luminai.db").exists()
        assert running(harness.evolution)
        assert harness.container.worker is not None
    assert not folder.exists()
    assert not running(harness.evolution)
    with pytest.raises(RuntimeError, match="not started"):
        harness.drain()


def test_importing_the_testing_package_does_not_import_the_service() -> None:
    assert LuminaiHarness is harness_module.LuminaiHarness
    code = "import sys, luminai_actors.testing; print('luminai_actors.bootstrap' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
