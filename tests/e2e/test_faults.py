"""Fault tests: each takes a downstream away in the middle of a run and states what is lost — nothing.

The real `serve` and `worker` processes reach PostgreSQL and Redis through a TCP proxy that the test cuts
and restores (the servers themselves keep running for the rest of the suite); Evolution redelivery is
played by re-posting what was answered 503, as Evolution's retry loop does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from luminai_actors.testing import FakeEvolutionApi
from luminai_actors.testing.tcp_proxy import TcpProxy
from tests.e2e.conftest import WEBHOOK_SECRET, Admin, Db, Service, text_message, wait_until

SIGNED = {"X-Webhook-Token": WEBHOOK_SECRET}

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

INSTANCE = "sdr-agent-1"


def lead(index: int) -> str:
    return f"+55119{index:08d}"


@pytest.fixture
def pg_proxy(clean_pg: str) -> Iterator[tuple[TcpProxy, str]]:
    url = make_url(clean_pg)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        yield proxy, redis_url.replace(":6379", f":{proxy.port}")


def deliver_until_accepted(
    service: Service, payloads: list[dict[str, Any]], *, timeout: float = 60
) -> list[int]:
    """Post every payload; re-post the ones answered 5xx/429 (Evolution's retry loop) until all are 200."""
    seen: list[int] = []
    waiting = list(payloads)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=service.url, timeout=30, headers=SIGNED) as client:
        while waiting and time.monotonic() < deadline:
            retry = []
            for payload in waiting:
                try:
                    status = client.post("/api/webhooks/whatsapp/evolution", json=payload).status_code
                except httpx.HTTPError:
                    status = 0
                seen.append(status)
                if status != 200:
                    retry.append(payload)
            waiting = retry
            if waiting:
                time.sleep(0.5)
    assert not waiting, f"{len(waiting)} webhooks never accepted"
    return seen


def test_postgresql_down_for_ten_seconds_answers_503_and_loses_nothing(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db, pg_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, proxied_url = pg_proxy
    service = start_service({"LUMINAI_DATABASE_URL": proxied_url, "LUMINAI_RECOVERY_INTERVAL_SECONDS": "1"})
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)
    before = [text_message(INSTANCE, lead(i), f"before {i}") for i in range(5)]
    during = [text_message(INSTANCE, lead(i), f"during {i}") for i in range(5)]
    assert set(deliver_until_accepted(service, before)) == {200}

    proxy.cut()
    started = time.monotonic()
    with httpx.Client(base_url=service.url, timeout=30, headers=SIGNED) as client:
        statuses = [client.post("/api/webhooks/whatsapp/evolution", json=p).status_code for p in during]
        ready = client.get("/readyz")
    assert set(statuses) == {503}, statuses  # never 200 for a message that was not stored
    assert ready.status_code == 503
    time.sleep(max(0.0, 10 - (time.monotonic() - started)))
    proxy.restore()

    deliver_until_accepted(service, during)  # Evolution delivers the 503'd webhooks again
    deliver_until_accepted(service, before)  # and a duplicate of what was already stored changes nothing
    bodies = sorted(r["body"] for r in db.rows("SELECT body FROM talk_message WHERE direction = 'inbound'"))
    assert bodies == sorted([f"before {i}" for i in range(5)] + [f"during {i}" for i in range(5)])
    # Every lead is answered once the database is back.
    wait_until(
        lambda: len({m["_instance"] + m["number"] for m in evolution.sent_messages()}) == 5, timeout=30
    )
    admin.close()


def test_redis_down_still_stores_inbound_and_answers_every_lead_after_recovery(
    start_service: Callable[..., Service],
    evolution: FakeEvolutionApi,
    db: Db,
    redis_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, proxied_url = redis_proxy
    service = start_service({"LUMINAI_BROKER_URL": proxied_url, "LUMINAI_RECOVERY_INTERVAL_SECONDS": "1"})
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE)

    proxy.cut()
    payloads = [text_message(INSTANCE, lead(i), f"hello {i}") for i in range(6)]
    with httpx.Client(base_url=service.url, timeout=30, headers=SIGNED) as client:
        statuses = [client.post("/api/webhooks/whatsapp/evolution", json=p).status_code for p in payloads]
    assert statuses == [200] * 6  # stored: Redis is not needed to accept a message
    assert len(db.rows("SELECT id FROM talk_message WHERE direction = 'inbound'")) == 6
    time.sleep(3)
    assert evolution.sent_messages() == []
    proxy.restore()

    # The recovery sweep finds the turns that were never enqueued; the workers reconnect and run them.
    wait_until(lambda: len(evolution.sent_messages()) == 6, timeout=60, interval=0.2)
    answered = {m["number"] for m in evolution.sent_messages()}
    assert answered == {lead(i).lstrip("+") for i in range(6)}
    assert db.rows("SELECT id FROM talk_message WHERE direction = 'inbound' AND processed_at IS NULL") == []
    admin.close()


MESSAGES, LEADS = 400, 40  # each delivered 10 times, 48 at once: 4,000 webhooks (about 20 s on 2 cores)


def test_a_duplicate_storm_stores_each_message_once_and_answers_each_once(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service(
        {
            "LUMINAI_RATE_LIMIT_PER_INSTANCE": "0",
            "LUMINAI_RATE_LIMIT_PER_IP": "0",
            "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
        }
    )
    admin = Admin(service)
    # A step the storm's words never answer: every talk stays open, so every message is the bot's to answer
    # (a lead writing after the closing is handed to a human instead).
    email = {
        "id": "email",
        "fields": [{"name": "email", "type": "email", "question": "What is your e-mail?"}],
    }
    admin.setup_agent(evolution, INSTANCE, steps=[email])
    messages = [
        text_message(INSTANCE, lead(i % LEADS), f"message {i}", message_id=f"STORM{i:05d}")
        for i in range(MESSAGES)
    ]
    deliveries = [payload for payload in messages for _ in range(10)]

    async def storm() -> list[int]:
        limit = asyncio.Semaphore(48)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, headers=SIGNED) as client:

            async def post(payload: dict[str, Any]) -> int:
                async with limit:
                    response = await client.post("/api/webhooks/whatsapp/evolution", json=payload)
                    return response.status_code

            return await asyncio.gather(*(post(p) for p in deliveries))

    statuses = asyncio.run(storm())
    retried = [m for m, s in zip(deliveries, statuses, strict=True) if s != 200]
    if retried:  # back-pressure (503/429) is allowed: Evolution would deliver those again
        deliver_until_accepted(service, retried)

    inbound = db.rows("SELECT id, whatsapp_message_id FROM talk_message WHERE direction = 'inbound'")
    assert len(inbound) == MESSAGES
    assert len({row["whatsapp_message_id"] for row in inbound}) == MESSAGES
    wait_until(
        lambda: (
            not db.rows("SELECT id FROM talk_message WHERE direction = 'inbound' AND processed_at IS NULL")
        ),
        timeout=120,
        interval=0.5,
    )
    replies = db.rows("SELECT metadata FROM talk_message WHERE direction = 'outbound'")
    answered = [m for reply in replies for m in reply["metadata"]["ai"]["answeredMessageIds"]]
    assert sorted(answered) == sorted(
        str(row["id"]) for row in inbound
    )  # one turn per message set, no repeats
    assert len(db.rows("SELECT id FROM contact")) == LEADS
    assert len(db.rows("SELECT id FROM talk")) == LEADS
    admin.close()


def test_a_webhook_without_its_secret_is_401_and_writes_nothing(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, INSTANCE, token="s3cret")
    message = text_message(INSTANCE, lead(1), "hi", message_id=uuid.uuid4().hex)
    assert service.post_webhook(message, secret=None).status_code == 401
    assert service.post_webhook(message).status_code == 401  # another agent's secret
    assert db.rows("SELECT id FROM talk_message") == []
    admin.close()
