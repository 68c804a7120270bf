"""Every Evolution webhook the service handles, through the real app on PostgreSQL (in-process broker).

Payloads follow `shared/reference/evolution-api.md` §2-§3: both event spellings and byEvents sub-paths,
every message shape, receipts out of order, connection states, business-side messages, LID addressing,
authentication, size and rate limits, hostile strings.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.persistence.tables import Agent, Contact, Talk, TalkMessage
from luminai_actors.testing import FakeEvolutionApi
from luminai_actors.web.auth import sign_jwt_hs256
from tests.integration.test_pipeline_inprocess import AUTH, WEBHOOK, WEBHOOK_SECRET, wait_for

pytestmark = pytest.mark.integration

INSTANCE = "acme-support"
PN = "5511987654321@s.whatsapp.net"
LID = "103899771998284@lid"


def add_agent(
    client: TestClient,
    evolution: FakeEvolutionApi,
    *,
    instance: str = INSTANCE,
    token: str = WEBHOOK_SECRET,
    metadata: dict[str, Any] | None = None,
    org: str | None = None,
) -> str:
    evolution.add_instance(instance, "k1")
    org = org or client.post("/api/admin/organizations", json={"name": "Acme"}, headers=AUTH).json()["id"]
    flow = client.post(
        f"/api/admin/organizations/{org}/tree-flows",
        json={"name": "Q", "steps": [{"id": "need", "question": "What do you need?"}]},
        headers=AUTH,
    ).json()["id"]
    whatsapp: dict[str, Any] = {
        "instanceName": instance,
        "serverUrl": evolution.url,
        "apiKey": "k1",
        "active": True,
    }
    whatsapp["webhookToken"] = token
    if metadata:
        whatsapp["metadata"] = metadata
    response = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={"name": "Sofia", "treeFlowId": flow, "whatsapp": whatsapp},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    return str(org)


def upsert(
    message: dict[str, Any] | None = None,
    *,
    key: dict[str, Any] | None = None,
    event: str = "messages.upsert",
    message_type: str = "conversation",
    timestamp: Any = 1761057639,
    push_name: str | None = "Maria",
    instance: str = INSTANCE,
) -> dict[str, Any]:
    return {
        "event": event,
        "instance": instance,
        "data": {
            "key": key or {"remoteJid": PN, "fromMe": False, "id": uuid.uuid4().hex[:20].upper()},
            "pushName": push_name,
            "status": "DELIVERY_ACK",
            "message": message or {"conversation": "Oi, quero agendar"},
            "messageType": message_type,
            "messageTimestamp": timestamp,
        },
    }


def rows(container: Container, model: type[Any]) -> list[Any]:
    with container.session_factory() as session:
        return list(session.scalars(select(model).order_by(model.created_at)))


def inbound(container: Container) -> list[TalkMessage]:
    return [m for m in rows(container, TalkMessage) if m.direction == "inbound"]


# --- event names and paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ("messages.upsert", WEBHOOK),
        ("MESSAGES_UPSERT", WEBHOOK),
        ("messages.upsert", WEBHOOK + "/messages-upsert"),
        (None, WEBHOOK + "/messages-upsert"),
    ],
)
def test_both_event_spellings_and_the_by_events_sub_path_are_accepted(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    event: str | None,
    path: str,
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    payload = upsert()
    if event is None:
        del payload["event"]
    else:
        payload["event"] = event

    response = client.post(path, json=payload)

    assert response.status_code == 200, response.text
    assert len(inbound(container)) == 1


def test_a_sub_path_that_contradicts_the_body_is_422(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    response = client.post(WEBHOOK + "/connection-update", json=upsert())
    assert response.status_code == 422
    assert inbound(container) == []


# --- message shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "message_type", "body", "stored_type"),
    [
        (
            {"extendedTextMessage": {"text": "link https://x.y"}},
            "extendedTextMessage",
            "link https://x.y",
            "text",
        ),
        (
            {"imageMessage": {"mimetype": "image/jpeg", "caption": "comprovante"}},
            "imageMessage",
            "comprovante",
            "imageMessage",
        ),
        (
            {"imageMessage": {"mimetype": "image/jpeg", "fileLength": {"low": 88123, "high": 0}}},
            "imageMessage",
            "[image]",
            "imageMessage",
        ),
        (
            {"audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 7, "ptt": True}},
            "audioMessage",
            "[voice message]",
            "audioMessage",
        ),
        (
            {
                "documentWithCaptionMessage": {
                    "message": {
                        "documentMessage": {
                            "fileName": "cv.pdf",
                            "caption": "my CV",
                            "mimetype": "application/pdf",
                        }
                    }
                }
            },
            "documentWithCaptionMessage",
            "my CV",
            "documentMessage",
        ),
        (
            {"ephemeralMessage": {"message": {"viewOnceMessageV2": {"message": {"conversation": "secret"}}}}},
            "ephemeralMessage",
            "secret",
            "text",
        ),
        (
            {"buttonsResponseMessage": {"selectedButtonId": "b1", "selectedDisplayText": "Yes, call me"}},
            "buttonsResponseMessage",
            "Yes, call me",
            "buttonsResponseMessage",
        ),
        (
            {"listResponseMessage": {"title": "Plan Pro", "singleSelectReply": {"selectedRowId": "pro"}}},
            "listResponseMessage",
            "Plan Pro",
            "listResponseMessage",
        ),
    ],
)
def test_every_message_shape_is_stored_with_a_readable_body(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    message: dict[str, Any],
    message_type: str,
    body: str,
    stored_type: str,
) -> None:
    container, client = make_app()
    add_agent(client, evolution)

    assert client.post(WEBHOOK, json=upsert(message, message_type=message_type)).status_code == 200

    [stored] = inbound(container)
    assert stored.body == body
    assert stored.message_type == stored_type


def test_media_metadata_and_a_string_timestamp_are_kept(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    message = {
        "documentMessage": {"fileName": "quote.pdf", "mimetype": "application/pdf", "fileLength": "2048"}
    }

    client.post(WEBHOOK, json=upsert(message, message_type="documentMessage", timestamp="1761057639"))

    [stored] = inbound(container)
    assert stored.body == "[document: quote.pdf]"
    assert stored.meta["media"]["mimetype"] == "application/pdf"
    assert stored.meta["media"]["fileName"] == "quote.pdf"
    assert stored.meta["media"]["fileLength"] == 2048
    assert stored.sent_at is not None
    assert int(stored.sent_at.timestamp()) == 1761057639


@pytest.mark.parametrize(
    ("message", "message_type"),
    [
        ({"reactionMessage": {"key": {"id": "X"}, "text": "👍"}}, "reactionMessage"),
        ({"protocolMessage": {"type": 0}}, "protocolMessage"),
        ({"pollUpdateMessage": {"vote": {}}}, "pollUpdateMessage"),
    ],
)
def test_reactions_protocol_and_poll_updates_are_not_chat_turns(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    message: dict[str, Any],
    message_type: str,
) -> None:
    container, client = make_app()
    add_agent(client, evolution)

    response = client.post(WEBHOOK, json=upsert(message, message_type=message_type))

    assert response.status_code == 200
    assert response.json()["ignored"]
    assert rows(container, TalkMessage) == []


@pytest.mark.parametrize(
    "remote_jid", ["120363025123456789@g.us", "status@broadcast", "120363999999999999@newsletter"]
)
def test_groups_broadcasts_and_newsletters_are_ignored(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi, remote_jid: str
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    key = {"remoteJid": remote_jid, "fromMe": False, "id": "G1", "participant": PN}

    response = client.post(WEBHOOK, json=upsert(key=key))

    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["ignored"]
    assert rows(container, Contact) == []


# --- receipts, connection, QR ------------------------------------------------------------------------------


def sent_reply(container: Container, client: TestClient, evolution: FakeEvolutionApi) -> TalkMessage:
    client.post(WEBHOOK, json=upsert())
    evolution.wait_for_requests(1, path_prefix="/message/sendText")
    return wait_for(lambda: next((m for m in rows(container, TalkMessage) if m.send_status == "sent"), None))


def receipt(key_id: str, status: Any) -> dict[str, Any]:
    return {
        "event": "messages.update",
        "instance": INSTANCE,
        "data": {"keyId": key_id, "remoteJid": PN, "fromMe": True, "status": status, "instanceId": "0b7c"},
    }


def test_receipts_move_forward_only_and_read_before_delivery_stays_read(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    reply = sent_reply(container, client, evolution)
    key_id = reply.whatsapp_message_id
    assert key_id

    assert client.post(WEBHOOK, json=receipt(key_id, "READ")).json()["receipts"] == ["applied"]
    assert client.post(WEBHOOK, json=receipt(key_id, "DELIVERY_ACK")).json()["receipts"] == ["stale"]
    assert client.post(WEBHOOK, json=receipt(key_id, 4)).json()["receipts"] == ["stale"]  # duplicate READ

    [after] = [m for m in rows(container, TalkMessage) if m.id == reply.id]
    assert after.meta["whatsappStatus"] == "READ"
    assert after.read_at is not None
    assert after.delivered_at is not None
    assert [h["status"] for h in after.meta["whatsappStatusHistory"]] == ["READ"]


def test_a_receipt_list_and_an_error_receipt(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    reply = sent_reply(container, client, evolution)
    key_id = reply.whatsapp_message_id
    assert key_id
    batch = receipt(key_id, "SERVER_ACK")
    batch["data"] = [batch["data"], {**batch["data"], "status": "ERROR"}]

    assert client.post(WEBHOOK, json=batch).json()["receipts"] == ["applied", "applied"]

    [after] = [m for m in rows(container, TalkMessage) if m.id == reply.id]
    assert after.send_status == "failed"
    assert after.meta["whatsappSent"] is False
    assert rows(container, Talk)[0].needs_human is True


def test_connection_updates_and_logout_set_the_agent_status(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)

    def status_after(event: str, data: Any, path: str = WEBHOOK) -> tuple[str | None, Any]:
        client.post(path, json={"event": event, "instance": INSTANCE, "data": data})
        [agent] = rows(container, Agent)
        return agent.whatsapp_status, agent.whatsapp_last_connected_at

    assert status_after("connection.update", {"instance": INSTANCE, "state": "connecting"})[0] == "connecting"
    status, connected_at = status_after(
        "CONNECTION_UPDATE", {"instance": INSTANCE, "state": "open", "wuid": PN}
    )
    assert status == "connected"
    assert connected_at is not None
    refused = {"instance": INSTANCE, "state": "refused", "statusReason": 428}
    assert status_after("connection.update", refused, WEBHOOK + "/connection-update")[0] == "refused"
    closed = {"instance": INSTANCE, "state": "close", "statusReason": 401}
    assert status_after("connection.update", closed)[0] == "disconnected"
    status_after("connection.update", {"instance": INSTANCE, "state": "open"})
    assert status_after("logout.instance", None)[0] == "disconnected"


# --- business side, identity, replies ----------------------------------------------------------------


def test_a_person_typing_on_the_business_phone_pauses_the_bot(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    sent_reply(container, client, evolution)
    typed = upsert(
        {"conversation": "Oi Maria, aqui é o João"}, key={"remoteJid": PN, "fromMe": True, "id": "H1"}
    )

    assert client.post(WEBHOOK, json=typed).status_code == 200
    assert client.post(WEBHOOK, json=upsert({"conversation": "Oi João!"})).status_code == 200
    time.sleep(0.5)  # an AI turn would have sent by now (worker polls every 20 ms)

    assert len(evolution.sendtext_attempts()) == 1
    assert rows(container, Talk)[0].paused is True
    human = next(m for m in rows(container, TalkMessage) if m.whatsapp_message_id == "H1")
    assert (human.direction, human.from_agent_id, human.meta["human"]) == ("outbound", None, True)


def test_our_own_sends_echoed_back_are_never_stored_twice(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    reply = sent_reply(container, client, evolution)
    echo_key = {"remoteJid": PN, "fromMe": True, "id": reply.whatsapp_message_id}

    for event in ("send.message", "messages.upsert"):
        response = client.post(WEBHOOK, json=upsert({"conversation": reply.body}, key=echo_key, event=event))
        assert response.json().get("duplicate") is True

    assert len(rows(container, TalkMessage)) == 2
    assert rows(container, Talk)[0].paused is False


def test_lid_addressing_gets_one_contact_and_replies_go_to_the_phone_jid(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    key = {"remoteJid": LID, "remoteJidAlt": PN, "fromMe": False, "id": "L1", "addressingMode": "lid"}

    client.post(WEBHOOK, json=upsert(key=key))

    [request] = evolution.wait_for_requests(1, path_prefix="/message/sendText")
    assert request.json["number"] == "5511987654321"
    [contact] = rows(container, Contact)
    assert (contact.phone, contact.whatsapp_lid) == ("+5511987654321", "103899771998284")


def test_a_lid_only_sender_gets_a_contact_and_is_answered_at_the_lid_then_merged(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)

    client.post(WEBHOOK, json=upsert(key={"remoteJid": LID, "fromMe": False, "id": "L1"}))
    [request] = evolution.wait_for_requests(1, path_prefix="/message/sendText")
    assert request.json["number"] == LID
    client.post(
        WEBHOOK, json=upsert(key={"remoteJid": PN, "fromMe": False, "id": "P1"})
    )  # phone: 2nd contact
    assert len(rows(container, Contact)) == 2
    client.post(WEBHOOK, json=upsert(key={"remoteJid": LID, "remoteJidAlt": PN, "fromMe": False, "id": "B1"}))

    [contact] = rows(container, Contact)
    assert contact.phone == "+5511987654321"
    assert contact.whatsapp_lid == "103899771998284"
    assert len([t for t in rows(container, Talk) if t.closed_at is None]) == 1


@pytest.mark.parametrize(
    "spellings",
    [
        ["5531987654321@s.whatsapp.net", "553187654321@s.whatsapp.net"],  # Brazil, ninth digit
        ["5491123456789@s.whatsapp.net", "541123456789@s.whatsapp.net"],  # Argentina, +54 9
        ["5215512345678@s.whatsapp.net", "525512345678@s.whatsapp.net"],  # Mexico, +52 1
    ],
)
def test_national_variants_of_one_number_are_one_contact_but_not_across_organizations(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi, spellings: list[str]
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    add_agent(client, evolution, instance="other-org")
    for index, jid in enumerate(spellings):
        client.post(WEBHOOK, json=upsert(key={"remoteJid": jid, "fromMe": False, "id": f"V{index}"}))
    client.post(
        WEBHOOK,
        json=upsert(key={"remoteJid": spellings[1], "fromMe": False, "id": "O1"}, instance="other-org"),
    )

    contacts = rows(container, Contact)
    assert len(contacts) == 2
    assert len({c.organization_id for c in contacts}) == 2
    assert len(inbound(container)) == 3


# --- exactly once, actors ----------------------------------------------------------------------------------


def test_a_duplicate_storm_from_many_threads_stores_once_and_replies_once(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    payload = upsert()
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver() -> None:
        for _ in range(5):
            code = client.post(WEBHOOK, json=payload).status_code
            with lock:
                statuses.append(code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * 40
    assert len(inbound(container)) == 1
    evolution.wait_for_requests(1, path_prefix="/message/sendText")
    time.sleep(0.3)
    assert len(evolution.sendtext_attempts()) == 1


def test_idle_conversation_actors_stop_by_themselves(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _container, client = make_app(conversation_idle_seconds=0.2)
    add_agent(client, evolution)
    client.post(WEBHOOK, json=upsert())
    # On a loaded machine the actor may already have been idle for 0.2 s by the time of this first look, so
    # it is either still live or already counted as stopped for idleness, never neither.
    first = client.get("/ops/actors", headers=AUTH).json()["conversations"]
    assert first["startedTotal"] == 1
    assert first["live"] + first["stoppedIdleTotal"] == 1

    wait_for(lambda: client.get("/ops/actors", headers=AUTH).json()["conversations"]["live"] == 0, timeout=5)
    assert client.get("/ops/actors", headers=AUTH).json()["conversations"]["stoppedIdleTotal"] == 1


def test_at_the_actor_bound_a_new_conversation_gets_503_and_nothing_is_lost(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container, client = make_app(max_conversation_actors=1)
    add_agent(client, evolution)
    gate = threading.Event()
    original = container.handle_inbound

    def slow(event: Any) -> Any:
        gate.wait(10)
        return original(event)

    monkeypatch.setattr(container, "handle_inbound", slow)
    first = threading.Thread(target=lambda: client.post(WEBHOOK, json=upsert()))
    first.start()
    wait_for(lambda: container.router.snapshot() and container.router.snapshot()[0]["inFlight"] == 1)

    other = upsert(key={"remoteJid": "5511911112222@s.whatsapp.net", "fromMe": False, "id": "OTHER"})
    refused = client.post(WEBHOOK, json=other)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    gate.set()
    first.join(10)
    assert client.post(WEBHOOK, json=other).status_code == 200  # Evolution's retry goes through
    assert len(inbound(container)) == 2


def test_a_crashing_handler_answers_503_and_the_next_message_is_handled(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    original = container.handle_inbound
    calls = {"n": 0}

    def crash_once(event: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug in a handler")
        return original(event)

    monkeypatch.setattr(container, "handle_inbound", crash_once)
    payload = upsert()

    crashed = client.post(WEBHOOK, json=payload)
    assert crashed.status_code == 503
    assert "Traceback" not in crashed.text
    assert inbound(container) == []
    assert client.post(WEBHOOK, json=payload).status_code == 200  # Evolution's redelivery
    assert len(inbound(container)) == 1


# --- security and bad input --------------------------------------------------------------------------------


def test_an_agent_with_a_webhook_token_requires_it(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution, token="s3cr3t")
    now = int(time.time())

    assert client.post(WEBHOOK, json=upsert()).status_code == 401
    assert client.post(WEBHOOK, json=upsert(), headers={"X-Webhook-Token": "wrong"}).status_code == 401
    expired = sign_jwt_hs256({"iat": now - 700, "exp": now - 100, "app": "evolution"}, "s3cr3t")
    assert (
        client.post(WEBHOOK, json=upsert(), headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    )
    forged = sign_jwt_hs256({"iat": now, "exp": now + 600}, "not-the-secret")
    assert (
        client.post(WEBHOOK, json=upsert(), headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )
    status_update = receipt("X", "READ")
    assert client.post(WEBHOOK, json=status_update).status_code == 401
    assert inbound(container) == []

    assert client.post(WEBHOOK, json=upsert(), headers={"X-Webhook-Token": "s3cr3t"}).status_code == 200
    valid = sign_jwt_hs256({"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}, "s3cr3t")
    assert (
        client.post(WEBHOOK, json=upsert(), headers={"Authorization": f"Bearer {valid}"}).status_code == 200
    )
    assert len(inbound(container)) == 2


def test_malformed_bodies_get_400_or_422_and_write_nothing(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    add_agent(client, evolution)
    assert client.post(WEBHOOK, content=b"{oops").status_code == 400
    assert client.post(WEBHOOK, content=b"").status_code == 400
    assert client.post(WEBHOOK, json=[1, 2]).status_code == 422
    assert client.post(WEBHOOK, json={"event": "messages.upsert"}).status_code == 422
    bad_key = upsert()
    bad_key["data"]["key"]["id"] = 12345
    response = client.post(WEBHOOK, json=bad_key)
    assert response.status_code == 422
    assert response.json()["path"] == "data.key.id"
    assert rows(container, TalkMessage) == []


def test_a_body_over_the_limit_is_413(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app(max_webhook_bytes=2048)
    add_agent(client, evolution)
    response = client.post(WEBHOOK, json=upsert({"conversation": "x" * 4096}))
    assert response.status_code == 413
    assert rows(container, TalkMessage) == []


def test_rate_limits_answer_429_with_retry_after(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _container, client = make_app(rate_limit_per_instance=1.0)
    add_agent(client, evolution)
    codes = [client.post(WEBHOOK, json=upsert()).status_code for _ in range(6)]
    assert codes[:4] == [200, 200, 200, 200]  # the burst is 4x the rate
    assert 429 in codes[4:]
    limited = client.post(WEBHOOK, json=upsert())
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_hostile_strings_are_stored_exactly_and_safely(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app()
    org = add_agent(client, evolution)
    texts = [
        "'; DROP TABLE talk_message; --",
        "<script>alert('x')</script>",
        "emoji 👍🏽🇧🇷 and RTL \u202e text",
        "y" * 64 * 1024,
    ]
    for index, text in enumerate(texts):
        key = {"remoteJid": PN, "fromMe": False, "id": f"H{index}"}
        assert client.post(WEBHOOK, json=upsert({"conversation": text}, key=key)).status_code == 200
    nul = {"remoteJid": PN, "fromMe": False, "id": "NUL"}
    assert client.post(WEBHOOK, json=upsert({"conversation": "a\x00b"}, key=nul)).status_code == 200

    bodies = [m.body for m in inbound(container)]
    assert bodies[:4] == texts
    assert bodies[4] == "a\ufffdb"
    talk = client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json()[0]
    via_api = [m["body"] for m in client.get(f"/api/admin/talks/{talk['id']}/messages", headers=AUTH).json()]
    assert texts[1] in via_api


def test_groups_can_be_recorded_when_configured_and_the_bot_stays_silent_there(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app(ignore_groups=False)
    add_agent(client, evolution)
    group = "120363025123456789@g.us"
    key = {
        "remoteJid": group,
        "fromMe": False,
        "id": "G1",
        "participant": "84823447130133@lid",
        "participantAlt": "5531987650000@s.whatsapp.net",
    }

    response = client.post(WEBHOOK, json=upsert({"conversation": "bom dia grupo"}, key=key, push_name="Ana"))
    broadcast = upsert(key={"remoteJid": "status@broadcast", "fromMe": False, "id": "S1", "participant": PN})

    assert response.status_code == 200
    assert "ignored" not in response.json()
    assert client.post(WEBHOOK, json=broadcast).json()["ignored"]  # broadcasts are still ignored
    contacts = {c.whatsapp_jid or c.phone: c for c in rows(container, Contact)}
    assert set(contacts) == {group, "+5531987650000"}
    assert contacts["+5531987650000"].name == "Ana"
    [message] = rows(container, TalkMessage)
    assert message.from_contact_id == contacts["+5531987650000"].id
    assert message.meta["chatKind"] == "group"
    assert rows(container, Talk)[0].contact_id == contacts[group].id
    time.sleep(0.4)
    assert evolution.sendtext_attempts() == []
    container.recover_once()
    time.sleep(0.2)
    assert evolution.sendtext_attempts() == []
