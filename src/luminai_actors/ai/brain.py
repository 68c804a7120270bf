"""The brain interface and the offline deterministic brain.

A brain does two things per turn: `extract` the values the script asks for from the lead's new messages,
and `compose` the reply for the `TurnContext` (agent prompt, script objective, current step, the question,
missing and refused fields, collected values, recent history). Asked to `acknowledge`, `extract` also
writes a short reaction to the lead's words in the same call: the reply is then that reaction and the
step's question as the script writes it (one call per turn, `reply_parts.acknowledged_reply`). A brain
decides nothing about the flow: `domain.talkflow` does. The offline brain needs no network and answers the
same way for the same input, so the whole service and its tests run without an LLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from luminai_actors.domain.fields import Language, extract_offline
from luminai_actors.domain.language import GREETING, SORRY, closing
from luminai_actors.domain.optout import is_opt_out


@dataclass(frozen=True, slots=True)
class HistoryLine:
    role: str  # "lead" | "agent"
    text: str


@dataclass(frozen=True, slots=True)
class ExtractionRequest:
    fields: list[dict[str, Any]]
    messages: list[str]
    asked_field: str | None
    region: str | None
    last_question: str | None = None
    persona: str | None = None  # the agent's prompt, for the acknowledgement
    acknowledge: bool = False  # also write `Extraction.ack` in the same call (one call per turn)


@dataclass(frozen=True, slots=True)
class Extraction:
    values: dict[str, Any]
    opt_out: bool = False
    model: str = "offline"
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0
    ack: str | None = None  # a short reaction to the lead's words, written in the same call; None: not asked


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
    missing_fields: list[str] = field(default_factory=list)
    invalid_fields: dict[str, str] = field(default_factory=dict)
    outcome: str | None = None
    language: Language = "en"  # of what the service writes itself (`domain.language`)
    correction: str | None = None  # why the brain's previous reply for this turn was unfit, for its retry
    asked_label: str | None = None  # the asked field's description (or name), to check the reply asks it


@dataclass(frozen=True, slots=True)
class BrainReply:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0
    corrected: str | None = None  # the first reply was unfit for this reason; this is the retry's


class Brain(Protocol):
    name: str

    def extract(self, request: ExtractionRequest) -> Extraction: ...
    def compose(self, context: TurnContext) -> BrainReply: ...


class OfflineBrain:
    """Patterns and phonenumbers for extraction; the step's questions (greeting first) for the reply."""

    name = "offline"

    def extract(self, request: ExtractionRequest) -> Extraction:
        # One burst is one answer: "Maria" + "Souza" is the name "Maria\nSouza"; patterns (emails, phones)
        # are found anywhere in it.
        joined = "\n".join(request.messages)
        values = extract_offline(request.fields, joined, asked=request.asked_field, region=request.region)
        return Extraction(values, opt_out=any(is_opt_out(text) for text in request.messages))

    def compose(self, context: TurnContext) -> BrainReply:
        language = context.language
        if context.action == "close":
            text = context.closing or closing(context.outcome, language) or ""
        else:
            text = context.question or ""
            refused = [
                error for name, error in context.invalid_fields.items() if name in context.missing_fields
            ]
            if refused:
                text = f"{SORRY[language].format(error=refused[0])} {text}"
            if context.first_contact:
                who = f" {context.lead_first_name}" if context.lead_first_name else ""
                text = f"{GREETING[language].format(who=who, agent=context.agent_name)} {text}"
        return BrainReply(text=text.strip(), model="offline")
