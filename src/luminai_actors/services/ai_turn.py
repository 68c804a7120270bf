"""run_ai_turn: the lead's unanswered messages of one talk become one TreeFlow step and one reply.

Phases, so that no database transaction stays open while an LLM thinks:
1. `_prepare` (one transaction): claim the talk (a lease on `talk.ai_lease_until` taken with a conditional
   UPDATE, so two workers never run turns of one talk at once) and read its TalkFlow, context and recent
   history in the same statement (`Repository.claim_turn`); when the history holds the whole talk (fewer than
   `HISTORY_LIMIT` messages) the pending inbound messages are taken from it instead of a second query. With
   nothing pending, or a burst still arriving (debounce), the transaction is rolled back: no lease is kept.
   When the one-statement claim does not apply (talk missing or paused, lease taken, agent missing, or a
   database without it) `_prepare_general` decides with ORM reads in the order that names the outcome;
2. outside any transaction: opt-out check, `brain.extract` (fields of the script), `talkflow.advance`
   (deterministic step logic), `brain.compose` (the reply);
3. `_store` (one transaction, `Repository.finish_turn`): save the TalkFlow, apply hand-off, release the
   lease (one UPDATE of the talk, only if it is not paused; a talk paused meanwhile keeps no lease and gets
   no reply), apply opt-out, mark exactly the messages it answered as processed (one UPDATE of those still
   pending), write the reply (split into parts when the agent wants it).
Messages that arrive meanwhile stay pending and are answered by the next turn (`more_pending`), looked for
after `_store`'s commit: a message committed before that commit whose own turn found the lease taken and
stood down would otherwise wait for the recovery sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.ai.brain import Brain, HistoryLine, TurnContext
from luminai_actors.domain import talkflow
from luminai_actors.domain.fields import Language, region_of
from luminai_actors.domain.language import OPT_OUT_CONFIRMATION, agent_language, guess, handoff_message
from luminai_actors.domain.treeflow import normalize_definition, step_by_id
from luminai_actors.persistence.hot_path import ClaimedTurn, MessageView
from luminai_actors.persistence.tables import Agent, Contact, Talk, TreeFlow
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory
from luminai_actors.services.reply_parts import reply_rows, split_reply, turn_reply, usage_meta
from luminai_actors.services.understanding import understand

HISTORY_LIMIT = 20
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    status: str  # "replied" | "silent" | "nothing_pending" | "busy" | "paused" | "missing" | "debounce"
    reply_message_id: uuid.UUID | None = None
    more_pending: bool = False
    delay: float = 0.0  # for "debounce": seconds until the burst may be answered


@dataclass(slots=True)
class _Prepared:
    talk_id: uuid.UUID
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    agent_name: str
    agent_prompt: str
    channel_options: dict[str, Any]
    definition: dict[str, Any]
    state: dict[str, Any] | None
    pending: list[tuple[uuid.UUID, str]]
    history: list[HistoryLine]
    lead_first_name: str | None
    region: str | None
    language: Language
    opted_out: bool
    tree_flow_name: str | None
    suppressed: bool = False  # the contact's number is on the suppression list (`services.privacy`)


@dataclass(slots=True)
class _Decision:
    replies: list[str] = field(default_factory=list)
    new_state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    opt_out: bool = False
    handoff: str | None = None


def run_ai_turn(
    uow_factory: UnitOfWorkFactory,
    brain: Brain,
    talk_id: uuid.UUID,
    *,
    lease_seconds: float = 120.0,
    debounce_seconds: float = 0.0,
    now: Callable[[], datetime] | None = None,
    on_reply: Callable[[uuid.UUID], None] | None = None,
    claim_reply: Callable[[UnitOfWork, uuid.UUID], None] | None = None,
    suppressed: Callable[[UnitOfWork, uuid.UUID], bool] | None = None,
    brain_of: Callable[[uuid.UUID], Brain] | None = None,
) -> TurnOutcome:
    """One turn. `on_reply(first reply id)` is called as soon as the reply is committed (before the read
    for messages that arrived meanwhile), so its send can start while the turn finishes. `claim_reply(uow,
    first reply id)` runs inside the transaction that stores the reply, before its commit (the worker
    records the first send attempt there, saving that attempt a transaction of its own). `suppressed(uow,
    talk id)`, asked in the claim's transaction, is True when the talk's contact is on the suppression list
    (`privacy.SuppressionList.talk_is_suppressed`): the turn then replies nothing and opts the contact out.
    `brain_of(organization id)` picks the organization's own LLM (`organization_llm`); else `brain`."""
    clock = now or (lambda: datetime.now(UTC))
    prepared = _prepare(uow_factory, talk_id, clock(), lease_seconds, debounce_seconds, suppressed)
    if isinstance(prepared, TurnOutcome):
        return prepared
    try:
        chosen = brain_of(prepared.organization_id) if brain_of is not None else brain
        decision = _decide(chosen, prepared, clock())
    except BaseException:
        _release(uow_factory, talk_id)
        raise
    return _store(uow_factory, prepared, decision, clock(), on_reply, claim_reply)


def _prepare(
    uow_factory: UnitOfWorkFactory,
    talk_id: uuid.UUID,
    at: datetime,
    lease_seconds: float,
    debounce: float,
    suppressed: Callable[[UnitOfWork, uuid.UUID], bool] | None = None,
) -> _Prepared | TurnOutcome:
    until = at + timedelta(seconds=lease_seconds)
    with uow_factory() as uow:
        claim = uow.repo.claim_turn(talk_id, at, until, HISTORY_LIMIT)
        if claim is None:  # not claimable in one statement (or not on this database): find out why
            return _screened(uow, _prepare_general(uow, talk_id, at, until, debounce), suppressed)
        claimed, recent = claim
        pending = _pending_among(recent) if len(recent) < HISTORY_LIMIT else uow.repo.pending_views(talk_id)
        not_yet = _not_yet(pending, at, debounce)
        if not_yet is not None:
            uow.rollback()  # gives the lease back: nothing was written
            return not_yet
        definition = _followed_definition(uow, claimed)
        prepared = _screened(uow, _prepared(talk_id, claimed, recent, pending, definition), suppressed)
        uow.commit()
        return prepared


def _screened(
    uow: UnitOfWork,
    prepared: _Prepared | TurnOutcome,
    suppressed: Callable[[UnitOfWork, uuid.UUID], bool] | None,
) -> _Prepared | TurnOutcome:
    """The one place the suppression list is applied: a suppressed contact is treated as opted out (no
    reply), and the turn's store opts the contact out, so its later turns need not ask again."""
    if (
        isinstance(prepared, _Prepared)
        and not prepared.opted_out
        and suppressed is not None
        and suppressed(uow, prepared.talk_id)
    ):
        prepared.opted_out = prepared.suppressed = True
    return prepared


def _prepare_general(
    uow: UnitOfWork, talk_id: uuid.UUID, at: datetime, until: datetime, debounce: float
) -> _Prepared | TurnOutcome:
    """The claim step by ORM reads, in the order that decides the outcome when the talk cannot be claimed:
    missing, paused, nothing pending, debounce, busy, no agent."""
    talk = uow.repo.get(Talk, talk_id)
    if talk is None:
        return TurnOutcome("missing")
    if talk.paused:
        return TurnOutcome("paused")
    recent = uow.repo.message_views(talk_id, HISTORY_LIMIT)
    pending = _pending_among(recent) if len(recent) < HISTORY_LIMIT else uow.repo.pending_views(talk_id)
    not_yet = _not_yet(pending, at, debounce)
    if not_yet is not None:
        return not_yet
    if not uow.repo.claim_ai_turn(talk_id, at, until):
        return TurnOutcome("busy")
    agent = uow.repo.get(Agent, talk.agent_id) if talk.agent_id else None
    if agent is None:
        uow.rollback()
        return TurnOutcome("missing")
    tree_flow = uow.repo.get(TreeFlow, agent.tree_flow_id) if agent.tree_flow_id else None
    contact = uow.repo.get(Contact, talk.contact_id)
    claimed = ClaimedTurn.of(talk, agent, tree_flow, contact)
    prepared = _prepared(talk_id, claimed, recent, pending, _followed_definition(uow, claimed))
    uow.commit()
    return prepared


def _not_yet(pending: list[MessageView], at: datetime, debounce: float) -> TurnOutcome | None:
    """Why there is no turn to take now (nothing pending, or a burst still arriving), else None."""
    if not pending:
        return TurnOutcome("nothing_pending")
    newest = max(m.created_at for m in pending)
    quiet_for = (at - newest).total_seconds()
    if quiet_for < debounce:  # a burst is still arriving: answer it once, when the lead pauses
        return TurnOutcome("debounce", delay=debounce - quiet_for)
    return None


def _followed_definition(uow: UnitOfWork, claimed: ClaimedTurn) -> dict[str, Any] | None:
    """The TreeFlow definition the talk follows: the version it started with (`talkflow.pinned_version`),
    so an edit of the flow applies to new talks only; the agent's current flow when the talk follows none
    yet or its version is gone (the flow was deleted). Read only when the flow changed since the talk began:
    the common turn keeps its one claiming statement."""
    pin = talkflow.pinned_version(claimed.talk_flow)
    current = claimed.tree_flow_definition or {}
    if pin is None:
        return claimed.tree_flow_definition
    flow, version = pin
    if current.get("treeFlowId") in (None, flow) and current.get("version", 1) == version:
        return claimed.tree_flow_definition
    try:
        pinned = uow.repo.tree_flow_version(uuid.UUID(flow), version)
    except ValueError:
        pinned = None
    return pinned.definition if pinned is not None else claimed.tree_flow_definition


def _prepared(
    talk_id: uuid.UUID,
    claimed: ClaimedTurn,
    recent: list[MessageView],
    pending: list[MessageView],
    definition: dict[str, Any] | None,
) -> _Prepared:
    return _Prepared(
        talk_id=talk_id,
        agent_id=claimed.agent_id,
        organization_id=claimed.organization_id,
        agent_name=claimed.agent_name,
        agent_prompt=claimed.agent_prompt or "",
        channel_options=dict(claimed.agent_metadata or {}),
        definition=normalize_definition(definition),
        state=claimed.talk_flow,
        pending=[(m.id, m.body) for m in pending],
        history=[
            HistoryLine("lead" if m.direction == "inbound" else "agent", m.body) for m in recent if m.body
        ],
        lead_first_name=claimed.contact_first_name,
        region=region_of(claimed.contact_phone),
        language=agent_language(definition or {}, claimed.agent_metadata),
        opted_out=claimed.contact_opted_out,
        tree_flow_name=claimed.tree_flow_name,
    )


def _pending_among(messages: list[MessageView]) -> list[MessageView]:
    """`Repository.pending_inbound` over messages already read: the lead's unprocessed messages, in its
    order (sent_at with NULL last as PostgreSQL sorts it, then created_at, then id)."""
    pending = [m for m in messages if m.direction == "inbound" and m.processed_at is None]
    return sorted(pending, key=lambda m: (m.sent_at is None, m.sent_at or _EPOCH, m.created_at, m.id))


def _decide(brain: Brain, prepared: _Prepared, at: datetime) -> _Decision:
    texts = [text for _, text in prepared.pending]
    ids = [str(message_id) for message_id, _ in prepared.pending]
    if prepared.opted_out:
        reason = "number suppressed" if prepared.suppressed else "contact opted out"
        return _Decision(
            new_state=prepared.state, meta={"ai": {"skipped": reason}}, opt_out=prepared.suppressed
        )
    state = prepared.state or talkflow.initial_state(None, prepared.definition)
    ended_before = state.get("status") != talkflow.STATUS_ACTIVE and bool(state.get("history"))
    if ended_before and prepared.definition["steps"]:
        # The lead writes on after the closing: a person takes over (told once, no LLM call); the pause
        # keeps every later message for that person.
        text = handoff_message(
            prepared.definition, prepared.channel_options, guess(texts) or prepared.language
        )
        done = {
            "brain": brain.name,
            "model": "verbatim",
            "action": "handoff",
            "outcome": state.get("outcome"),
        }
        done["answeredMessageIds"] = ids
        return _Decision([text], state, {"ai": done}, handoff="the lead wrote after the script's closing")
    current = step_by_id(prepared.definition, state.get("currentStepId"))
    heard = understand(
        brain, prepared.definition, state, texts, prepared.history, prepared.region, prepared.agent_prompt
    )
    extraction = heard.extraction
    if heard.opt_out:
        meta = {**usage_meta(brain, None, extraction), "action": "opt_out", "answeredMessageIds": ids}
        return _Decision(
            [OPT_OUT_CONFIRMATION[guess(texts[-1:]) or prepared.language]],
            {**state, "optedOut": True},
            {"ai": meta},
            opt_out=True,
        )
    new_state, action = talkflow.advance(
        prepared.definition,
        state,
        heard.values,
        ids,
        at.isoformat(),
        region=prepared.region,
        language=prepared.language,
    )
    context = TurnContext(
        agent_name=prepared.agent_name,
        agent_prompt=prepared.agent_prompt,
        flow_name=prepared.definition.get("name") or prepared.tree_flow_name or "conversation",
        flow_objective=prepared.definition.get("objective"),
        action=action.kind,
        step_id=action.step["id"] if action.step else None,
        step_name=action.step.get("name") if action.step else None,
        step_objective=action.step.get("objective") if action.step else None,
        question=action.question,
        answers=dict(new_state.get("collected") or {}),
        history=prepared.history,
        new_messages=texts,
        lead_first_name=prepared.lead_first_name,
        first_contact=action.first_contact,
        closing=action.closing,
        missing_fields=action.missing,
        invalid_fields=action.invalid,
        outcome=action.outcome,
        language=prepared.language,
        asked_label=(
            f"{action.field.get('description') or ''} {action.field['name'].replace('_', ' ')}"
            if action.field
            else None
        ),
    )
    # A script's closing goes out as written, never reworded (with no script, the prompt writes replies).
    scripted = action.kind == "close" and prepared.definition.get("steps")
    reply = turn_reply(
        brain, context, extraction, bool(heard.ungrounded), action.closing if scripted else None
    )
    meta = {
        **usage_meta(brain, reply, extraction),
        "action": action.kind,
        "stepId": context.step_id or (current["id"] if current else None),
        "askedField": action.field["name"] if action.field else None,
        "outcome": action.outcome,
        "answeredMessageIds": ids,
        **({"modelSaidOptOut": True} if heard.model_said_opt_out else {}),
        **({"ungrounded": heard.ungrounded} if heard.ungrounded else {}),
    }
    handoff = f"outcome {action.outcome}" if action.kind == "close" and action.handoff else None
    parts = split_reply(reply.text) if prepared.channel_options.get("splitMessages") else [reply.text]
    return _Decision(parts, new_state, {"ai": meta}, handoff=handoff)


def _store(
    uow_factory: UnitOfWorkFactory,
    prepared: _Prepared,
    decision: _Decision,
    at: datetime,
    on_reply: Callable[[uuid.UUID], None] | None = None,
    claim_reply: Callable[[UnitOfWork, uuid.UUID], None] | None = None,
) -> TurnOutcome:
    talk_id = prepared.talk_id
    talk_flow = decision.new_state
    if decision.handoff:
        talk_flow = {**(talk_flow or {}), "handoff": {"reason": decision.handoff, "at": at.isoformat()}}
    replies = reply_rows(
        prepared.organization_id,
        prepared.talk_id,
        prepared.agent_id,
        decision.replies,
        decision.meta,
        prepared.channel_options.get("timePerCharMs") or 0,
        at,
    )
    with uow_factory() as uow:
        # The talk's update comes first and only if the talk is not paused: its row lock orders this against
        # other turns and inbound messages; the lease is released with it.
        while not uow.repo.finish_turn(
            talk_id,
            at=at,
            talk_flow=talk_flow,
            handoff=decision.handoff is not None,
            opt_out=decision.opt_out,
            answered=[message_id for message_id, _ in prepared.pending],
            replies=replies,
        ):
            talk = uow.repo.get_for_update(Talk, talk_id)
            if talk is None:
                return TurnOutcome("missing")
            if talk.paused:  # paused while the brain was thinking: a human owns the talk now
                talk.ai_lease_until = None
                uow.commit()
                return TurnOutcome("paused")
            # resumed in the meantime: it is locked and not paused now, so the next attempt stores the turn
        if replies and claim_reply is not None:
            claim_reply(uow, replies[0].id)
        uow.commit()
        if replies and on_reply is not None:
            on_reply(replies[0].id)
        # Messages that arrived meanwhile (or between the update and the commit, whose own turn found the
        # lease taken and stood down) are still pending: the caller enqueues the next turn for them.
        more = uow.repo.has_pending_inbound(talk_id)
        if not replies:
            return TurnOutcome("silent", None, more)
        return TurnOutcome("replied", replies[0].id, more)


def _release(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID) -> None:
    with uow_factory() as uow:
        uow.repo.release_ai_turn(talk_id)
        uow.commit()
