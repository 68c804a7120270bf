"""FakeOpenAI answers the real `openai` client over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from luminai_actors.testing import FakeOpenAI

API_KEY = "sk-test-123"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "schedule_meeting",
            "description": "Book a meeting",
            "parameters": {"type": "object", "properties": {"when": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=fake.url + "/v1", max_retries=0, timeout=5) as c:
        yield c


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are an SDR."}, {"role": "user", "content": text}],
        **kwargs,
    )


def test_default_reply_with_usage_and_model(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    completion = ask(client, "quero agendar uma demo")

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Fake reply to: quero agendar uma demo"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 8  # "You are an SDR." + "quero agendar uma demo"
    assert completion.usage.completion_tokens == 7
    assert completion.usage.total_tokens == 15
    [body] = fake.chat_requests()
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"][-1] == {"role": "user", "content": "quero agendar uma demo"}


def test_scripted_replies_then_responder(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script("first", {"intent": "buy", "score": 0.9})
    fake.responder = lambda request: f"{len(request['messages'])} messages seen"

    assert ask(client, "a").choices[0].message.content == "first"
    content = ask(client, "b").choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"intent": "buy", "score": 0.9}
    assert ask(client, "c").choices[0].message.content == "2 messages seen"


def test_tool_call_reply(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script({"tool_call": {"name": "schedule_meeting", "arguments": {"when": "amanhã 15h"}}})

    completion = ask(client, "pode ser amanhã?", tools=TOOLS)

    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "schedule_meeting"
    assert json.loads(call.function.arguments) == {"when": "amanhã 15h"}
    assert fake.chat_requests()[0]["tools"][0]["function"]["name"] == "schedule_meeting"


def test_scripted_status_is_surfaced_by_the_client(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(500, 429)
    with pytest.raises(openai.InternalServerError) as server_error:
        ask(client, "hi")
    assert server_error.value.status_code == 500
    with pytest.raises(openai.RateLimitError):
        ask(client, "hi")
    assert ask(client, "hi").choices[0].message.content == "Fake reply to: hi"


def test_fail_next_then_recovers(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script("kept for after the failure")
    fake.fail_next(1)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "hi")
    assert caught.value.status_code == 500
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"
    assert ask(client, "hi").choices[0].message.content == "kept for after the failure"


def test_hang_next_times_the_client_out(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.hang_next(1, 5)
    with pytest.raises(openai.APITimeoutError):
        ask(client, "hi", timeout=0.3)
    assert ask(client, "hi").choices[0].message.content == "Fake reply to: hi"


def test_wrong_api_key_is_401_with_openai_error_shape(fake: FakeOpenAI) -> None:
    with (
        openai.OpenAI(api_key="sk-wrong", base_url=fake.url + "/v1", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        ask(wrong, "hi")
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


def test_models_list(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    assert [model.id for model in client.models.list()] == [fake.model]


def test_route_without_v1_prefix_and_raw_error_body(fake: FakeOpenAI) -> None:
    with httpx.Client(base_url=fake.url) as raw:
        ok = raw.post(
            "/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": [{"role": "user", "content": "oi"}]},
        )
        denied = raw.post("/v1/chat/completions", json={"model": "m", "messages": []})
        unknown = raw.get("/v1/nothing")
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["logprobs"] is None
    assert denied.status_code == 401
    assert denied.json() == {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert unknown.status_code == 404
    assert fake.wait_for_requests(3)[0].headers["authorization"] == f"Bearer {API_KEY}"
