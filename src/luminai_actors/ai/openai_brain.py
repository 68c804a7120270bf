"""OpenAI-backed brain: the openai client against any OpenAI-compatible base URL writes the reply.

The system prompt carries the agent's prompt, the script's objective, the current step and its question, and
what was collected; the talk history follows as user/assistant turns. Failures become `BrainError` so the AI
actor's retry policy can handle them; token usage and latency are returned for the message's metadata.
"""

from __future__ import annotations

import json
import time

import openai

from luminai_actors.ai.brain import BrainReply, TurnContext
from luminai_actors.errors import BrainError


def build_system_prompt(context: TurnContext) -> str:
    parts = [context.agent_prompt.strip() or f"You are {context.agent_name}, a sales development rep."]
    parts.append(f"You follow the qualification script '{context.flow_name}'.")
    if context.flow_objective:
        parts.append(f"Script objective: {context.flow_objective}")
    if context.action == "ask":
        step = context.step_name or context.step_id
        parts.append(f"Current step: {step}.")
        if context.step_objective:
            parts.append(f"Step objective: {context.step_objective}")
        parts.append(f"In this reply, ask the lead: {context.question}")
    else:
        parts.append("The script is complete: thank the lead and say the team will follow up.")
    if context.answers:
        collected = {key: value.get("value") for key, value in context.answers.items()}
        parts.append("Collected so far: " + json.dumps(collected, ensure_ascii=False))
    parts.append("Write one short WhatsApp message in the lead's language. Do not invent facts.")
    return "\n".join(parts)


class OpenAIBrain:
    name = "openai"

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    def compose(self, context: TurnContext) -> BrainReply:
        messages: list[dict[str, str]] = [{"role": "system", "content": build_system_prompt(context)}]
        for line in context.history:
            messages.append({"role": "user" if line.role == "lead" else "assistant", "content": line.text})
        started = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]  # plain dicts are the documented wire shape
            )
        except openai.OpenAIError as exc:
            raise BrainError(f"LLM request failed: {type(exc).__name__}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if not completion.choices or not (completion.choices[0].message.content or "").strip():
            raise BrainError("LLM returned an empty reply")
        usage = completion.usage
        return BrainReply(
            text=(completion.choices[0].message.content or "").strip(),
            model=completion.model or self._model,
            usage={
                "promptTokens": usage.prompt_tokens if usage else 0,
                "completionTokens": usage.completion_tokens if usage else 0,
                "totalTokens": usage.total_tokens if usage else 0,
            },
            latency_ms=round(latency_ms, 1),
        )
