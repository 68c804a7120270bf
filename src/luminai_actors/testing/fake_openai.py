"""Local fake of an OpenAI-compatible chat completions API that the real `openai` client accepts.

Point `openai.OpenAI(api_key=..., base_url=fake.url + "/v1")` at it. Replies come from a script, a
`responder` callable or a deterministic default; faults (error statuses, hangs) are programmable so the
AI turn's error handling can be tested over real HTTP.

`structured_output` plays the servers people run: `"json_schema"` (OpenAI), `"json_object"` (llama-cpp-python
0.3's server: a `json_schema` response_format is answered `reject_status`, 500 by default, with its pydantic
message "Input should be 'text' or 'json_object'"), `"ignored"` (a server that drops `response_format` and
answers whatever it writes), `"tools"` (a server that answers any `response_format` 400 "not supported" but
makes forced tool calls: a scripted dict is then the call's arguments). `garbage_next` answers 200 with a
body that is not a chat completion.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from luminai_actors.testing.http import Fault, HttpBase, JsonResponse, RecordedRequest

__all__ = ["FakeOpenAI", "ScriptedReply"]

ScriptedReply = str | dict[str, Any] | int
"""A str is the content; a dict is sent as JSON content (or as a tool call, see `FakeOpenAI.script`);
an int fails the request with that HTTP status."""

_CHAT_ROUTES = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODEL_ROUTES = frozenset({"/v1/models", "/models"})
# (type, code, message) per status, as api.openai.com words them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _error(status: int, message: str | None = None, *, code: str | None = None) -> JsonResponse:
    kind, default_code, default_message = _ERRORS.get(status, ("api_error", None, "Fake error."))
    return JsonResponse(
        status,
        {
            "error": {
                "message": message or default_message,
                "type": kind,
                "param": None,
                "code": code or default_code,
            }
        },
    )


def _text_of(content: Any) -> str:
    """Text of a message content: a plain string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _empty_for(schema: dict[str, Any]) -> dict[str, Any]:
    """An object valid for a structured-output schema that states nothing: null (or false) everywhere."""
    empty: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kinds = prop.get("type") if isinstance(prop, dict) else None
        kinds = kinds if isinstance(kinds, list) else [kinds]
        empty[name] = None if "null" in kinds else (False if "boolean" in kinds else "")
    return empty


def default_reply(request_json: dict[str, Any]) -> str:
    """The reply used when nothing is scripted and no responder is set: for a structured-output request
    (`response_format` json_schema) an object that states nothing; otherwise an echo of the last user turn."""
    response_format = request_json.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(_empty_for(schema))
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return "{}"
    if isinstance(request_json.get("tool_choice"), dict) and request_json.get("tools"):
        [tool] = request_json["tools"][:1]
        return json.dumps(_empty_for(tool.get("function", {}).get("parameters") or {}))
    users = [m for m in request_json.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    return f"Fake reply to: {_text_of(users[-1].get('content')) if users else ''}"


class FakeOpenAI(HttpBase):
    """Chat completions (`POST /v1/chat/completions`) and a one-model `GET /v1/models`."""

    def __init__(
        self,
        api_key: str = "sk-fake",
        *,
        model: str = "fake-gpt",
        port: int = 0,
        structured_output: str = "json_schema",
        reject_status: int = 500,
    ) -> None:
        super().__init__(port=port)
        self.structured_output = structured_output
        self.reject_status = reject_status
        self.api_key = api_key
        self.model = model
        self.responder: Callable[[dict[str, Any]], str] | None = None
        self._script: deque[ScriptedReply] = deque()
        self._script_lock = threading.Lock()

    def script(self, *replies: ScriptedReply) -> None:
        """Queue replies for the next chat calls, in order.

        A dict with a "tool_call" key, `{"tool_call": {"name": ..., "arguments": {...}}}`, answers a request
        that offers `tools` with an assistant tool call instead of content.
        """
        for reply in replies:
            if isinstance(reply, dict) and "tool_call" in reply and "name" not in reply["tool_call"]:
                raise ValueError(f"a scripted tool_call needs a name: {reply!r}")
        with self._script_lock:
            self._script.extend(replies)

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` chat calls fail with `status` and an OpenAI error body."""
        self._queue_faults(count, Fault("fail", _error(status)))

    def garbage_next(self, count: int) -> None:
        """The next `count` chat calls answer 200 with a JSON body that is not a chat completion."""
        self._queue_faults(count, Fault("fail", JsonResponse(200, {"status": "ok", "result": "done"})))

    def hang_next(self, count: int, seconds: float) -> None:
        """The next `count` chat calls wait `seconds` before answering normally."""
        self._queue_faults(count, Fault("hang", seconds=seconds))

    def chat_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of every chat completions request received, in order."""
        return [
            r.json
            for r in self.requests
            if r.method == "POST" and r.route in _CHAT_ROUTES and isinstance(r.json, dict)
        ]

    def handle(self, request: RecordedRequest) -> JsonResponse | None:
        if request.method == "POST" and request.route in _CHAT_ROUTES:
            return self._chat(request)
        if request.method == "GET" and request.route in _MODEL_ROUTES:
            return self._check_key(request) or JsonResponse(
                200,
                {
                    "object": "list",
                    "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "luminai-fake"}],
                },
            )
        return _error(404, f"Unknown request URL: {request.method} {request.route}", code="unknown_url")

    def _check_key(self, request: RecordedRequest) -> JsonResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401)
        return None

    def _next_reply(self, body: dict[str, Any]) -> ScriptedReply:
        with self._script_lock:
            if self._script:
                return self._script.popleft()
        responder = self.responder
        return responder(body) if responder is not None else default_reply(body)

    def _chat(self, request: RecordedRequest) -> JsonResponse | None:
        fault = self._take_fault()
        if fault is not None:
            if fault.kind == "drop":
                return None
            if fault.kind == "fail":
                return fault.response
            if not self.pause(fault.seconds):
                return None  # stopped while holding the request
        denied = self._check_key(request)
        if denied is not None:
            return denied
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array")
        if body.get("stream"):
            return _error(400, "FakeOpenAI does not implement streaming; call with stream=False")
        kind = (
            (body.get("response_format") or {}).get("type")
            if isinstance(body.get("response_format"), dict)
            else None
        )
        if kind == "json_schema" and self.structured_output == "json_object":
            # llama_cpp.server 0.3.x validates response_format.type with pydantic
            detail = "Input should be 'text' or 'json_object'"
            loc = "('body', 'response_format', 'type')"
            return _error(
                self.reject_status, f"[{{'type': 'literal_error', 'loc': {loc}, 'msg': \"{detail}\"}}]"
            )
        if kind is not None and self.structured_output == "tools":
            return _error(400, "response_format is not supported by this server")
        if self.structured_output == "ignored":
            body = {k: v for k, v in body.items() if k not in ("response_format", "tools", "tool_choice")}
        forced = (body.get("tool_choice") or {}) if isinstance(body.get("tool_choice"), dict) else {}
        reply = self._next_reply(body)
        if isinstance(reply, int):
            return _error(reply)
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish_reason = "stop"
        if isinstance(reply, str) and forced and reply.lstrip().startswith("{"):
            reply = json.loads(reply)
        if isinstance(reply, dict) and forced and "tool_call" not in reply:
            reply = {"tool_call": {"name": (forced.get("function") or {}).get("name"), "arguments": reply}}
        if isinstance(reply, dict) and "tool_call" in reply and body.get("tools"):
            call = reply["tool_call"]
            arguments = call.get("arguments", {})
            arguments_json = arguments if isinstance(arguments, str) else json.dumps(arguments)
            message["tool_calls"] = [
                {
                    "id": "call_" + secrets.token_hex(12),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": arguments_json},
                }
            ]
            finish_reason = "tool_calls"
            completion_tokens = _words(arguments_json) + 1
        else:
            content = reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
            message["content"] = content
            completion_tokens = _words(content)
        prompt_tokens = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        return JsonResponse(
            200,
            {
                "id": "chatcmpl-" + secrets.token_hex(12),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": None,
            },
        )
