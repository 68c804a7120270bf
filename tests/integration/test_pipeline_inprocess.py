"""The whole pipeline in one process: Starlette app + pykka actors + Dramatiq (in-memory broker and worker)
on a real PostgreSQL, with a local fake Evolution API; plus the admin API's contract and error answers.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from luminai_actors import bootstrap
from luminai_actors.actors import tasks
from luminai_actors.bootstrap import Container
from luminai_actors.config import Settings
from luminai_actors.errors import BrokerUnavailable
from luminai_actors.persistence.tables import TalkMessage
from luminai_actors.services import outbound as outbound_service
from luminai_actors.services.outbound import deliver_outbound
from luminai_actors.testing import FakeEvolutionApi
from luminai_actors.web.app import create_app

pytestmark = pytest.mark.integration

TOKEN = "test-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK = "/api/webhooks/whatsapp/evolution"
# Every agent these tests create has this webhook secret, and their clients send it with every request:
# webhooks without a secret are refused (test_webhook_secrets.py proves that).
WEBHOOK_SECRET = "whk-test-secret"
SIGNED = {"X-Webhook-Token": WEBHOOK_SECRET}


def settings_for(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        broker_url="memory://",
        admin_token=TOKEN,
        send_backoff_seconds=(0.2, 0.4),
        worker_poll_ms=20,
        recovery_interval_seconds=0.3,
        ai_debounce_seconds=0.0,
        send_rate_per_instance=0.0,
    )
    return base.with_overrides(**overrides) if overrides else base


@pytest.fixture
def running(clean_pg: str) -> Iterator[tuple[Container, TestClient]]:
    container = bootstrap.build(settings_for(clean_pg))
    container.start(recovery=False)
    with TestClient(create_app(container=container), headers=SIGNED) as client:
        yield container, client
    container.close()


def setup_agent(client: TestClient, evolution: FakeEvolutionApi, instance: str, api_key: str = "k1") -> str:
    evolution.add_instance(instance, "k1")
    org = client.post("/api/admin/organizations", json={"name": "Acme"}, headers=AUTH).json()["id"]
    flow = client.post(
        f"/api/admin/organizations/{org}/tree-flows",
        json={"name": "Q", "steps": [{"id": "need", "question": "What do you need?"}]},
        headers=AUTH,
    ).json()["id"]
    agent = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={
            "name": "SDR",
            "prompt": "Be brief.",
            "treeFlowId": flow,
            "whatsapp": {
                "instanceName": instance,
                "serverUrl": evolution.url,
                "apiKey": api_key,
                "active": True,
                "webhookToken": WEBHOOK_SECRET,
            },
        },
        headers=AUTH,
    )
    assert agent.status_code == 201, agent.text
    return str(org)


def webhook(instance: str, message_id: str | None = None, text: str = "Oi, quero agendar") -> dict[str, Any]:
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {
                "remoteJid": "5511987654321@s.whatsapp.net",
                "fromMe": False,
                "id": message_id or uuid.uuid4().hex.upper(),
            },
            "pushName": "Maria",
            "message": {"conversation": text},
            "messageTimestamp": 1761057639,
        },
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def outbound(container: Container) -> list[TalkMessage]:
    with container.session_factory() as session:
        return list(session.scalars(select(TalkMessage).where(TalkMessage.direction == "outbound")))


def test_message_flows_to_sendtext_and_ops_shows_the_actor(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi
) -> None:
    _, client = running
    setup_agent(client, evolution, "acme")
    response = client.post(WEBHOOK, json=webhook("acme"))

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Webhook processed"}
    [request] = evolution.wait_for_requests(1, path_prefix="/message/sendText")
    assert request.json == {"number": "5511987654321", "text": "Hi Maria! I'm SDR. What do you need?"}
    ops = client.get("/ops/actors", headers=AUTH).json()
    assert ops["conversations"]["live"] == 1
    [actor] = ops["conversations"]["actors"]
    assert actor["key"] == "acme|+5511987654321"
    assert actor["handled"] == 1
    assert actor["mailboxDepth"] == 0
    assert (ops["conversations"]["startedTotal"], ops["conversations"]["evictedTotal"]) == (1, 0)
    assert ops["concurrency"]["sendMaxAttempts"] == 3
    assert set(ops["queues"]) == {"ai", "ai.DQ", "ai.XQ", "send", "send.DQ", "send.XQ"}


@contextmanager
def running_with(database_url: str, **overrides: Any) -> Iterator[tuple[Container, TestClient]]:
    container = bootstrap.build(settings_for(database_url, **overrides))
    container.start(recovery=False)
    try:
        with TestClient(create_app(container=container), headers=SIGNED) as client:
            yield container, client
    finally:
        container.close()


@pytest.mark.parametrize("inline_send", [True, False])
def test_a_reply_takes_the_send_queue_only_when_inline_send_is_off(
    clean_pg: str, evolution: FakeEvolutionApi, monkeypatch: pytest.MonkeyPatch, inline_send: bool
) -> None:
    with running_with(clean_pg, inline_send=inline_send) as (container, client):
        queued: list[uuid.UUID] = []
        enqueue = container.dispatcher.request_send

        def spy(message_id: uuid.UUID, delay: float = 0.0) -> None:
            queued.append(message_id)
            enqueue(message_id, delay)

        monkeypatch.setattr(container.dispatcher, "request_send", spy)
        setup_agent(client, evolution, "acme")

        client.post(WEBHOOK, json=webhook("acme"))

        [reply] = wait_for(lambda: [m for m in outbound(container) if m.send_status == "sent"])
        assert queued == ([] if inline_send else [reply.id])
        assert reply.meta["whatsappAttempts"] == 1
        assert len(evolution.sent_messages()) == 1


def test_the_first_attempt_is_recorded_by_the_commit_that_stores_the_reply(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, client = running
    setup_agent(client, evolution, "acme")

    def no_separate_claim(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the turn's own transaction should have claimed the reply")

    monkeypatch.setattr(tasks, "deliver_outbound", no_separate_claim)

    client.post(WEBHOOK, json=webhook("acme"))

    [reply] = wait_for(lambda: [m for m in outbound(container) if m.send_status == "sent"])
    assert reply.send_attempts == 1
    assert reply.meta["whatsappAttempts"] == 1
    assert len(evolution.sent_messages()) == 1


def test_a_paced_reply_claimed_by_its_turn_gives_the_claim_back_and_is_sent_when_its_slot_comes(
    clean_pg: str, evolution: FakeEvolutionApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    unclaimed: list[uuid.UUID] = []
    unclaim = outbound_service._unclaim_fresh

    def spy(uow: Any, message_id: uuid.UUID) -> None:
        unclaimed.append(message_id)
        unclaim(uow, message_id)

    monkeypatch.setattr(outbound_service, "_unclaim_fresh", spy)
    with running_with(clean_pg, send_rate_per_instance=1.0) as (container, client):  # one send a second
        setup_agent(client, evolution, "acme")
        first = webhook("acme")
        second = webhook("acme", text="Oi")
        second["data"]["key"]["remoteJid"] = "5511912345678@s.whatsapp.net"  # another lead, same instance

        client.post(WEBHOOK, json=first)
        client.post(WEBHOOK, json=second)

        replies = wait_for(lambda: [m for m in outbound(container) if m.send_status == "sent"][1:] and
                           outbound(container))  # fmt: skip
        times = sorted(r.received_at for r in evolution.sendtext_attempts())
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95  # the pacer's interval, though both turns ran at once
    assert sorted(r.send_attempts for r in replies) == [1, 1]  # waiting for the slot burned no attempt
    assert sorted(r.meta["whatsappAttempts"] for r in replies) == [1, 1]
    assert len(unclaimed) == 1  # the second turn's claim, given back when the pacer said wait


def test_an_inline_send_that_breaks_leaves_the_reply_to_the_send_queue(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, client = running
    setup_agent(client, evolution, "acme")
    monkeypatch.setattr(tasks, "claim_fresh_reply", lambda *args, **kwargs: None)  # as on SQLite
    calls: list[uuid.UUID] = []

    def breaks_once(uow_factory: Any, client: Any, message_id: uuid.UUID, **options: Any) -> Any:
        calls.append(message_id)
        if len(calls) == 1:  # the inline attempt: before its claim, so nothing was recorded
            raise RuntimeError("the connection pool was closed under us")
        return deliver_outbound(uow_factory, client, message_id, **options)

    monkeypatch.setattr(tasks, "deliver_outbound", breaks_once)

    client.post(WEBHOOK, json=webhook("acme"))

    [reply] = wait_for(lambda: [m for m in outbound(container) if m.send_status == "sent"])
    assert calls == [reply.id, reply.id]  # inline, then the send_message task
    assert reply.meta["whatsappAttempts"] == 1
    assert len(evolution.sent_messages()) == 1


@pytest.mark.parametrize("inline_send", [True, False])
def test_two_failures_then_success_is_sent_on_the_third_attempt(
    clean_pg: str, evolution: FakeEvolutionApi, inline_send: bool
) -> None:
    with running_with(clean_pg, inline_send=inline_send) as (container, client):
        setup_agent(client, evolution, "acme")
        evolution.fail_next(2, status=500)

        client.post(WEBHOOK, json=webhook("acme"))

        [reply] = wait_for(lambda: [m for m in outbound(container) if m.send_status == "sent"])
        attempts = [a.received_at for a in evolution.sendtext_attempts()]
        ops = client.get("/ops/actors", headers=AUTH).json()
    first_wait, second_wait = (later - earlier for earlier, later in itertools.pairwise(attempts))
    assert first_wait >= 0.19, first_wait  # the configured 0.2 s
    assert second_wait >= 0.39, second_wait  # and 0.4 s
    assert reply.meta["whatsappAttempts"] == 3
    assert reply.meta["whatsappSent"] is True
    assert len(attempts) == 3
    assert len(evolution.sent_messages()) == 1
    assert ops["deliveries"]["sent"] == 1
    assert ops["deliveries"]["retrying"] == 0


def test_a_non_retryable_error_fails_after_exactly_one_attempt(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi
) -> None:
    container, client = running
    setup_agent(client, evolution, "acme", api_key="wrong-key")  # Evolution answers 401

    client.post(WEBHOOK, json=webhook("acme"))

    [reply] = wait_for(lambda: [m for m in outbound(container) if m.send_status == "failed"])
    time.sleep(0.6)  # longer than both backoff waits: a wrong retry would have happened by now
    assert len(evolution.sendtext_attempts()) == 1
    assert reply.meta["whatsappAttempts"] == 1
    assert "401" in reply.meta["whatsappError"]


def test_a_lost_enqueue_is_recovered_by_the_sweep(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, client = running
    setup_agent(client, evolution, "acme")

    def broker_down(talk_id: uuid.UUID, delay: float = 0.0) -> None:
        raise BrokerUnavailable("redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(container.dispatcher, "request_ai_turn", broker_down)
        response = client.post(WEBHOOK, json=webhook("acme"))
    assert response.status_code == 200  # stored: the broker's failure must not lose it
    assert outbound(container) == []

    time.sleep(container.settings.recovery_interval_seconds + 0.05)
    turns, _ = container.recover_once()

    assert turns == 1
    evolution.wait_for_requests(1, path_prefix="/message/sendText")


def test_database_down_answers_503_and_readyz_says_so(tmp_path: Any) -> None:
    container = bootstrap.build(settings_for("postgresql+psycopg://root@127.0.0.1:1/none"))
    container.start(recovery=False)
    try:
        with TestClient(create_app(container=container), headers=SIGNED) as client:
            response = client.post(WEBHOOK, json=webhook("acme"))
            assert response.status_code == 503
            assert response.headers["Retry-After"]
            assert response.json()["success"] is False
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] is False
            assert client.get("/healthz").status_code == 200
    finally:
        container.close()


def test_admin_api_contract_and_errors(
    running: tuple[Container, TestClient], evolution: FakeEvolutionApi
) -> None:
    _, client = running
    assert client.post("/api/admin/organizations", json={"name": "x"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/api/admin/organizations", json={"name": "x"}, headers=wrong).status_code == 401
    org = setup_agent(client, evolution, "acme")

    taken = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={
            "name": "Other",
            "whatsapp": {"instanceName": "acme", "serverUrl": evolution.url, "apiKey": "k"},
        },
        headers=AUTH,
    )
    assert taken.status_code == 409
    bad_url = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={"name": "Other", "whatsapp": {"instanceName": "acme-2", "serverUrl": "ftp://x", "apiKey": "k"}},
        headers=AUTH,
    )
    assert bad_url.status_code == 422
    assert bad_url.json()["field"] == "whatsapp.serverUrl"
    bad_flow = client.post(
        f"/api/admin/organizations/{org}/tree-flows",
        json={"name": "Q", "steps": [{"id": "a", "question": "?"}, {"id": "b"}]},
        headers=AUTH,
    )
    assert bad_flow.status_code == 422
    assert bad_flow.json()["field"] == "steps[1].question"
    missing = client.get(f"/api/admin/organizations/{uuid.uuid4()}/contacts", headers=AUTH)
    assert missing.status_code == 404
    assert client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json() == []


def test_admin_api_refuses_everything_without_a_configured_token(clean_pg: str) -> None:
    container = bootstrap.build(settings_for(clean_pg, admin_token=None))
    try:
        with TestClient(create_app(container=container), headers=SIGNED) as client:
            response = client.post("/api/admin/organizations", json={"name": "x"}, headers=AUTH)
            assert response.status_code == 401
            assert "LUMINAI_ADMIN_TOKEN" in response.json()["error"]
    finally:
        container.close()


def test_ops_counts_a_reply_waiting_for_its_retry(clean_pg: str, evolution: FakeEvolutionApi) -> None:
    container = bootstrap.build(settings_for(clean_pg, send_backoff_seconds=(30.0,)))
    container.start(recovery=False)
    try:
        with TestClient(create_app(container=container), headers=SIGNED) as client:
            setup_agent(client, evolution, "acme")
            evolution.fail_next(1, status=500)
            client.post(WEBHOOK, json=webhook("acme"))
            wait_for(
                lambda: [
                    m for m in outbound(container) if m.send_attempts == 1 and m.send_status == "pending"
                ]
            )

            ops = client.get("/ops/actors", headers=AUTH).json()

            # The delayed retry sits in a worker's memory, not in a queue: the database is what knows.
            assert ops["deliveries"]["retrying"] == 1
            assert ops["deliveries"]["sent"] == 0
    finally:
        container.close()
