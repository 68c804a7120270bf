"""Talk-level operations: pause and resume the bot, flag a talk for a human.

A pause or resume asked by a person (admin API, console) names them as `actor` and is recorded in the audit
log in the same transaction; the bot's own pauses (a human typing on the business phone) are not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from luminai_actors.errors import NotFound
from luminai_actors.persistence.tables import Talk
from luminai_actors.persistence.uow import UnitOfWorkFactory
from luminai_actors.services import audit


def flag_for_human(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, reason: str) -> None:
    """Pause the bot on this talk and mark it for a human, with the reason in the TalkFlow state."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            return
        talk.paused = True
        talk.needs_human = True
        talk.ai_lease_until = None
        talk.talk_flow = {
            **(talk.talk_flow or {}),
            "handoff": {"reason": reason, "at": datetime.now(UTC).isoformat()},
        }
        uow.commit()


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
