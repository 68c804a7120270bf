"""A turn's reply as it is stored: checked (`unsafe_reply`), split into WhatsApp messages, with a typing
delay, and the brain's usage.

Evolution's bots' options, per agent (`whatsapp.metadata`): `splitMessages` (one message per paragraph,
`split_reply`) and `timePerCharMs` (a 'composing' delay per part, `typing_delay_ms`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from luminai_actors.ai.brain import Brain, BrainReply, Extraction, OfflineBrain, TurnContext
from luminai_actors.domain.fields import fold
from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.language import guess
from luminai_actors.persistence.tables import SEND_PENDING, TalkMessage

MAX_REPLY_CHARS = 1000
_PLACEHOLDER = re.compile(r"\[[^\]\n]{2,40}\]|\{\{[^}]*\}\}|<[A-Za-z_ ]{2,30}>")
_BACKSTAGE = re.compile(
    r"\b(script|roteiro|system prompt|prompt do sistema|treeflow|as an ai|como uma ia)\b", re.I
)


def unsafe_reply(text: str) -> str | None:
    """Why a model's reply must not reach the lead as it is, or None: a template placeholder ("[Your Name]",
    "{{name}}"), JSON or a code fence, talk of the script or the prompt, or more than `MAX_REPLY_CHARS`."""
    stripped = text.strip()
    if len(stripped) > MAX_REPLY_CHARS:
        return f"longer than {MAX_REPLY_CHARS} characters"
    if stripped.startswith(("{", "[", "```")):
        return "JSON or code instead of a message"
    found = _PLACEHOLDER.search(stripped)
    if found:
        return f"template placeholder {found.group(0)!r}"
    found = _BACKSTAGE.search(stripped)
    if found:
        return f"speaks of {found.group(0)!r}"
    return None


_FILLER_WORDS = (
    "qual quais quanto quanta quantos quantas voce voces vamos pode podemos podem para como esta isso "
    "what which your with have does this that there would could about from when where will shall "
    "cual cuales cuanto cuantos usted tiene puede"
)
_FILLER = frozenset(_FILLER_WORDS.split(" "))


def asks_for(text: str, question: str | None, label: str | None) -> bool:
    """Whether a reply asks what the step asks: one of the question's (or the field's) own words appears in
    it ("Pode me passar seu email?" asks "Qual é o seu e-mail?"). A small model's "How can I help you?"
    does not; then the step's question is sent as the script writes it."""
    keys = {
        word
        for word in re.findall(r"[a-z0-9]+", fold(f"{question or ''} {label or ''}").replace("-", ""))
        if len(word) >= 4 and word not in _FILLER
    }
    words = set(re.findall(r"[a-z0-9]+", fold(text).replace("-", "")))
    return not keys or bool(keys & words)


def _unfit(text: str, context: TurnContext) -> str | None:
    unsafe = unsafe_reply(text)
    # Words are compared in the script's own language only: a reply written in another language (the
    # lead's) cannot be checked this way.
    languages = {guess([text]), guess(context.new_messages)} - {None}
    checkable = context.action == "ask" and languages <= {context.language}
    if unsafe is None and checkable and not asks_for(text, context.question, context.asked_label):
        return "does not ask the step's question"
    return unsafe


def written_reply(brain: Brain, context: TurnContext, verbatim: str | None) -> BrainReply:
    """The turn's reply: `verbatim` as written when given; else the brain's. A reply `unsafe_reply` finds
    unfit is asked for once more, with the reason; if that one is unfit too, the step's question as the
    script writes it (the offline brain's words) goes out instead."""
    if verbatim:
        return BrainReply(verbatim, model="verbatim")
    reply = brain.compose(context)
    unsafe = _unfit(reply.text, context)
    if unsafe is None:
        return reply
    offline = isinstance(brain, OfflineBrain)
    retry = None if offline else brain.compose(replace(context, correction=unsafe))
    usage = _added(reply.usage, retry.usage if retry else {})
    latency = reply.latency_ms + (retry.latency_ms if retry else 0.0)
    if retry is not None and _unfit(retry.text, context) is None:
        return BrainReply(retry.text, retry.model, usage, latency, corrected=unsafe)
    fallback = OfflineBrain().compose(context).text
    return BrainReply(fallback, f"script (model reply {unsafe})", usage, latency, corrected=unsafe)


def turn_reply(
    brain: Brain, context: TurnContext, extraction: Extraction | None, guessed: bool, verbatim: str | None
) -> BrainReply:
    """The turn's reply: `acknowledged_reply` when the extraction carried an acknowledgement for a question
    (the turn's one LLM call), else `written_reply`."""
    if context.action == "ask" and extraction is not None and extraction.ack is not None:
        return acknowledged_reply(context, extraction, guessed)
    return written_reply(brain, context, verbatim)


def acknowledged_reply(context: TurnContext, extraction: Extraction, guessed: bool) -> BrainReply:
    """The reply of a one-call turn: the model's acknowledgement (`Extraction.ack`) followed by what the
    script says next as it is written (the step's question; the greeting on first contact, the reason a
    value was refused). The acknowledgement is left out when it is unfit (`unsafe_reply`), asks or promises
    something (a "?"), is long, or when the model read values the lead did not write (`guessed`): it would
    thank them for those. Usage is the extraction's (no second call)."""
    ack = (extraction.ack or "").strip()
    refused = any(name in context.missing_fields for name in context.invalid_fields)
    usable = (
        ack
        and not (context.first_contact or refused or guessed)
        and "?" not in ack
        and len(re.findall(r"[^\W\d_]{2,}", ack)) >= 2  # words, not a value echoed ("1-10")
        and len(ack) <= 200
        and unsafe_reply(ack) is None
    )
    scripted = OfflineBrain().compose(context).text
    return BrainReply(f"{ack} {scripted}" if usable else scripted, f"{extraction.model} (one call)")


def _added(*usages: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in usages:
        for key, value in usage.items():
            total[key] = total.get(key, 0) + value
    return total


def split_reply(text: str) -> list[str]:
    """Evolution bots' `splitMessages`: one WhatsApp message per blank-line-separated paragraph."""
    parts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    return parts or [text]


def typing_delay_ms(text: str, per_char_ms: float) -> int:
    """Evolution bots' `timePerChar`: 'composing' for len x per-char, clamped to 1-20 s."""
    return int(min(20_000, max(1_000, len(text) * per_char_ms)))


def usage_meta(brain: Brain, reply: BrainReply | None, extraction: Extraction | None) -> dict[str, Any]:
    meta = {
        "brain": brain.name,
        "model": (reply.model if reply else None) or (extraction.model if extraction else brain.name),
        "usage": _added(extraction.usage if extraction else {}, reply.usage if reply else {}),
        "latencyMs": round(
            (reply.latency_ms if reply else 0) + (extraction.latency_ms if extraction else 0), 1
        ),
        "extraction": dict(extraction.values) if extraction else {},
    }
    if reply is not None and reply.corrected:
        meta["replyCorrected"] = reply.corrected
    return meta


def reply_rows(
    organization_id: uuid.UUID,
    talk_id: uuid.UUID,
    agent_id: uuid.UUID,
    parts: list[str],
    turn_meta: dict[str, Any],
    per_char: Any,
    at: datetime,
) -> list[TalkMessage]:
    """The reply's messages, one per part, pending to be sent in order; `per_char` is the agent's
    `timePerCharMs` (a typing delay per part when it is a positive number)."""
    replies = []
    for index, part in enumerate(parts):
        meta: dict[str, Any] = dict(turn_meta)
        if len(parts) > 1:
            meta["part"] = {"index": index + 1, "of": len(parts)}
        if isinstance(per_char, int | float) and per_char > 0:
            meta["typingDelayMs"] = typing_delay_ms(part, per_char)
        replies.append(
            TalkMessage(
                id=uuid7(),
                organization_id=organization_id,
                talk_id=talk_id,
                agent_id=agent_id,
                from_agent_id=agent_id,
                direction="outbound",
                channel="whatsapp",
                body=part,
                message_type="text",
                meta=meta,
                send_status=SEND_PENDING,
                send_attempts=0,
                # Parts keep their order through created_at, which orders the sender.
                created_at=at + timedelta(microseconds=index),
            )
        )
    return replies
