"""EvolutionClient against httpx.MockTransport: request shapes (v2 and v1), results, and the error mapping.

Bodies and error envelopes are the ones Evolution API 2.x answers (reference evolution-api.md §4-§5).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from luminai_actors.errors import EvolutionError, EvolutionPermanentError, EvolutionTransientError
from luminai_actors.evolution.client import WEBHOOK_EVENTS, EvolutionClient, SendResult

SERVER = "https://evo.example.com"
API_KEY = "B5E2C1D0-INSTANCE-TOKEN"
NUMBER = "5511987654321"
SENT: dict[str, Any] = {
    "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": True, "id": "3EB0A1B2C3D4E5F6A7B8C9"},
    "pushName": "Você",
    "status": "PENDING",
    "message": {"conversation": "Olá!"},
    "messageType": "conversation",
    "messageTimestamp": 1761057900,
    "source": "web",
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records every request and answers with a canned response."""

    def __init__(self, respond: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self._respond(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def make_client() -> Iterator[Callable[[Handler], tuple[EvolutionClient, Recorder]]]:
    clients: list[EvolutionClient] = []

    def make(respond: Handler, timeout: float = 30.0) -> tuple[EvolutionClient, Recorder]:
        recorder = Recorder(respond)
        client = EvolutionClient(httpx.MockTransport(recorder), timeout=timeout)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def answer(status: int, body: Any = None, **kwargs: Any) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=body)

    return respond


def error_body(status: int, message: Any, error: str = "Bad Request") -> dict[str, Any]:
    return {"status": status, "error": error, "response": {"message": message}}


def timeouts_of(request: httpx.Request) -> dict[str, float]:
    timeout = request.extensions["timeout"]
    assert isinstance(timeout, dict)
    return timeout


# sendText: request shapes ---------------------------------------------------------------------------------


def test_send_text_v2_posts_the_flat_body_with_the_apikey_header(make_client: Any) -> None:
    client, recorder = make_client(answer(201, SENT))

    client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    request = recorder.last
    assert request.method == "POST"
    assert str(request.url) == f"{SERVER}/message/sendText/acme"
    assert request.headers["apikey"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert recorder.last_json() == {"number": NUMBER, "text": "Olá!"}
    assert set(timeouts_of(request).values()) == {30.0}


def test_send_text_v2_with_delay_adds_it_and_waits_that_much_longer(make_client: Any) -> None:
    client, recorder = make_client(answer(201, SENT), timeout=10.0)

    client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", delay_ms=1200, trusted=True)

    assert recorder.last_json() == {"number": NUMBER, "text": "Olá!", "delay": 1200}
    assert timeouts_of(recorder.last)["read"] == pytest.approx(11.2)


def test_send_text_quotes_the_instance_and_tolerates_a_trailing_slash(make_client: Any) -> None:
    client, recorder = make_client(answer(201, SENT))

    client.send_text(SERVER + "/", API_KEY, "acme sales/br", NUMBER, "Olá!", trusted=True)

    assert recorder.last.url.raw_path == b"/message/sendText/acme%20sales%2Fbr"
    assert recorder.last.url.host == "evo.example.com"


def test_send_text_v1_posts_options_and_text_message(make_client: Any) -> None:
    client, recorder = make_client(answer(201, SENT))

    client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", api_version=1, trusted=True)
    assert recorder.last_json() == {"number": NUMBER, "options": {}, "textMessage": {"text": "Olá!"}}

    client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", api_version=1, delay_ms=800, trusted=True)
    assert recorder.last_json() == {
        "number": NUMBER,
        "options": {"delay": 800},
        "textMessage": {"text": "Olá!"},
    }
    assert str(recorder.last.url) == f"{SERVER}/message/sendText/acme"


def test_send_text_result_carries_the_key_id_and_the_resolved_remote_jid(make_client: Any) -> None:
    resolved = {**SENT, "key": {**SENT["key"], "remoteJid": "551187654321@s.whatsapp.net"}}
    client, _ = make_client(answer(201, resolved))

    result = client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert result == SendResult("3EB0A1B2C3D4E5F6A7B8C9", "551187654321@s.whatsapp.net", 201, resolved)


def test_send_text_result_without_a_key_has_no_ids(make_client: Any) -> None:
    client, _ = make_client(answer(201, {"status": "PENDING", "key": {"id": 7}}))

    result = client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert result.message_id is None
    assert result.remote_jid is None
    assert result.status_code == 201


def test_send_text_answered_without_json_is_an_evolution_error(make_client: Any) -> None:
    client, _ = make_client(answer(201, content=b"<html>created</html>"))

    with pytest.raises(EvolutionError, match="without JSON") as caught:
        client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert type(caught.value) is EvolutionError  # neither transient nor permanent


# sendText: error mapping ----------------------------------------------------------------------------------

NOT_ON_WHATSAPP = error_body(
    400, [{"jid": "5511999999999@s.whatsapp.net", "exists": False, "number": "5511999999999"}]
)

PERMANENT = [
    pytest.param(400, error_body(400, ['instance requires property "text"']), "requires property", id="400"),
    pytest.param(400, error_body(400, ["Text is required"]), "Text is required", id="400-empty-text"),
    pytest.param(401, error_body(401, "Unauthorized", "Unauthorized"), "Unauthorized", id="401"),
    pytest.param(
        404,
        error_body(404, ['The "acme" instance does not exist'], "Not Found"),
        "instance does not exist",
        id="404",
    ),
]

TRANSIENT = [
    pytest.param(500, error_body(500, "Connection Closed", "Internal Server Error"), id="500-closed"),
    pytest.param(500, error_body(500, ["Error: Connection Closed"], "Internal Server Error"), id="500-list"),
    pytest.param(502, None, id="502-empty"),
    pytest.param(503, {"error": "Service Unavailable"}, id="503"),
    pytest.param(429, error_body(429, "Too Many Requests", "Too Many Requests"), id="429"),
    pytest.param(408, error_body(408, "Request Timeout", "Request Timeout"), id="408"),
]


def test_400_exists_false_is_permanent_and_says_not_on_whatsapp(make_client: Any) -> None:
    client, _ = make_client(answer(400, NOT_ON_WHATSAPP))

    with pytest.raises(EvolutionPermanentError) as caught:
        client.send_text(SERVER, API_KEY, "acme", "5511999999999", "Olá!", trusted=True)

    assert "not on WhatsApp" in str(caught.value)
    assert caught.value.status == 400
    assert caught.value.body == NOT_ON_WHATSAPP


@pytest.mark.parametrize(("status", "body", "detail"), PERMANENT)
def test_client_errors_are_permanent_with_their_status(
    make_client: Any, status: int, body: Any, detail: str
) -> None:
    client, _ = make_client(answer(status, body))

    with pytest.raises(EvolutionPermanentError) as caught:
        client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert caught.value.status == status
    assert detail in str(caught.value)
    assert str(status) in str(caught.value)
    assert "not on WhatsApp" not in str(caught.value)


@pytest.mark.parametrize(("status", "body"), TRANSIENT)
def test_server_errors_429_and_408_are_transient(make_client: Any, status: int, body: Any) -> None:
    client, _ = make_client(answer(status, body))

    with pytest.raises(EvolutionTransientError) as caught:
        client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert caught.value.status == status
    assert str(status) in str(caught.value)


def test_a_500_connection_closed_keeps_the_message_and_body(make_client: Any) -> None:
    body = error_body(500, "Connection Closed", "Internal Server Error")
    client, _ = make_client(answer(500, body))

    with pytest.raises(EvolutionTransientError, match="Connection Closed") as caught:
        client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert caught.value.body == body


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="connect"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("server disconnected"), id="protocol"),
    ],
)
def test_transport_errors_are_transient_without_a_status(make_client: Any, error: httpx.HTTPError) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise error

    client, _ = make_client(respond)

    with pytest.raises(EvolutionTransientError) as caught:
        client.send_text(SERVER, API_KEY, "acme", NUMBER, "Olá!", trusted=True)

    assert caught.value.status is None
    assert caught.value.__cause__ is error


# other endpoints ------------------------------------------------------------------------------------------


def test_connection_state_reads_instance_state(make_client: Any) -> None:
    client, recorder = make_client(answer(200, {"instance": {"instanceName": "acme", "state": "open"}}))

    assert client.connection_state(SERVER, API_KEY, "acme", trusted=True) == "open"
    assert recorder.last.method == "GET"
    assert str(recorder.last.url) == f"{SERVER}/instance/connectionState/acme"
    assert recorder.last.headers["apikey"] == API_KEY


def test_connection_state_without_a_state_is_an_evolution_error(make_client: Any) -> None:
    client, _ = make_client(answer(200, {"instance": {"instanceName": "acme"}}))

    with pytest.raises(EvolutionError, match=r"instance\.state"):
        client.connection_state(SERVER, API_KEY, "acme", trusted=True)


def test_connection_state_of_an_unknown_instance_is_permanent(make_client: Any) -> None:
    client, _ = make_client(answer(404, error_body(404, ['The "x" instance does not exist'], "Not Found")))

    with pytest.raises(EvolutionPermanentError) as caught:
        client.connection_state(SERVER, API_KEY, "x", trusted=True)
    assert caught.value.status == 404


def test_set_webhook_sends_the_nested_v2_body_with_explicit_events_and_headers(make_client: Any) -> None:
    stored = {"id": "w1", "url": "https://bot.example.com/hook", "enabled": True}
    client, recorder = make_client(answer(201, stored))

    result = client.set_webhook(
        SERVER,
        API_KEY,
        "acme",
        "https://bot.example.com/hook",
        headers={"authorization": "Bearer s3cret"},
        trusted=True,
    )

    assert result == stored
    assert recorder.last.method == "POST"
    assert str(recorder.last.url) == f"{SERVER}/webhook/set/acme"
    assert recorder.last.headers["apikey"] == API_KEY
    assert recorder.last_json() == {
        "webhook": {
            "enabled": True,
            "url": "https://bot.example.com/hook",
            "headers": {"authorization": "Bearer s3cret"},
            "byEvents": False,
            "base64": False,
            "events": list(WEBHOOK_EVENTS),
        }
    }
    assert "MESSAGES_UPSERT" in WEBHOOK_EVENTS
    assert "MESSAGES_UPDATE" in WEBHOOK_EVENTS


def test_set_webhook_with_chosen_events_and_by_events(make_client: Any) -> None:
    client, recorder = make_client(answer(201, {}))

    client.set_webhook(
        SERVER,
        API_KEY,
        "acme",
        "https://bot.example.com/hook",
        events=("MESSAGES_UPSERT",),
        by_events=True,
        trusted=True,
    )

    webhook = recorder.last_json()["webhook"]
    assert webhook["events"] == ["MESSAGES_UPSERT"]
    assert webhook["byEvents"] is True
    assert webhook["headers"] == {}


def test_find_webhook_returns_the_stored_configuration(make_client: Any) -> None:
    stored = {"enabled": True, "url": "https://bot.example.com/hook", "events": ["MESSAGES_UPSERT"]}
    client, recorder = make_client(answer(200, stored))

    assert client.find_webhook(SERVER, API_KEY, "acme", trusted=True) == stored
    assert recorder.last.method == "GET"
    assert str(recorder.last.url) == f"{SERVER}/webhook/find/acme"
    assert recorder.last.headers["apikey"] == API_KEY


# Known gap: only send_text maps an unreadable success body to EvolutionError ---------------------------

NOT_JSON_REASON = (
    "BUG: evolution/client.py connection_state/set_webhook/find_webhook call response.json() unguarded, so "
    "a 2xx that is not JSON escapes as json.JSONDecodeError instead of EvolutionError (send_text maps it)"
)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda c: c.connection_state(SERVER, API_KEY, "acme", trusted=True), id="connection_state"
        ),
        pytest.param(lambda c: c.find_webhook(SERVER, API_KEY, "acme", trusted=True), id="find_webhook"),
        pytest.param(
            lambda c: c.set_webhook(SERVER, API_KEY, "acme", "https://h", trusted=True), id="set_webhook"
        ),
    ],
)
def test_a_2xx_without_json_is_an_evolution_error_on_every_endpoint(
    make_client: Any, call: Callable[[EvolutionClient], Any]
) -> None:
    client, _ = make_client(answer(200, content=b"<html>proxy login</html>"))

    with pytest.raises(EvolutionError):
        call(client)


def test_connection_state_with_a_non_object_instance_is_an_evolution_error(make_client: Any) -> None:
    client, _ = make_client(answer(200, {"instance": "acme", "state": "open"}))

    with pytest.raises(EvolutionError, match=r"instance\.state"):
        client.connection_state(SERVER, API_KEY, "acme", trusted=True)
