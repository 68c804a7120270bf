"""run_ai_turn: the lead's unanswered messages of one talk become one TreeFlow step and one outbound reply.

Three short phases, so no database transaction stays open while the LLM thinks:
1. claim the talk (a lease on `talk.ai_lease_until`, taken with a conditional UPDATE, so two workers never run
   turns of one talk at once), read the pending inbound messages and build the context;
2. ask the brain for the reply, outside any transaction;
3. store the reply, mark exactly the messages it answered as processed, save the TalkFlow, release the lease.
Messages that arrive meanwhile stay pending and are answered by the next turn (`more_pending`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.ai.brain import Brain, HistoryLine, TurnContext
from luminai_actors.domain import treeflow
from luminai_actors.domain.ids import uuid7
from luminai_actors.persistence.tables import SEND_PENDING, Agent, Contact, Talk, TalkMessage, TreeFlow
from luminai_actors.persistence.uow import UnitOfWorkFactory

HISTORY_LIMIT = 20


def split_reply(text: str) -> list[str]:
    """Evolution bots' `splitMessages`: one WhatsApp message per blank-line-separated paragraph."""
    parts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    return parts or [text]


def typing_delay_ms(text: str, per_char_ms: float) -> int:
    """Evolution bots' `timePerChar`: 'composing' for len x per-char, clamped to 1-20 s."""
    return int(min(20_000, max(1_000, len(text) * per_char_ms)))


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    status: str  # "replied" | "nothing_pending" | "busy" | "paused" | "missing"
    reply_message_id: uuid.UUID | None = None
    more_pending: bool = False


@dataclass(frozen=True, slots=True)
class _Prepared:
    context: TurnContext
    new_state: dict[str, Any]
    consumed: list[uuid.UUID]
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    action: treeflow.NextAction
    channel_options: dict[str, Any]


def run_ai_turn(
    uow_factory: UnitOfWorkFactory,
    brain: Brain,
    talk_id: uuid.UUID,
    *,
    lease_seconds: float = 120.0,
    now: Callable[[], datetime] | None = None,
) -> TurnOutcome:
    clock = now or (lambda: datetime.now(UTC))
    prepared_or_outcome = _prepare(uow_factory, talk_id, clock(), lease_seconds)
    if isinstance(prepared_or_outcome, TurnOutcome):
        return prepared_or_outcome
    prepared = prepared_or_outcome
    try:
        reply = brain.compose(prepared.context)
    except BaseException:
        _release(uow_factory, talk_id)
        raise
    return _store(
        uow_factory,
        talk_id,
        prepared,
        reply_text=reply.text,
        ai_meta=_ai_metadata(brain, reply, prepared),
        at=clock(),
    )


def _prepare(
    uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, at: datetime, lease_seconds: float
) -> _Prepared | TurnOutcome:
    with uow_factory() as uow:
        talk = uow.repo.get(Talk, talk_id)
        if talk is None:
            return TurnOutcome("missing")
        if talk.paused:
            return TurnOutcome("paused")
        pending = uow.repo.pending_inbound(talk_id)
        if not pending:
            return TurnOutcome("nothing_pending")
        if not uow.repo.claim_ai_turn(talk_id, at, at + timedelta(seconds=lease_seconds)):
            return TurnOutcome("busy")
        agent = uow.repo.get(Agent, talk.agent_id) if talk.agent_id else None
        if agent is None:
            uow.rollback()
            return TurnOutcome("missing")
        tree_flow = uow.repo.get(TreeFlow, agent.tree_flow_id) if agent.tree_flow_id else None
        definition = tree_flow.definition if tree_flow else None
        contact = uow.repo.get(Contact, talk.contact_id)
        new_state, action = treeflow.advance(
            definition, talk.talk_flow, [(str(m.id), m.body) for m in pending], at.isoformat()
        )
        consumed_ids = {m.id for m in pending}
        history = [
            HistoryLine("lead" if m.direction == "inbound" else "agent", m.body)
            for m in uow.repo.recent_messages(talk_id, HISTORY_LIMIT)
            if m.body
        ]
        context = TurnContext(
            agent_name=agent.name,
            agent_prompt=agent.prompt or "",
            flow_name=(definition or {}).get("name") or (tree_flow.name if tree_flow else "conversation"),
            flow_objective=(definition or {}).get("objective"),
            action=action.kind,
            step_id=action.step["id"] if action.step else None,
            step_name=action.step.get("name") if action.step else None,
            step_objective=action.step.get("objective") if action.step else None,
            question=action.question,
            answers=dict(new_state.get("answers") or {}),
            history=history,
            new_messages=[m.body for m in pending if m.id in consumed_ids],
            lead_first_name=contact.first_name if contact else None,
            first_contact=action.first_contact,
            closing=(definition or {}).get("closing"),
        )
        uow.commit()
        return _Prepared(
            context,
            new_state,
            [m.id for m in pending],
            agent.id,
            agent.organization_id,
            action,
            dict(agent.whatsapp_metadata or {}),
        )


def _ai_metadata(brain: Brain, reply: Any, prepared: _Prepared) -> dict[str, Any]:
    return {
        "brain": brain.name,
        "model": reply.model,
        "usage": dict(reply.usage),
        "latencyMs": reply.latency_ms,
        "action": prepared.action.kind,
        "stepId": prepared.context.step_id,
        "answeredMessageIds": [str(i) for i in prepared.consumed],
    }


def _store(
    uow_factory: UnitOfWorkFactory,
    talk_id: uuid.UUID,
    prepared: _Prepared,
    *,
    reply_text: str,
    ai_meta: dict[str, Any],
    at: datetime,
) -> TurnOutcome:
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            return TurnOutcome("missing")
        if talk.paused:  # paused while the brain was thinking: a human owns the talk now
            talk.ai_lease_until = None
            uow.commit()
            return TurnOutcome("paused")
        for message_id in prepared.consumed:
            message = uow.repo.get(TalkMessage, message_id)
            if message is not None and message.processed_at is None:
                message.processed_at = at
        parts = split_reply(reply_text) if prepared.channel_options.get("splitMessages") else [reply_text]
        per_char = prepared.channel_options.get("timePerCharMs") or 0
        replies = []
        for index, part in enumerate(parts):
            meta: dict[str, Any] = {"ai": ai_meta}
            if len(parts) > 1:
                meta["part"] = {"index": index + 1, "of": len(parts)}
            if isinstance(per_char, int | float) and per_char > 0:
                meta["typingDelayMs"] = typing_delay_ms(part, per_char)
            reply = TalkMessage(
                id=uuid7(),
                organization_id=prepared.organization_id,
                talk_id=talk_id,
                agent_id=prepared.agent_id,
                from_agent_id=prepared.agent_id,
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
            uow.repo.add(reply)
            replies.append(reply)
        reply = replies[0]
        talk.talk_flow = prepared.new_state
        talk.ai_lease_until = None
        talk.date_last_message = at
        uow.commit()
        more = bool(uow.repo.pending_inbound(talk_id))
        return TurnOutcome("replied", reply.id, more)


def _release(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID) -> None:
    with uow_factory() as uow:
        uow.repo.release_ai_turn(talk_id)
        uow.commit()
