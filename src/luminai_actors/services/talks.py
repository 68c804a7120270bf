"""Talk-level operations: pause and resume the bot, flag a talk for a human."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from luminai_actors.errors import NotFound
from luminai_actors.persistence.tables import Talk
from luminai_actors.persistence.uow import UnitOfWorkFactory


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
    uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, reason: str = "paused by an operator"
) -> Talk:
    """A human takes the talk: no AI turn runs until it is resumed."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        talk.paused = True
        talk.talk_flow = {
            **(talk.talk_flow or {}),
            "handoff": {"reason": reason, "at": datetime.now(UTC).isoformat()},
        }
        uow.commit()
        return talk


def resume_talk(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID) -> tuple[Talk, bool]:
    """The bot takes the talk back; returns it and whether lead messages wait for an answer."""
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        talk.paused = False
        talk.needs_human = False
        talk.talk_flow = {k: v for k, v in (talk.talk_flow or {}).items() if k != "handoff"}
        uow.commit()
        return talk, bool(uow.repo.pending_inbound(talk_id))
