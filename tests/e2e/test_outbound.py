"""Outbound in depth through the real worker on Redis against a fake Evolution API that behaves like v2:
retries with exact waits, non-retryable errors, a worker killed mid-send, order under retries, pacing,
a disconnected instance, typing delay, and the operator's connection and webhook actions.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI
from tests.e2e.conftest import ADMIN_TOKEN, ROOT, Admin, Db, Service, text_message, wait_until

pytestmark = pytest.mark.e2e

LEAD = "+5511999999999"
NOTHING_EXTRACTED = {"need": None, "budget": None, "optOut": False}  # the structured-output answer
INSTANCE = "sdr-agent-1"


def openai_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-e2e",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "LUMINAI_AI_MODEL": "fake-gpt",
        "LUMINAI_AI_ONE_CALL": "false",  # a second call writes each reply: the parts these tests split
    }


def outbound(db: Db) -> list[dict[str, Any]]:
    return db.rows("SELECT * FROM talk_message WHERE direction = 'outbound' ORDER BY created_at")


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_two_failures_then_success_takes_three_attempts_about_two_and_four_seconds_apart(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)
    evolution.fail_next(2, status=503)

    service.post_webhook(text_message(INSTANCE, LEAD, "Hello"))

    attempts = evolution.wait_for_requests(3, timeout=30, path_prefix="/message/sendText")
    [reply] = wait_until(lambda: [m for m in outbound(db) if m["send_status"] == "sent"], timeout=10)
    first, second = gaps([a.received_at for a in attempts])
    assert 1.8 <= first <= 3.5, (first, second)
    assert 3.8 <= second <= 5.5, (first, second)
    assert reply["metadata"]["whatsappAttempts"] == 3
    assert reply["metadata"]["whatsappSent"] is True
    assert len(evolution.sent_messages()) == 1
    admin.close()


@pytest.mark.parametrize("failure", ["not-on-whatsapp", "unknown-instance", "wrong-key"])
def test_non_retryable_errors_fail_after_exactly_one_attempt(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db, failure: str
) -> None:
    service = start_service({"LUMINAI_SEND_BACKOFF_SECONDS": "0.3,0.6"})
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)
    if failure == "not-on-whatsapp":
        evolution.mark_not_on_whatsapp(LEAD.lstrip("+"))
    elif failure == "unknown-instance":
        evolution.add_instance("someone-else", "k")
        evolution._instances.pop(INSTANCE)  # the instance was deleted on the Evolution server
    else:
        evolution.add_instance(INSTANCE, "rotated-key")

    service.post_webhook(text_message(INSTANCE, LEAD, "Hello"))

    [reply] = wait_until(lambda: [m for m in outbound(db) if m["send_status"] == "failed"], timeout=20)
    time.sleep(1.2)  # a wrong retry would have come within 0.3 s
    assert len(evolution.sendtext_attempts()) == 1
    assert reply["metadata"]["whatsappAttempts"] == 1
    expected = {"not-on-whatsapp": "not on WhatsApp", "unknown-instance": "404", "wrong-key": "401"}[failure]
    assert expected in reply["metadata"]["whatsappError"]
    admin.close()


@pytest.mark.parametrize("inline_send", ["true", "false"])
def test_a_worker_killed_mid_send_neither_sends_twice_nor_leaves_the_message_stuck(
    start_service: Callable[..., Service],
    evolution: FakeEvolutionApi,
    db: Db,
    tmp_path: Path,
    inline_send: str,
) -> None:
    # inline: the first attempt is made by the AI turn's thread, so the task killed mid-send is that turn.
    service = start_service({"LUMINAI_INLINE_SEND": inline_send, "LUMINAI_REDIS_HEARTBEAT_SECONDS": "5"})
    admin = Admin(service)
    _, agent = admin.setup_agent(evolution, INSTANCE, token="hook-secret")
    # Evolution posts send.message back to us, as a configured instance webhook does.
    configured = admin.post(
        f"/api/admin/agents/{agent}/whatsapp/webhook",
        {"url": service.url + "/api/webhooks/whatsapp/evolution"},
        expect=200,
    )
    assert configured["evolution"]["headers"] == {"X-Webhook-Token": "hook-secret"}
    evolution.hang_next(1, 3.0)
    worker = service.processes[1]

    lead = text_message(INSTANCE, LEAD, "Hello")
    with httpx.Client() as client:
        assert (
            client.post(
                service.url + "/api/webhooks/whatsapp/evolution",
                json=lead,
                headers={"X-Webhook-Token": "hook-secret"},
            ).status_code
            == 200
        )
    evolution.wait_for_requests(1, timeout=20, path_prefix="/message/sendText")
    os.kill(worker.pid, signal.SIGKILL)  # mid-send: Evolution holds the request for 3 s
    worker.wait(10)
    service.start_worker(tmp_path)

    # Evolution completes the send anyway and reports it (send.message): that settles our record.
    [reply] = wait_until(lambda: [m for m in outbound(db) if m["send_status"] == "sent"], timeout=20)
    assert reply["metadata"]["whatsappReconciledBy"] == "send.message"
    # The killed worker's task comes back from Redis after the heartbeat timeout (5 s here) and must find the
    # message settled (a send task) or its lead answered (the AI turn that sent inline); the recovery sweep
    # must find nothing to resend either.
    redelivered = ": nothing_pending" if inline_send == "true" else ": already_done"
    wait_until(lambda: redelivered in service.log_text(), timeout=60, interval=0.5)
    assert len(evolution.sent_messages()) == 1
    assert [m["send_status"] for m in outbound(db)] == ["sent"]
    admin.close()


def test_replies_of_one_talk_go_out_in_order_while_the_first_is_retried(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, openai_server: FakeOpenAI, db: Db
) -> None:
    openai_server.script(NOTHING_EXTRACTED, "First part.\n\nSecond part.\n\nWhat are you looking for?")
    service = start_service({**openai_env(openai_server), "LUMINAI_SEND_BACKOFF_SECONDS": "0.5,1"})
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE, metadata={"splitMessages": True})
    evolution.fail_next(2, status=500)

    service.post_webhook(text_message(INSTANCE, LEAD, "Tell me everything"))

    wait_until(lambda: len(evolution.sent_messages()) == 3, timeout=30)
    assert [m["text"] for m in evolution.sent_messages()] == [
        "First part.",
        "Second part.",
        "What are you looking for?",
    ]
    texts_attempted = [r.json["text"] for r in evolution.sendtext_attempts()]
    assert texts_attempted == ["First part."] * 3 + ["Second part.", "What are you looking for?"]
    parts = outbound(db)
    assert [m["metadata"]["part"] for m in parts] == [{"index": i, "of": 3} for i in (1, 2, 3)]
    admin.close()


def test_pacing_limits_sends_per_instance(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, openai_server: FakeOpenAI, db: Db
) -> None:
    openai_server.script(NOTHING_EXTRACTED, "One.\n\nTwo.\n\nThree.\n\nWhat are you looking for?")
    service = start_service({**openai_env(openai_server), "LUMINAI_SEND_RATE_PER_INSTANCE": "2"})
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE, metadata={"splitMessages": True})

    service.post_webhook(text_message(INSTANCE, LEAD, "Go"))

    sends = evolution.wait_for_requests(4, timeout=30, path_prefix="/message/sendText")
    assert [r.json["text"] for r in sends] == ["One.", "Two.", "Three.", "What are you looking for?"]
    assert all(gap >= 0.45 for gap in gaps([r.received_at for r in sends])), gaps(
        [r.received_at for r in sends]
    )
    admin.close()


def test_a_disconnected_instance_burns_no_attempts_and_sends_once_reconnected(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)
    close = {
        "event": "connection.update",
        "instance": INSTANCE,
        "data": {"state": "close", "statusReason": 401},
    }
    assert service.post_webhook(close).json()["status"] == "disconnected"

    service.post_webhook(text_message(INSTANCE, LEAD, "Hello"))
    wait_until(lambda: outbound(db), timeout=20)
    time.sleep(1.0)
    assert evolution.sendtext_attempts() == []
    assert outbound(db)[0]["send_attempts"] == 0

    reopen = {"event": "connection.update", "instance": INSTANCE, "data": {"state": "open"}}
    assert service.post_webhook(reopen).json()["status"] == "connected"
    evolution.wait_for_requests(1, timeout=20, path_prefix="/message/sendText")
    wait_until(lambda: outbound(db)[0]["send_status"] == "sent", timeout=10)
    admin.close()


def test_a_reply_waiting_too_long_for_its_instance_fails_with_that_reason(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service(
        {"LUMINAI_SEND_MAX_WAIT_SECONDS": "1", "LUMINAI_RECOVERY_INTERVAL_SECONDS": "0.5"}
    )
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)
    service.post_webhook({"event": "connection.update", "instance": INSTANCE, "data": {"state": "close"}})

    service.post_webhook(text_message(INSTANCE, LEAD, "Hello"))

    [reply] = wait_until(lambda: [m for m in outbound(db) if m["send_status"] == "failed"], timeout=20)
    assert "WhatsApp instance is disconnected" in reply["metadata"]["whatsappError"]
    assert reply["metadata"]["whatsappAttempts"] == 0
    assert evolution.sendtext_attempts() == []
    admin.close()


def test_typing_delay_is_sent_as_evolutions_delay(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE, metadata={"timePerCharMs": 10})

    service.post_webhook(text_message(INSTANCE, LEAD, "Hello"))

    [request] = evolution.wait_for_requests(1, timeout=20, path_prefix="/message/sendText")
    text = request.json["text"]
    assert request.json["delay"] == max(1000, min(20_000, len(text) * 10))
    admin.close()


def test_operator_actions_test_connection_and_configure_webhook(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service({"LUMINAI_PUBLIC_URL": "https://bot.example.com"})
    admin = Admin(service)
    _, agent = admin.setup_agent(evolution, INSTANCE, token="tok")

    evolution.set_state(INSTANCE, "connecting")
    result = admin.post(f"/api/admin/agents/{agent}/whatsapp/test-connection", {}, expect=200)
    assert (result["state"], result["status"]) == ("connecting", "connecting")
    assert db.one("SELECT whatsapp_status FROM agent")["whatsapp_status"] == "connecting"

    hook = admin.post(f"/api/admin/agents/{agent}/whatsapp/webhook", {}, expect=200)
    assert hook["url"] == "https://bot.example.com/api/webhooks/whatsapp/evolution"
    stored = evolution.webhook(INSTANCE)
    assert stored is not None
    assert stored["headers"] == {"X-Webhook-Token": "tok"}
    assert "SEND_MESSAGE" in stored["events"]
    assert "MESSAGES_UPSERT" in stored["events"]

    evolution.set_state(INSTANCE, "open")
    cli = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "whatsapp", "status", INSTANCE],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"status": "connected"' in cli.stdout
    assert db.one("SELECT whatsapp_status FROM agent")["whatsapp_status"] == "connected"

    actors = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "actors", "--url", service.url],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert actors.returncode == 0, actors.stderr
    assert "conversation actors:" in actors.stdout
    assert "queues: ai " in actors.stdout
    assert "maxConversationActors=2000" in actors.stdout

    evolution.stop()
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        down = client.post(f"/api/admin/agents/{agent}/whatsapp/test-connection")
    assert down.status_code == 502
    assert "Evolution API" in down.json()["error"]
    admin.close()
