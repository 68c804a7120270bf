"""OpenAI-backed brain: the openai client against any OpenAI-compatible base URL.

Extraction asks the model for the script's fields with a strict JSON schema (structured output), one
property per field (null when the lead did not say it) plus `optOut`; values are validated afterwards by
`domain.fields`, never trusted as given. The reply is written from a system prompt carrying the agent's
prompt, the script's objective, the current step and its question, what is missing or was refused, and what
was collected, followed by the talk history as user/assistant turns. Failures become `BrainError` so the AI
actor's retry policy handles them; usage and latency are returned for the message's metadata.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai

from luminai_actors.ai.brain import BrainReply, Extraction, ExtractionRequest, TurnContext
from luminai_actors.errors import BrainError

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
    parts.append("Write one short WhatsApp message in the lead's language. Do not invent facts.")
    return "\n".join(parts)


def _usage(completion: Any) -> dict[str, int]:
    usage = completion.usage
    return {
        "promptTokens": usage.prompt_tokens if usage else 0,
        "completionTokens": usage.completion_tokens if usage else 0,
        "totalTokens": usage.total_tokens if usage else 0,
    }


class OpenAIBrain:
    name = "openai"

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    def _chat(self, messages: list[dict[str, str]], **options: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]  # plain dicts are the documented wire shape
                **options,
            )
        except openai.OpenAIError as exc:
            raise BrainError(f"LLM request failed: {type(exc).__name__}: {exc}") from exc
        if not completion.choices:
            raise BrainError("LLM returned no choices")
        return completion, round((time.perf_counter() - started) * 1000, 1)

    def extract(self, request: ExtractionRequest) -> Extraction:
        if not request.messages:
            return Extraction({}, model=self._model)
        system = (
            "Extract the values the lead states in their messages. Use null for anything not stated; "
            "never guess. optOut is true only for a clear request to stop receiving messages."
        )
        if request.last_question:
            system += f"\nThe lead is answering: {request.last_question}"
        completion, latency = self._chat(
            [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(request.messages)}],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "lead_fields",
                    "strict": True,
                    "schema": extraction_schema(request.fields),
                },
            },
        )
        try:
            data = json.loads(completion.choices[0].message.content or "")
        except ValueError as exc:
            raise BrainError("LLM extraction is not JSON") from exc
        if not isinstance(data, dict):
            raise BrainError("LLM extraction is not a JSON object")
        known = {spec["name"] for spec in request.fields}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        return Extraction(
            values,
            opt_out=data.get("optOut") is True,
            model=completion.model or self._model,
            usage=_usage(completion),
            latency_ms=latency,
        )

    def compose(self, context: TurnContext) -> BrainReply:
        messages: list[dict[str, str]] = [{"role": "system", "content": build_system_prompt(context)}]
        for line in context.history:
            messages.append({"role": "user" if line.role == "lead" else "assistant", "content": line.text})
        completion, latency = self._chat(messages)
        text = (completion.choices[0].message.content or "").strip()
        if not text:
            raise BrainError("LLM returned an empty reply")
        return BrainReply(
            text=text, model=completion.model or self._model, usage=_usage(completion), latency_ms=latency
        )
