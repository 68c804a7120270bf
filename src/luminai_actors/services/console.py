"""Operator console use cases that change things and the admin API has no twin for: ask Evolution for a QR
code, retry a failed reply, and send a message as a human (edits of organizations, agents and tree flows go
through `services.lifecycle`, the admin API's own rules). Each change is recorded in the audit log.

Each takes the caller's `Principal` and answers `NotFound` for anything of an organization it may not see,
exactly as the admin API does. Sends never call Evolution here: the message is committed `pending` and handed
to the sender actor (`dispatcher.request_send`), so it keeps the normal path's attempts, backoff, pacing and
per-talk ordering; if the broker refuses, the recovery sweep finds the pending row later. Queries for the
console's pages live in `console_queries`, its analytics in `console_analytics`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.inbound import pauses_on_human_reply
from luminai_actors.errors import BrokerUnavailable, Conflict, NotFound, ValidationError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.persistence.tables import SEND_FAILED, SEND_PENDING, Agent, Contact, Talk, TalkMessage
from luminai_actors.persistence.uow import UnitOfWorkFactory
from luminai_actors.services import audit
from luminai_actors.services.api_keys import Principal, ensure_visible
from luminai_actors.services.channel_events import CONNECTION_STATES

log = logging.getLogger(__name__)

MAX_HUMAN_MESSAGE = 4096


class SendDispatcher(Protocol):
    """The part of the task dispatcher these services need (the sender actor's queue)."""

    def request_send(self, message_id: uuid.UUID) -> None: ...


def _now(now: Callable[[], datetime] | None) -> datetime:
    return now() if now is not None else datetime.now(UTC)


def _enqueue_send(dispatcher: SendDispatcher, message_id: uuid.UUID) -> bool:
    try:
        dispatcher.request_send(message_id)
    except BrokerUnavailable as exc:  # committed as pending: the recovery sweep enqueues it later
        log.warning("send %s not enqueued: %s", message_id, exc)
        return False
    return True


def request_qrcode(
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    principal: Principal,
    agent_id: uuid.UUID,
    now: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Ask Evolution to pair the instance (`GET /instance/connect`); keep the QR code it answers on the agent
    as `qrcode.updated` does. Returns `{"instance", "status", "qrcode"}`; an open instance answers no QR
    code."""
    with uow_factory() as uow:
        agent = uow.repo.get(Agent, agent_id)
        if agent is None:
            raise NotFound("no such agent")
        ensure_visible(principal, agent.organization_id, "agent")
        if not (agent.whatsapp_instance_name and agent.whatsapp_server_url and agent.whatsapp_api_key):
            raise ValidationError("whatsapp", "the agent has no complete WhatsApp configuration")
        server_url, api_key = agent.whatsapp_server_url, agent.whatsapp_api_key
        instance, trusted = agent.whatsapp_instance_name, bool(agent.whatsapp_server_url_trusted)
    answer = client.connect(server_url, api_key, instance, trusted=trusted)
    state = answer.get("instance", {}).get("state") if isinstance(answer.get("instance"), dict) else None
    qrcode: dict[str, Any] | None = None
    if state is None:
        qrcode = {
            "code": answer.get("code") if isinstance(answer.get("code"), str) else None,
            "base64": answer.get("base64") if isinstance(answer.get("base64"), str) else None,
            "pairingCode": answer.get("pairingCode") if isinstance(answer.get("pairingCode"), str) else None,
            "count": answer.get("count") if isinstance(answer.get("count"), int) else None,
            "at": _now(now).isoformat(),
        }
    status = CONNECTION_STATES.get(state, state) if isinstance(state, str) else "connecting"
    with uow_factory() as uow:
        agent = uow.repo.get_for_update(Agent, agent_id)
        if agent is None:
            raise NotFound("no such agent")
        if qrcode is not None:
            agent.whatsapp_metadata = {**(agent.whatsapp_metadata or {}), "qrcode": qrcode}
        agent.whatsapp_status = status
        if status == "connected":
            agent.whatsapp_last_connected_at = _now(now)
        uow.commit()
    return {"instance": instance, "status": status, "qrcode": qrcode}


def retry_failed_message(
    uow_factory: UnitOfWorkFactory,
    dispatcher: SendDispatcher,
    principal: Principal,
    message_id: uuid.UUID,
    now: Callable[[], datetime] | None = None,
) -> TalkMessage:
    """Give a FAILED reply a fresh set of attempts through the sender actor.

    The failure (error, attempts, when, WhatsApp status) moves to `metadata.retryHistory`; the message is
    `pending` with 0 attempts again and is enqueued like any reply (a failed WhatsApp id is dropped so the
    new send's echo and receipts match it). Anything not failed is a 409.
    """
    at = _now(now)
    with uow_factory() as uow:
        message = uow.repo.get_for_update(TalkMessage, message_id)
        if message is None:
            raise NotFound("no such message")
        ensure_visible(principal, message.organization_id, "message")
        if message.direction != "outbound" or message.send_status != SEND_FAILED:
            raise Conflict("only a failed outbound message can be retried")
        meta = dict(message.meta)
        previous = {
            "error": meta.pop("whatsappError", None),
            "attempts": message.send_attempts,
            "failedAt": meta.pop("whatsappFailedAt", None),
            "whatsappStatus": meta.pop("whatsappStatus", None),
            "whatsappMessageId": message.whatsapp_message_id,
            "retriedAt": at.isoformat(),
        }
        for stale in ("whatsappSent", "whatsappLastError", "whatsappStatusHistory", "whatsappMessageId"):
            meta.pop(stale, None)
        meta["retryHistory"] = [*(meta.get("retryHistory") or []), previous]
        meta["whatsappAttempts"] = 0
        message.meta = meta
        message.send_status = SEND_PENDING
        message.send_attempts = 0
        message.send_lease_until = None
        message.whatsapp_message_id = None
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            message.organization_id,
            "message.retry",
            "message",
            message.id,
            {"sendStatus": SEND_FAILED, **previous},
            {"sendStatus": SEND_PENDING},
        )
        uow.commit()
    _enqueue_send(dispatcher, message_id)
    return message


def send_human_message(
    uow_factory: UnitOfWorkFactory,
    dispatcher: SendDispatcher,
    principal: Principal,
    talk_id: uuid.UUID,
    text: str,
    now: Callable[[], datetime] | None = None,
) -> TalkMessage:
    """A person writes to the lead from the console: an outbound message delivered by the sender actor.

    The lead's unanswered messages count as answered (the bot will not answer them later), and, as for a
    message typed on the business phone, the bot is paused on the talk when the agent's
    `pauseOnHumanReply` (default true) says so. A contact who opted out is not written to (409).
    """
    body = text.strip() if isinstance(text, str) else ""
    if not body:
        raise ValidationError("text", "write a message")
    if len(body) > MAX_HUMAN_MESSAGE:
        raise ValidationError("text", f"must be at most {MAX_HUMAN_MESSAGE} characters")
    at = _now(now)
    with uow_factory() as uow:
        talk = uow.repo.get_for_update(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        ensure_visible(principal, talk.organization_id, "talk")
        agent = uow.repo.get(Agent, talk.agent_id) if talk.agent_id is not None else None
        if agent is None:
            raise Conflict("the talk has no agent to send through")
        contact = uow.repo.get(Contact, talk.contact_id)
        if contact is not None and contact.opted_out_at is not None:
            raise Conflict("the contact opted out: no more messages are sent to them")
        message = TalkMessage(
            id=uuid7(),
            organization_id=talk.organization_id,
            talk_id=talk.id,
            agent_id=talk.agent_id,
            from_contact_id=None,
            from_agent_id=None,
            direction="outbound",
            channel="whatsapp",
            body=body,
            message_type="text",
            meta={"human": True, "sentVia": "console"},
            send_status=SEND_PENDING,
            send_attempts=0,
            created_at=at,
        )
        uow.repo.add(message)
        for waiting in uow.repo.pending_inbound(talk.id):  # a person answered them: the bot must not
            waiting.processed_at = at
        talk.date_last_message = at
        if pauses_on_human_reply(agent.whatsapp_metadata) and not talk.paused:
            talk.paused = True
            talk.talk_flow = {
                **(talk.talk_flow or {}),
                "handoff": {"reason": "a person replied from the console", "at": at.isoformat()},
            }
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            talk.organization_id,
            "message.send",
            "message",
            message.id,
            None,
            {"talkId": str(talk.id), "characters": len(body), "pausedBot": bool(talk.paused)},
        )
        uow.commit()
    _enqueue_send(dispatcher, message.id)
    return message
