"""OpenAI-backed brain: the openai client against any OpenAI-compatible base URL.

Extraction asks the model for the script's fields with a strict JSON schema (structured output), one
property per field (null when the lead did not say it) plus `optOut`; values are validated afterwards by
`domain.fields`, never trusted as given. Servers that refuse or ignore json_schema get the next
`STRUCTURED_MODES`; when extraction fails in every mode the offline extractor fills in, so the lead still gets
a reply. The reply is written from a system prompt carrying the agent's
prompt, the script's objective, the current step and its question, what is missing or was refused, and what
was collected, followed by the talk history as user/assistant turns. Failures become `BrainError` so the AI
actor's retry policy handles them; usage and latency are returned for the message's metadata.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from luminai_actors.ai.brain import (
    BrainReply,
    Extraction,
    ExtractionRequest,
    HistoryLine,
    OfflineBrain,
    TurnContext,
)
from luminai_actors.errors import BrainError

if TYPE_CHECKING:  # imported when a client is made: the openai package takes about 0.9 s to import, paid
    import openai  # by every `serve` and `worker` start (and each e2e test's two) even with the offline brain

_JSON_TYPES = {"number": "number", "boolean": "boolean"}


def extraction_schema(fields: list[dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for spec in fields:
        prop: dict[str, Any] = {"type": [_JSON_TYPES.get(spec.get("type", "text"), "string"), "null"]}
        description = spec.get("description") or spec["name"].replace("_", " ")
        prop["description"] = f"{description} ({spec.get('type', 'text')})"
        if spec.get("type") == "enum":
            prop["enum"] = [*spec["values"], None]
        properties[spec["name"]] = prop
    properties["optOut"] = {
        "type": "boolean",
        "description": "true only when the lead clearly asks to stop receiving messages",
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def build_system_prompt(context: TurnContext) -> str:
    parts = [context.agent_prompt.strip() or f"You are {context.agent_name}, a sales development rep."]
    parts.append(f"You follow the qualification script '{context.flow_name}'.")
    if context.flow_objective:
        parts.append(f"Script objective: {context.flow_objective}")
    if context.action == "ask":
        parts.append(f"Current step: {context.step_name or context.step_id}.")
        if context.step_objective:
            parts.append(f"Step objective: {context.step_objective}")
        if context.missing_fields:
            parts.append("Still missing: " + ", ".join(context.missing_fields) + ".")
        for name, error in context.invalid_fields.items():
            parts.append(f"The lead's {name} was not valid ({error}); ask for it again politely.")
        parts.append(f"In this reply, ask the lead: {context.question}")
    else:
        parts.append(f"The script is complete (outcome: {context.outcome}). Close with: {context.closing}")
    if context.answers:
        collected = {key: value.get("value") for key, value in context.answers.items()}
        parts.append("Collected so far: " + json.dumps(collected, ensure_ascii=False))
    parts.append(
        "Write one short WhatsApp message in the lead's language, ready to send: no placeholders, no JSON, "
        "no talk of scripts or instructions. Do not invent facts about the company or its offer."
    )
    if context.correction:
        parts.append(
            f"Your previous answer could not be sent ({context.correction}). Write it again, and ask "
            f"exactly this: {context.question}"
            if context.action == "ask"
            else f"Your previous answer could not be sent ({context.correction}). Write it again."
        )
    return "\n".join(parts)


def _usage(completion: Any) -> dict[str, int]:
    usage = completion.usage
    return {
        "promptTokens": usage.prompt_tokens if usage else 0,
        "completionTokens": usage.completion_tokens if usage else 0,
        "totalTokens": usage.total_tokens if usage else 0,
    }


STRUCTURED_MODES = ("json_schema", "json_object", "tools", "prompt")
"""How extraction asks for JSON, best first: OpenAI's strict `json_schema`; `json_object` (llama.cpp and other
servers that refuse json_schema) with the schema in the prompt and in llama.cpp's `schema` extension of
`response_format` (a grammar there; ignored elsewhere); a forced tool call (`tools` + `tool_choice`) whose
arguments are the JSON; no option at all, with JSON instructions in the prompt and the answer validated."""

_UNSUPPORTED = re.compile(
    r"response_format|json_schema|json_object|tool|input should be|not supported|unsupported", re.I
)
_TOOL = "record_lead_fields"
_ACK = (
    "one short friendly sentence (at most 15 words) reacting to what the lead wrote, in the lead's "
    "language; no question, no promise, no facts about the company"
)
EXTRACT_MAX_TOKENS, REPLY_MAX_TOKENS = 200, 250
NO_JSON_STRIKES = 3
"""Answers in a row that are not JSON after which a structured mode is given up for the server."""
PROMPT_TOKEN_BUDGET = 1500
"""A reply's prompt is kept under about this many tokens (estimated as characters / 4): the oldest history
goes first, as a small local server's time per turn grows with the prompt."""


class _Unsupported(Exception):
    """The server refused a request option (a capability answer, not a transient error)."""


class _NoJson(BrainError):
    """The server answered, in every structured mode, with something that is not a JSON object."""


def connect(
    api_key: str,
    base_url: str | None,
    model: str,
    *,
    timeout: float,
    one_call: bool = True,
    http_client: httpx.Client | None = None,
) -> OpenAIBrain:
    """An OpenAIBrain on its own openai client; `http_client` carries a guarded transport for a URL a tenant
    set (`outbound_address.guarded_client`)."""
    import openai

    client = openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=0,  # retries belong to the AI actor, with backoff and a final hand-off
        # openai 3 is typed for httpx2 but takes an httpx.Client as documented (is_legacy_httpx_sync_client)
        http_client=http_client,  # type: ignore[arg-type]
    )
    return OpenAIBrain(client, model, one_call=one_call)


class OpenAIBrain:
    """See the module docstring. One instance serves one base URL and model, so the structured-output mode
    it found (`STRUCTURED_MODES`) is remembered for every later turn: a server that refuses json_schema costs
    one refused call per process, never a turn's retries."""

    name = "openai"

    def __init__(self, client: openai.OpenAI, model: str, *, one_call: bool = True) -> None:
        self._client = client
        self._one_call = one_call
        self._model = model
        self._mode = 0  # index in STRUCTURED_MODES
        self._misses = [0] * len(STRUCTURED_MODES)  # answers in a row that were not JSON, per mode
        self.calls = 0  # chat calls made, for the brain eval's calls per turn
        self._lock = threading.Lock()
        self._offline = OfflineBrain()

    def close(self) -> None:
        """Close the client's connections (an organization's brain that is dropped or shut down)."""
        self._client.close()

    @property
    def structured_mode(self) -> str:
        return STRUCTURED_MODES[self._mode]

    def _chat(self, messages: list[dict[str, str]], **options: Any) -> tuple[Any, str, float]:
        """(completion, its text, latency ms); every failure is a BrainError (a failed attempt of the turn),
        and a refused option is `_Unsupported`."""
        with self._lock:
            self.calls += 1
        started = time.perf_counter()
        import openai  # loaded by `connect` already

        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]  # plain dicts are the documented wire shape
                **options,
            )
        except openai.APIStatusError as exc:
            if (
                ("response_format" in options or "tools" in options)
                and exc.status_code in (400, 422, 500, 501)
                and _UNSUPPORTED.search(str(exc))
            ):
                raise _Unsupported(str(exc)) from exc
            raise BrainError(f"LLM request failed: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # the client's own errors and anything else: never an unhandled crash
            raise BrainError(f"LLM request failed: {type(exc).__name__}: {exc}") from exc
        try:
            message = completion.choices[0].message
            content = message.content
            if not content and message.tool_calls:  # a forced tool call: its arguments are the answer
                content = getattr(getattr(message.tool_calls[0], "function", None), "arguments", None)
        except (AttributeError, IndexError, TypeError) as exc:
            raise BrainError("LLM answer is not a chat completion (no choices[0].message)") from exc
        return (
            completion,
            content if isinstance(content, str) else "",
            round((time.perf_counter() - started) * 1000, 1),
        )

    def extract(self, request: ExtractionRequest) -> Extraction:
        """The LLM's extraction; when the server answers but never with JSON, the offline extractor's (the
        turn still gets its reply). A server that fails (5xx, timeout) fails the turn's attempt instead."""
        if not request.messages:
            return Extraction({}, model=self._model)
        try:
            return self._extract(request)
        except _NoJson as exc:
            offline = self._offline.extract(request)
            return Extraction(offline.values, opt_out=offline.opt_out, model=f"offline ({str(exc)[:200]})")

    def _extract(self, request: ExtractionRequest) -> Extraction:
        schema = extraction_schema(request.fields)
        system = (
            "Extract the values the lead states in their messages. Use null for anything not stated; "
            "never guess. optOut is true only for a clear request to stop receiving messages."
        )
        acknowledge = request.acknowledge and self._one_call
        if acknowledge:
            schema["properties"]["ack"] = {"type": "string", "description": _ACK}
            schema["required"].append("ack")
            persona = (request.persona or "").strip().splitlines()
            system = (persona[0] + "\n" if persona else "") + system + "\nack: " + _ACK
        if request.last_question:
            system += f"\nThe lead is answering: {request.last_question}"
        mode = self._mode
        while True:
            options: dict[str, Any] = {"max_tokens": EXTRACT_MAX_TOKENS, "temperature": 0}
            prompt = system
            kind = STRUCTURED_MODES[mode]
            if kind == "json_schema":
                options["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "lead_fields", "strict": True, "schema": schema},
                }
            elif kind == "tools":
                options["tools"] = [{"type": "function", "function": {"name": _TOOL, "parameters": schema}}]
                options["tool_choice"] = {"type": "function", "function": {"name": _TOOL}}
            else:
                prompt += "\nAnswer with one JSON object only, matching this JSON schema:\n" + json.dumps(
                    schema
                )
                if kind == "json_object":
                    options["response_format"] = {"type": "json_object", "schema": schema}
            messages = [
                {"role": "system", "content": prompt},
                {"role": "user", "content": "\n".join(request.messages)},
            ]
            try:
                completion, content, latency = self._chat(messages, **options)
                data = _json_object(content)
                # prose: the server ignored the option; a broken object (cut by max_tokens): a slip
                refused = data is None and not content.lstrip().startswith("{")
            except _Unsupported:
                data, completion, refused = None, None, True
            if data is not None:
                self._misses[mode] = 0
                break
            next_mode = self._next_mode(mode, refused=refused)
            if next_mode is None:
                raise _NoJson("LLM extraction is not a JSON object in any structured-output mode")
            mode = next_mode
        known = {spec["name"] for spec in request.fields}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        ack = data.get("ack") if isinstance(data.get("ack"), str) else ""
        return Extraction(
            values,
            opt_out=data.get("optOut") is True,
            model=completion.model or self._model,
            usage=_usage(completion),
            latency_ms=latency,
            ack=ack if acknowledge else None,
        )

    def _next_mode(self, mode: int, *, refused: bool) -> int | None:
        """The mode to try after `mode` failed, or None when none is left. A refused option, or prose where
        JSON was asked for, is a capability answer, remembered at once; a broken JSON object (a small model's
        slip, an answer cut by `max_tokens`) moves only this request on, until `NO_JSON_STRIKES` in a row say
        the mode does not work on this server."""
        with self._lock:
            if not refused:
                self._misses[mode] += 1
            if refused or self._misses[mode] >= NO_JSON_STRIKES:
                self._mode = max(self._mode, min(mode + 1, len(STRUCTURED_MODES) - 1))
        return mode + 1 if mode + 1 < len(STRUCTURED_MODES) else None

    def compose(self, context: TurnContext) -> BrainReply:
        system = build_system_prompt(context)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        for line in bounded_history(context.history, PROMPT_TOKEN_BUDGET * 4 - len(system)):
            messages.append({"role": "user" if line.role == "lead" else "assistant", "content": line.text})
        completion, content, latency = self._chat(messages, max_tokens=REPLY_MAX_TOKENS, temperature=0.3)
        text = content.strip()
        if not text:
            raise BrainError("LLM returned an empty reply")
        return BrainReply(
            text=text, model=completion.model or self._model, usage=_usage(completion), latency_ms=latency
        )


def bounded_history(history: list[HistoryLine], budget_chars: int) -> list[HistoryLine]:
    """The newest lines of `history` that fit in `budget_chars` (the newest one always, cut to fit), starting
    with a lead's message: a chat that opens with the assistant's own words confuses small models."""
    kept: list[HistoryLine] = []
    used = 0
    for line in reversed(history):
        if kept and used + len(line.text) > budget_chars:
            break
        kept.append(line if kept else HistoryLine(line.role, line.text[-max(budget_chars, 200) :]))
        used += len(line.text)
    kept.reverse()
    while len(kept) > 1 and kept[0].role != "lead":
        kept.pop(0)
    return kept


def _json_object(content: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer (alone, or the first {...} in prose or a code fence)."""
    text = content.strip()
    for candidate in (text, text[text.find("{") : text.rfind("}") + 1] if "{" in text else ""):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None
