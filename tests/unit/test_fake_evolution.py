"""FakeEvolutionApi (and the shared HttpBase) speak Evolution API v2 over real HTTP."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from luminai_actors.testing import FakeEvolutionApi, RecordedRequest
from luminai_actors.testing.fake_evolution import WEBHOOK_EVENTS
from luminai_actors.testing.http import HttpBase, JsonResponse

NUMBER = "5511987654321"
HOOK = {"enabled": True, "url": "https://bot.example.com/hooks/evolution", "events": ["MESSAGES_UPSERT"]}


@pytest.fixture
def evo() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi(global_api_key="GLOBAL-KEY") as fake:
        fake.add_instance("acme", "ACME-KEY")
        yield fake


@pytest.fixture
def client(evo: FakeEvolutionApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=evo.url, headers={"apikey": "ACME-KEY"}, timeout=5) as c:
        yield c


def send(client: httpx.Client, body: Any, instance: str = "acme", **kwargs: Any) -> httpx.Response:
    return client.post(f"/message/sendText/{instance}", json=body, **kwargs)


def message_of(response: httpx.Response) -> Any:
    return response.json()["response"]["message"]


def test_send_text_success_has_the_send_message_shape(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    response = send(client, {"number": NUMBER, "text": "Olá!"})

    assert response.status_code == 201
    data = response.json()
    assert data["key"]["remoteJid"] == f"{NUMBER}@s.whatsapp.net"
    assert data["key"]["fromMe"] is True
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", data["key"]["id"])
    assert data["pushName"] == "Você"
    assert data["status"] == "PENDING"
    assert data["message"] == {"conversation": "Olá!"}
    assert data["messageType"] == "conversation"
    assert isinstance(data["messageTimestamp"], int)
    assert abs(data["messageTimestamp"] - time.time()) < 60
    assert data["instanceId"]
    assert data["source"] == "web"
    assert evo.sent_messages() == [{"number": NUMBER, "text": "Olá!", "_instance": "acme"}]


def test_full_jid_is_kept_as_remote_jid(client: httpx.Client) -> None:
    response = send(client, {"number": "120363025123456789@g.us", "text": "hi"})
    assert response.json()["key"]["remoteJid"] == "120363025123456789@g.us"


def test_unknown_instance_is_404_even_without_a_key(evo: FakeEvolutionApi) -> None:
    with httpx.Client(base_url=evo.url) as anonymous:
        response = send(anonymous, {"number": NUMBER, "text": "hi"}, instance="ghost")
    assert response.status_code == 404
    assert response.json() == {
        "status": 404,
        "error": "Not Found",
        "response": {"message": ['The "ghost" instance does not exist']},
    }


@pytest.mark.parametrize("headers", [{}, {"apikey": "WRONG"}])
def test_missing_or_wrong_key_is_401(client: httpx.Client, headers: dict[str, str]) -> None:
    client.headers.pop("apikey")
    response = send(client, {"number": NUMBER, "text": "hi"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "status": 401,
        "error": "Unauthorized",
        "response": {"message": "Unauthorized"},
    }


def test_global_key_works_for_any_instance(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    response = send(client, {"number": NUMBER, "text": "hi"}, headers={"apikey": "GLOBAL-KEY"})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"number": 5511987654321, "text": "hi"}, ["Invalid format"]),
        ({"number": NUMBER, "textMessage": {"text": "hi"}}, ['instance requires property "text"']),
        ({"number": NUMBER, "text": "   "}, ["Text is required"]),
    ],
)
def test_invalid_send_text_bodies_are_400(client: httpx.Client, body: Any, message: list[str]) -> None:
    response = send(client, body)
    assert response.status_code == 400
    assert response.json() == {"status": 400, "error": "Bad Request", "response": {"message": message}}


def test_non_object_body_is_400(client: httpx.Client) -> None:
    assert send(client, ["not", "an", "object"]).status_code == 400


def test_number_not_on_whatsapp_is_400(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.mark_not_on_whatsapp("5511999999999")
    response = send(client, {"number": "5511999999999", "text": "hi"})
    assert response.status_code == 400
    assert message_of(response) == [
        {"jid": "5511999999999@s.whatsapp.net", "exists": False, "number": "5511999999999"}
    ]
    assert evo.sent_messages() == []


def test_closed_instance_is_500_connection_closed_until_open(
    evo: FakeEvolutionApi, client: httpx.Client
) -> None:
    evo.set_state("acme", "close")
    response = send(client, {"number": NUMBER, "text": "hi"})
    assert response.status_code == 500
    assert response.json() == {
        "status": 500,
        "error": "Internal Server Error",
        "response": {"message": ["Error: Connection Closed"]},
    }
    evo.set_state("acme", "open")
    assert send(client, {"number": NUMBER, "text": "hi"}).status_code == 201


def test_delay_holds_the_answer(client: httpx.Client) -> None:
    started = time.monotonic()
    response = send(client, {"number": NUMBER, "text": "hi", "delay": 300})
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.3


def test_fail_next_is_consumed_in_order(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.fail_next(2)
    evo.fail_next(1, status=400, body={"custom": True})
    body = {"number": NUMBER, "text": "hi"}
    first, second, third, fourth = (send(client, body) for _ in range(4))
    assert (first.status_code, second.status_code) == (500, 500)
    assert message_of(first) == ["Error: Connection Closed"]
    assert (third.status_code, third.json()) == (400, {"custom": True})
    assert fourth.status_code == 201
    assert len(evo.sent_messages()) == 1
    assert len(evo.sendtext_attempts()) == 4


def test_hang_next_triggers_client_timeout_then_recovers(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.hang_next(1, 5)
    with pytest.raises(httpx.ReadTimeout):
        send(client, {"number": NUMBER, "text": "hi"}, timeout=0.3)
    assert send(client, {"number": NUMBER, "text": "again"}).status_code == 201


def test_drop_next_closes_without_response(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.drop_next(1)
    with pytest.raises(httpx.RemoteProtocolError):
        send(client, {"number": NUMBER, "text": "hi"})
    assert send(client, {"number": NUMBER, "text": "hi"}).status_code == 201
    assert [m["text"] for m in evo.sent_messages()] == ["hi"]


def test_sendtext_attempts_filters_by_instance(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.add_instance("other", "OTHER-KEY")
    send(client, {"number": NUMBER, "text": "a"})
    send(client, {"number": NUMBER, "text": "b"}, instance="other", headers={"apikey": "OTHER-KEY"})
    attempts = evo.sendtext_attempts("other")
    assert [a.json["text"] for a in attempts] == ["b"]
    assert isinstance(attempts[0], RecordedRequest)
    assert attempts[0].headers["apikey"] == "OTHER-KEY"
    assert [m["_instance"] for m in evo.sent_messages()] == ["acme", "other"]


def test_connection_state(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    evo.set_state("acme", "connecting")
    response = client.get("/instance/connectionState/acme")
    assert (response.status_code, response.json()) == (
        200,
        {"instance": {"instanceName": "acme", "state": "connecting"}},
    )
    assert client.get("/instance/connectionState/ghost").status_code == 404
    assert client.get("/instance/connectionState/acme", headers={"apikey": "x"}).status_code == 401


def test_webhook_set_and_find(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    found = client.get("/webhook/find/acme")
    assert (found.status_code, found.json()) == (200, None)

    created = client.post("/webhook/set/acme", json={"webhook": {**HOOK, "headers": {"x-token": "s"}}})
    assert created.status_code == 201
    row = created.json()
    assert set(row) == {
        "id", "url", "headers", "enabled", "events", "webhookByEvents", "webhookBase64",
        "createdAt", "updatedAt", "instanceId",
    }  # fmt: skip
    assert row["url"] == HOOK["url"]
    assert row["events"] == ["MESSAGES_UPSERT"]
    assert row["headers"] == {"x-token": "s"}
    assert (row["webhookByEvents"], row["webhookBase64"]) == (False, False)
    assert client.get("/webhook/find/acme").json() == row
    assert evo.webhook("acme") == row


def test_webhook_enabled_with_empty_events_subscribes_all_and_disabled_clears(client: httpx.Client) -> None:
    everything = client.post("/webhook/set/acme", json={"webhook": {**HOOK, "events": []}})
    assert everything.json()["events"] == list(WEBHOOK_EVENTS)
    disabled = client.post("/webhook/set/acme", json={"webhook": {**HOOK, "enabled": False}})
    assert (disabled.json()["enabled"], disabled.json()["events"]) == (False, [])
    assert disabled.json()["id"] == everything.json()["id"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"enabled": True, "url": "https://x", "events": []}, '"webhook"'),
        ({"webhook": {"enabled": True, "events": []}}, '"url"'),
        ({"webhook": {"url": "https://x", "events": []}}, '"enabled"'),
        ({"webhook": {"enabled": True, "url": "", "events": []}}, "webhook.url"),
        ({"webhook": {**HOOK, "events": ["messages.upsert"]}}, "webhook.events[0]"),
        ({"webhook": {**HOOK, "events": ["NOT_AN_EVENT"]}}, "enum"),
    ],
)
def test_webhook_set_invalid_bodies_are_400(client: httpx.Client, body: Any, named: str) -> None:
    response = client.post("/webhook/set/acme", json=body)
    assert response.status_code == 400
    assert named in message_of(response)[0]


def test_webhook_enabled_without_events_is_the_real_500(client: httpx.Client) -> None:
    response = client.post("/webhook/set/acme", json={"webhook": {"enabled": True, "url": "https://x"}})
    assert response.status_code == 500
    assert message_of(response) == "Cannot read properties of undefined (reading 'length')"


def test_webhook_routes_are_guarded(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    assert client.post("/webhook/set/ghost", json={"webhook": HOOK}).status_code == 404
    assert client.get("/webhook/find/acme", headers={"apikey": "x"}).status_code == 401


def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == 404


class _Receiver(HttpBase):
    """Stands in for our service's webhook endpoint."""

    def handle(self, request: RecordedRequest) -> JsonResponse | None:
        return JsonResponse(200, {"received": request.json["event"]})


def test_post_webhook_sends_like_axios(evo: FakeEvolutionApi) -> None:
    payload = {"event": "messages.upsert", "instance": "acme", "data": {"key": {"id": "3A1"}}}
    with _Receiver() as receiver:
        status, body = evo.post_webhook(receiver.url + "/hooks", payload, headers={"x-token": "s"})
        [request] = receiver.wait_for_requests(1, path_prefix="/hooks")
    assert (status, body) == (200, {"received": "messages.upsert"})
    assert request.method == "POST"
    assert request.json == payload
    assert request.headers["user-agent"] == "axios/1.7.9"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "s"


def test_wait_for_requests_wakes_on_arrival_and_times_out(evo: FakeEvolutionApi) -> None:
    def background_send() -> None:
        with httpx.Client(base_url=evo.url, headers={"apikey": "ACME-KEY"}) as c:
            send(c, {"number": NUMBER, "text": "from a thread"})

    worker = threading.Thread(target=background_send)
    worker.start()
    [request] = evo.wait_for_requests(1, timeout=5, path_prefix="/message/sendText/")
    worker.join()
    assert request.json["text"] == "from a thread"
    assert request.received_at <= time.monotonic()
    with pytest.raises(TimeoutError):
        evo.wait_for_requests(2, timeout=0.05)
    evo.clear()
    assert evo.requests == []
    assert evo.sent_messages() == []


def test_restart_serves_again_on_the_same_port(evo: FakeEvolutionApi, client: httpx.Client) -> None:
    port = evo.port
    assert send(client, {"number": NUMBER, "text": "before"}).status_code == 201

    evo.stop()
    assert not evo.running
    with pytest.raises(httpx.ConnectError):
        send(client, {"number": NUMBER, "text": "while down"})

    evo.restart()
    assert evo.port == port
    assert send(client, {"number": NUMBER, "text": "after"}).status_code == 201
    assert [m["text"] for m in evo.sent_messages()] == ["before", "after"]


def test_stop_does_not_hang_on_idle_keep_alive_or_hung_requests(evo: FakeEvolutionApi) -> None:
    evo.hang_next(1, 30)
    with httpx.Client(base_url=evo.url, headers={"apikey": "ACME-KEY"}) as c:
        assert c.get("/instance/connectionState/acme").status_code == 200  # leaves a pooled connection

        outcome: list[BaseException] = []

        def hung_send() -> None:
            with httpx.Client(base_url=evo.url, headers={"apikey": "ACME-KEY"}) as hung:
                try:
                    send(hung, {"number": NUMBER, "text": "hi"})
                except httpx.TransportError as exc:
                    outcome.append(exc)

        worker = threading.Thread(target=hung_send)
        worker.start()
        evo.wait_for_requests(1, path_prefix="/message/sendText/")
        started = time.monotonic()
        evo.stop()
        assert time.monotonic() - started < 3
        worker.join(5)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], httpx.RemoteProtocolError)
        assert evo.sent_messages() == []
