"""Channel events other than a lead's message: delivery receipts and the instance's connection state.

Receipts (`messages.update`) are matched by WhatsApp message id to our outbound message and only ever move
its status forward (PENDING < SERVER_ACK < DELIVERY_ACK < READ < PLAYED): a READ that overtakes its
DELIVERY_ACK stays READ, a repeated receipt changes nothing. A receipt for an id we do not know yet while
one of the agent's sends is in flight asks for redelivery (503): Evolution can report the ack before our
sender has committed the id that sendText returned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from luminai_actors.errors import Unavailable
from luminai_actors.evolution.webhook import MessageStatusUpdate, QrCodeUpdate, status_rank
from luminai_actors.persistence.tables import SEND_FAILED, Agent, Talk, TalkMessage
from luminai_actors.persistence.uow import UnitOfWorkFactory

CONNECTION_STATES = {
    "open": "connected",
    "connecting": "connecting",
    "close": "disconnected",
    "refused": "refused",
}


def _now(now: Callable[[], datetime] | None) -> datetime:
    return now() if now else datetime.now(UTC)


def apply_status_update(
    uow_factory: UnitOfWorkFactory, update: MessageStatusUpdate, now: Callable[[], datetime] | None = None
) -> str:
    """Apply one receipt; returns "applied", "stale", "unknown" or "ignored"."""
    at = _now(now)
    with uow_factory() as uow:
        agent = uow.repo.agent_by_instance(update.instance)
        if agent is None:
            return "ignored"
        found = uow.repo.message_by_whatsapp_id(agent.id, update.key_id)
        if found is None:
            if update.from_me is not False and uow.repo.sends_in_flight(agent.id):
                raise Unavailable("receipt for a message whose send is still being recorded; retry")
            return "unknown"
        message = uow.repo.get_for_update(TalkMessage, found.id)
        assert message is not None
        current = str(message.meta.get("whatsappStatus") or "")
        history = list(message.meta.get("whatsappStatusHistory") or [])
        if update.status == "ERROR":
            if current == "ERROR" or status_rank(current) >= status_rank("DELIVERY_ACK"):
                return "stale"
            message.send_status = SEND_FAILED
            talk = uow.repo.get(Talk, message.talk_id)
            if talk is not None:
                talk.needs_human = True
            message.meta = {
                **message.meta,
                "whatsappStatus": "ERROR",
                "whatsappSent": False,
                "whatsappError": "WhatsApp reported ERROR for this message",
                "whatsappFailedAt": at.isoformat(),
                "whatsappStatusHistory": [*history, {"status": "ERROR", "at": at.isoformat()}],
            }
            uow.commit()
            return "applied"
        if status_rank(update.status) <= status_rank(current):
            return "stale"
        if status_rank(update.status) >= status_rank("DELIVERY_ACK"):
            message.delivered_at = message.delivered_at if current == "DELIVERY_ACK" else at
        if status_rank(update.status) >= status_rank("READ") and message.read_at is None:
            message.read_at = at
        message.meta = {
            **message.meta,
            "whatsappStatus": update.status,
            "whatsappStatusHistory": [*history, {"status": update.status, "at": at.isoformat()}],
        }
        uow.commit()
        return "applied"


def apply_connection_state(
    uow_factory: UnitOfWorkFactory, instance: str, state: str, now: Callable[[], datetime] | None = None
) -> str | None:
    """Record the instance's connection state on its agent; returns the stored status (None if no agent)."""
    status = CONNECTION_STATES.get(state, state)
    with uow_factory() as uow:
        found = uow.repo.agent_by_instance(instance)
        if found is None:
            return None
        agent = uow.repo.get_for_update(Agent, found.id)
        assert agent is not None
        agent.whatsapp_status = status
        if status == "connected":
            agent.whatsapp_last_connected_at = _now(now)
        uow.commit()
        return status


def record_qrcode(
    uow_factory: UnitOfWorkFactory, event: QrCodeUpdate, now: Callable[[], datetime] | None = None
) -> None:
    """Keep the latest QR code (and pairing code) on the agent so an operator can connect the instance."""
    with uow_factory() as uow:
        found = uow.repo.agent_by_instance(event.instance)
        if found is None:
            return
        agent = uow.repo.get_for_update(Agent, found.id)
        assert agent is not None
        agent.whatsapp_metadata = {
            **(agent.whatsapp_metadata or {}),
            "qrcode": {
                "code": event.code,
                "base64": event.base64,
                "pairingCode": event.pairing_code,
                "at": _now(now).isoformat(),
            },
        }
        if agent.whatsapp_status != "connected":
            agent.whatsapp_status = "connecting"
        uow.commit()
