"""The brain interface and the offline deterministic brain.

A brain gets a `TurnContext` (agent prompt, script, current step and question, answers so far, recent history,
the lead's new messages) and returns one reply. It decides nothing about the flow: `domain.treeflow` does.
The offline brain needs no network and always answers the same way for the same context, so the whole
service and its tests run without an LLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class HistoryLine:
    role: str  # "lead" | "agent"
    text: str


@dataclass(frozen=True, slots=True)
class TurnContext:
    agent_name: str
    agent_prompt: str
    flow_name: str
    flow_objective: str | None
    action: str  # "ask" | "close"
    step_id: str | None
    step_name: str | None
    step_objective: str | None
    question: str | None
    answers: dict[str, Any]
    history: list[HistoryLine]
    new_messages: list[str]
    lead_first_name: str | None
    first_contact: bool
    closing: str | None = None


@dataclass(frozen=True, slots=True)
class BrainReply:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0


class Brain(Protocol):
    name: str

    def compose(self, context: TurnContext) -> BrainReply: ...


DEFAULT_CLOSING = "Thank you! I have everything I need. Someone from our team will get back to you soon."


class OfflineBrain:
    """Replies with the step's question (with a greeting on first contact) or the script's closing line."""

    name = "offline"

    def compose(self, context: TurnContext) -> BrainReply:
        if context.action == "close":
            text = context.closing or DEFAULT_CLOSING
        else:
            text = context.question or ""
            if context.first_contact:
                who = f" {context.lead_first_name}" if context.lead_first_name else ""
                text = f"Hi{who}! I'm {context.agent_name}. {text}"
        return BrainReply(text=text.strip(), model="offline")
