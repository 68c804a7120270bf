"""Talk-level operations: pause and resume the bot, flag a talk for a human.

A pause or resume asked by a person (admin API, console) names them as `actor` and is recorded in the audit
log in the same transaction; the bot's own pauses (a human typing on the business phone) are not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from luminai_actors.domain.language import agent_language, guess, handoff_message
from luminai_actors.errors import NotFound
from luminai_actors.persistence.tables import Agent, Contact, Talk, TreeFlow
from luminai_actors.persistence.uow import UnitOfWorkFactory
from luminai_actors.services import audit
from luminai_actors.services.reply_parts import reply_rows


def flag_for_human(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, reason: str) -> None:
    """Pause the bot on this talk and mark it for a human, with the reason in the TalkFlow state."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            return
        _flag(talk, reason)
        uow.commit()


def hand_over_after_failure(
    uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, reason: str
) -> uuid.UUID | None:
    """The AI failed on this talk after every retry: the lead is not left in silence. In one transaction the
    talk is flagged for a person (`flag_for_human`'s effect) and the agent's handoff message
    (`language.handoff_message`, in the lead's language) is stored, pending to be sent; returns its id, for
    the caller to request its send (else the recovery sweep sends it). A talk already paused (a person has
    it) or an opted-out contact gets no message."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            return None
        was_paused = talk.paused
        _flag(talk, reason)
        agent = uow.repo.get(Agent, talk.agent_id) if talk.agent_id else None
        contact = uow.repo.get(Contact, talk.contact_id)
        if was_paused or agent is None or contact is None or contact.opted_out_at is not None:
            uow.commit()
            return None
        flow = uow.repo.get(TreeFlow, agent.tree_flow_id) if agent.tree_flow_id else None
        definition = flow.definition if flow is not None else {}
        leads = [m.body or "" for m in uow.repo.pending_inbound(talk_id)]
        language = guess(leads) or agent_language(definition, agent.whatsapp_metadata)
        text = handoff_message(definition, agent.whatsapp_metadata, language)
        meta = {"ai": {"action": "handoff", "model": "verbatim", "reason": reason[:500]}}
        [reply] = reply_rows(talk.organization_id, talk.id, agent.id, [text], meta, 0, datetime.now(UTC))
        uow.repo.add(reply)
        uow.commit()
        return reply.id


def _flag(talk: Talk, reason: str) -> None:
    talk.paused = True
    talk.needs_human = True
    talk.ai_lease_until = None
    talk.talk_flow = {
        **(talk.talk_flow or {}),
        "handoff": {"reason": reason, "at": datetime.now(UTC).isoformat()},
    }


def pause_talk(
    uow_factory: UnitOfWorkFactory,
    talk_id: uuid.UUID,
    reason: str = "paused by an operator",
    *,
    actor: str | None = None,
) -> Talk:
    """A human takes the talk: no AI turn runs until it is resumed."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        was_paused = talk.paused
        talk.paused = True
        talk.talk_flow = {
            **(talk.talk_flow or {}),
            "handoff": {"reason": reason, "at": datetime.now(UTC).isoformat()},
        }
        if actor is not None:
            audit.record(
                uow,
                actor,
                talk.organization_id,
                "talk.pause",
                "talk",
                talk.id,
                {"paused": was_paused},
                {"paused": True, "reason": reason},
            )
        uow.commit()
        return talk


def resume_talk(
    uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, *, actor: str | None = None
) -> tuple[Talk, bool]:
    """The bot takes the talk back; returns it and whether lead messages wait for an answer."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        if actor is not None:
            audit.record(
                uow,
                actor,
                talk.organization_id,
                "talk.resume",
                "talk",
                talk.id,
                {"paused": talk.paused, "needsHuman": talk.needs_human},
                {"paused": False, "needsHuman": False},
            )
        talk.paused = False
        talk.needs_human = False
        talk.talk_flow = {k: v for k, v in (talk.talk_flow or {}).items() if k != "handoff"}
        uow.commit()
        return talk, bool(uow.repo.pending_inbound(talk_id))
