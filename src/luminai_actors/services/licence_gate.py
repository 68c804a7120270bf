"""Evolution API 2.4's licence gate: an agent whose Evolution server is not activated waits, it does not fail.

Until its server is activated, Evolution 2.4.0 answers every API route except `/`, `/license/*` and its
manager with `503 {"error": "service not activated", "code": "LICENSE_REQUIRED", "register_url", "message",
…}` (src/licensing/runtime.ts, tag 2.4.0-rc2). That is configuration, not a transient fault, so:

- a send that meets it gives its claim back (`hold_reply`: the attempt is not counted, the reply stays
  pending) and the agent's `whatsapp_status` becomes `license_required`, with the server's `message` in
  `whatsapp_metadata["evolutionLicense"]` (`mark_agent`); while the status says so, replies wait without
  an attempt, as for a disconnected instance (`send_target.unavailable_reason`);
- test-connection records the gate the same way instead of failing, and the recovery sweep probes every
  such agent (`whatsapp_admin.probe_gated_agents`): once `connectionState` answers, the status is the real
  state again and the waiting replies are enqueued.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from luminai_actors.errors import EvolutionNotActivated, LuminaiError
from luminai_actors.persistence.tables import SEND_PENDING, WHATSAPP_LICENSE_REQUIRED, Agent, TalkMessage
from luminai_actors.persistence.uow import UnitOfWorkFactory


def mark_agent(agent: Agent, exc: EvolutionNotActivated, at: datetime) -> None:
    """Record the gate on the agent: its status and what the server said (shown in the console)."""
    body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
    agent.whatsapp_status = WHATSAPP_LICENSE_REQUIRED
    agent.whatsapp_metadata = {
        **(agent.whatsapp_metadata or {}),
        "evolutionLicense": {
            "message": str(body.get("message") or exc)[:500],
            "registerUrl": str(body.get("register_url") or "")[:500] or None,
            "seenAt": at.isoformat(),
        },
    }


def hold_reply(
    uow_factory: UnitOfWorkFactory,
    message_id: uuid.UUID,
    attempt: int,
    exc: EvolutionNotActivated,
    at: datetime,
) -> int:
    """Give back the claim of an attempt the gate refused (no attempt spent) and mark its agent; returns the
    attempts the reply has used."""
    with uow_factory() as uow:
        message = uow.repo.get_for_update(TalkMessage, message_id)
        if message is None:
            return attempt - 1
        message.send_status = SEND_PENDING
        message.send_attempts = attempt - 1
        message.send_lease_until = None
        message.meta = {**message.meta, "whatsappAttempts": attempt - 1, "whatsappWaitingFor": str(exc)}
        agent = uow.repo.get_for_update(Agent, message.agent_id) if message.agent_id else None
        if agent is not None:
            mark_agent(agent, exc, at)
        uow.commit()
        return message.send_attempts


def gated_agents(uow_factory: UnitOfWorkFactory) -> float:
    """How many agents are at the gate (`/metrics`); NaN while the database is down (`/readyz` says so,
    and /metrics still answers)."""
    try:
        with uow_factory() as uow:
            return float(len(uow.repo.instances_with_status(WHATSAPP_LICENSE_REQUIRED)))
    except (SQLAlchemyError, LuminaiError):
        return math.nan
