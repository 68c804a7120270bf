"""deliver_outbound: one attempt to send a stored reply through Evolution's sendText, idempotent by id.

An attempt is recorded (send_status `sending`, attempt count, a lease) and committed before Evolution is
called, so a redelivered task never sends a message that is already sent or in flight; the result is
committed after. The usual case takes one statement each way (`Repository.claim_send`, `record_sent`); when
the claim does not apply, `_claim_general` finds out why with ORM reads (already done, in flight, blocked,
waiting, failed). The caller (the sender actor) turns `retry` into a Dramatiq retry with the configured wait;
`failed` is final and is written to the message's metadata with the reason, never raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.domain.ids import whatsapp_id_of_reply
from luminai_actors.errors import (
    EvolutionError,
    EvolutionMaybeSent,
    EvolutionNotActivated,
    EvolutionPermanentError,
)
from luminai_actors.evolution.client import EvolutionClient, SendResult
from luminai_actors.persistence.tables import (
    SEND_FAILED,
    SEND_PENDING,
    SEND_SENDING,
    SEND_SENT,
    Agent,
    Organization,
    Talk,
    TalkMessage,
)
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory
from luminai_actors.services import licence_gate, maybe_sent
from luminai_actors.services.pacing import NoPacing, Pacer
from luminai_actors.services.send_target import (
    Target,
    claimed_target,
    configuration_problem,
    target_of,
    unavailable_reason,
)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    # "sent" | "retry" | "failed" | "already_done" | "in_flight" | "missing"
    # | "blocked" (an earlier reply of the talk is not settled) | "waiting" (agent inactive or disconnected)
    # | "paced" (the instance's send rate is used up for now; `delay` says for how long)
    status: str
    attempts: int = 0
    error: str | None = None
    delay: float = 0.0
    next_message_id: uuid.UUID | None = None  # the talk's next reply to send once this one is settled

    @property
    def settled(self) -> bool:
        return self.status in ("sent", "failed")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A reply whose attempt is recorded (in a transaction its caller commits), with what sendText needs."""

    target: Target
    attempt: int


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def deliver_outbound(
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    message_id: uuid.UUID,
    *,
    max_attempts: int,
    lease_seconds: float = 60.0,
    retry_wait: Callable[[int], float] = lambda attempt: 0.0,
    max_wait_seconds: float = 3600.0,
    pacer: Pacer | None = None,
    now: Callable[[], datetime] | None = None,
) -> DeliveryOutcome:
    """One attempt. `retry_wait(n)` is the wait before attempt n; it also keeps the recovery sweep away.

    Replies of one talk go out in creation order: while an earlier one is unsettled this one is `blocked`
    (the earlier one hands over through `next_message_id` once settled). An inactive agent or a disconnected
    instance burns no attempt: the message is `waiting` until `max_wait_seconds` after it was written.
    """
    clock = now or (lambda: datetime.now(UTC))
    claimed = _claim(
        uow_factory, message_id, max_attempts, lease_seconds, clock(), max_wait_seconds, pacer or NoPacing()
    )
    if isinstance(claimed, DeliveryOutcome):
        return claimed
    return attempt_claimed(
        uow_factory,
        client,
        message_id,
        claimed,
        max_attempts=max_attempts,
        lease_seconds=lease_seconds,
        retry_wait=retry_wait,
        now=clock,
    )


def claim_fresh_reply(
    uow: UnitOfWork,
    message_id: uuid.UUID,
    *,
    max_attempts: int,
    lease_seconds: float,
    at: datetime,
) -> Claimed | None:
    """The claim of a reply stored in `uow`'s open transaction, made in that transaction, so the AI turn's
    commit records the reply and its first attempt at once. None when it cannot be made there (not next in
    its talk, agent unavailable, no address, or no one-statement claim on this database): the reply is then
    as stored, and `deliver_outbound` decides after the commit. The pacing slot is not taken here but by
    `attempt_fresh_claim`, right before the call: a slot taken before a commit that waits for the disk
    would let two sends arrive closer together than the rate allows."""
    claimed = uow.repo.claim_send(
        message_id,
        now=at,
        lease_until=at + timedelta(seconds=lease_seconds),
        attempt_at=iso(at),
        max_attempts=max_attempts,
    )
    if claimed is None:
        return None
    target = claimed_target(claimed)
    if target is None:
        _unclaim_fresh(uow, message_id)  # no address: the general path records that failure
        return None
    return Claimed(target, claimed.attempt)


def attempt_fresh_claim(
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    message_id: uuid.UUID,
    claimed: Claimed,
    *,
    pacer: Pacer,
    max_attempts: int,
    lease_seconds: float = 60.0,
    retry_wait: Callable[[int], float] = lambda attempt: 0.0,
) -> DeliveryOutcome:
    """`attempt_claimed` for a claim from `claim_fresh_reply`, once its pacing slot is had. Paced (or the
    pacer unreachable, which is raised): the claim is given back first, burning no attempt."""
    try:
        wait = pacer.try_acquire(claimed.target.instance)
    except Exception:
        _release_fresh(uow_factory, message_id)
        raise
    if wait > 0:
        _release_fresh(uow_factory, message_id)
        return DeliveryOutcome("paced", claimed.attempt - 1, delay=wait)
    return attempt_claimed(
        uow_factory,
        client,
        message_id,
        claimed,
        max_attempts=max_attempts,
        lease_seconds=lease_seconds,
        retry_wait=retry_wait,
    )


def _release_fresh(uow_factory: UnitOfWorkFactory, message_id: uuid.UUID) -> None:
    with uow_factory() as uow:
        _unclaim_fresh(uow, message_id)
        uow.commit()


def _unclaim_fresh(uow: UnitOfWork, message_id: uuid.UUID) -> None:
    """Undo `claim_send` on a reply that had no attempt before (claimed by `claim_fresh_reply`)."""
    message = uow.repo.get_for_update(TalkMessage, message_id)
    if message is None:
        return
    message.send_status = SEND_PENDING
    message.send_attempts = 0
    message.send_lease_until = None
    message.meta = {
        k: v for k, v in message.meta.items() if k not in ("whatsappAttempts", "whatsappLastAttemptAt")
    }


def attempt_claimed(
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    message_id: uuid.UUID,
    claimed: Claimed,
    *,
    max_attempts: int,
    lease_seconds: float = 60.0,
    retry_wait: Callable[[int], float] = lambda attempt: 0.0,
    now: Callable[[], datetime] | None = None,
) -> DeliveryOutcome:
    """The sendText call of a committed claim, and the recording of its result."""
    clock = now or (lambda: datetime.now(UTC))
    target, attempt = claimed.target, claimed.attempt
    found = maybe_sent.went_out_before(client, target)
    if found is not None:  # the earlier attempt went out after all: settle it, send no second copy
        return _record_success(uow_factory, message_id, attempt, found, clock())
    started = clock()
    try:
        result = client.send_text(
            target.server_url,
            target.api_key,
            target.instance,
            target.number,
            target.text,
            delay_ms=target.delay_ms,
            api_version=target.api_version,
            trusted=target.trusted,
            message_id=whatsapp_id_of_reply(message_id) if target.sets_message_id else None,
        )
    except EvolutionNotActivated as exc:  # configuration, not a fault: no attempt spent (`licence_gate`)
        used = licence_gate.hold_reply(uow_factory, message_id, attempt, exc, clock())
        return DeliveryOutcome("waiting", used, str(exc))
    except EvolutionError as exc:
        final = isinstance(exc, EvolutionPermanentError) or attempt >= max_attempts
        hold = timedelta(seconds=retry_wait(attempt + 1) + lease_seconds)
        maybe = target.maybe_sent_at or (iso(started) if isinstance(exc, EvolutionMaybeSent) else None)
        return _record_failure(uow_factory, message_id, attempt, str(exc), final, clock(), hold, maybe)
    return _record_success(uow_factory, message_id, attempt, result, clock())


def _claim(
    uow_factory: UnitOfWorkFactory,
    message_id: uuid.UUID,
    max_attempts: int,
    lease_seconds: float,
    at: datetime,
    max_wait_seconds: float,
    pacer: Pacer,
) -> Claimed | DeliveryOutcome:
    lease_until = at + timedelta(seconds=lease_seconds)
    with uow_factory() as uow:
        # The usual case in one statement: the attempt is recorded (and returned with what sendText needs)
        # only for a reply that is next in its talk, has attempts left and an available, configured agent.
        claimed = uow.repo.claim_send(
            message_id, now=at, lease_until=lease_until, attempt_at=iso(at), max_attempts=max_attempts
        )
        if claimed is not None:
            target = claimed_target(claimed)
            if target is not None:
                wait = pacer.try_acquire(target.instance)
                if wait > 0:
                    uow.rollback()  # the attempt is not made: nothing recorded
                    return DeliveryOutcome("paced", claimed.attempt - 1, delay=wait)
                uow.commit()
                return Claimed(target, claimed.attempt)
            uow.rollback()  # no address to reply to: the general path records that failure
        return _claim_general(uow, message_id, max_attempts, lease_until, at, max_wait_seconds, pacer)


def _claim_general(
    uow: UnitOfWork,
    message_id: uuid.UUID,
    max_attempts: int,
    lease_until: datetime,
    at: datetime,
    max_wait_seconds: float,
    pacer: Pacer,
) -> Claimed | DeliveryOutcome:
    """The claim by ORM reads, in the order that names the outcome when the reply cannot be sent now."""
    message = uow.repo.get_for_update(TalkMessage, message_id)
    if message is None or message.direction != "outbound":
        return DeliveryOutcome("missing")
    if message.send_status in (SEND_SENT, SEND_FAILED):
        return DeliveryOutcome("already_done", message.send_attempts)
    if message.send_status == SEND_SENDING and message.send_lease_until and message.send_lease_until > at:
        return DeliveryOutcome("in_flight", message.send_attempts)
    if uow.repo.earlier_unsettled_outbound(message.talk_id, message.created_at, message.id) is not None:
        return DeliveryOutcome("blocked", message.send_attempts)
    attempt = message.send_attempts + 1
    talk = uow.repo.get(Talk, message.talk_id)
    agent = uow.repo.get(Agent, message.agent_id or (talk.agent_id if talk else None) or uuid.UUID(int=0))
    problem = configuration_problem(agent)
    target = None if problem or talk is None or agent is None else target_of(uow, agent, talk, message)
    if problem is None and target is None:
        problem = "talk has no WhatsApp address to reply to"
    unavailable = (
        unavailable_reason(agent, uow.repo.get(Organization, agent.organization_id))
        if agent is not None and problem is None
        else None
    )
    if unavailable is not None:
        waited = (at - message.created_at).total_seconds()
        if waited < max_wait_seconds:
            return DeliveryOutcome("waiting", message.send_attempts, unavailable)
        problem = f"{unavailable}; gave up after waiting {waited:.0f}s"
    if problem is not None or target is None or attempt > max_attempts:
        reason = problem or f"no attempts left ({message.send_attempts} of {max_attempts} used)"
        _mark_failed(message, talk, message.send_attempts, reason, at)
        uow.commit()
        return DeliveryOutcome(
            "failed", message.send_attempts, reason, next_message_id=_next_after(uow, message)
        )
    wait = pacer.try_acquire(target.instance)
    if wait > 0:
        return DeliveryOutcome("paced", message.send_attempts, delay=wait)
    target = maybe_sent.note_takeover(message, target)
    message.send_status = SEND_SENDING
    message.send_attempts = attempt
    message.send_lease_until = lease_until
    message.meta = {**message.meta, "whatsappAttempts": attempt, "whatsappLastAttemptAt": iso(at)}
    uow.commit()
    return Claimed(target, attempt)


def _next_after(uow: Any, message: TalkMessage) -> uuid.UUID | None:
    return _next_of(uow, message.talk_id, message.created_at, message.id)


def _next_of(uow: Any, talk_id: uuid.UUID, created_at: datetime, message_id: uuid.UUID) -> uuid.UUID | None:
    following: uuid.UUID | None = uow.repo.next_unsettled_outbound_id(talk_id, created_at, message_id)
    return following


def _record_success(
    uow_factory: UnitOfWorkFactory, message_id: uuid.UUID, attempt: int, result: SendResult, at: datetime
) -> DeliveryOutcome:
    patch = {
        "whatsappSent": True,
        "whatsappResponse": result.body,
        "whatsappAttempts": attempt,
        "whatsappMessageId": result.message_id,
        "whatsappSentAt": iso(at),
    }
    with uow_factory() as uow:
        settled = uow.repo.record_sent(
            message_id, at=at, whatsapp_id=result.message_id or None, meta_patch=patch
        )
        if settled is None:  # not in one statement on this database (or the message is gone)
            message = uow.repo.get_for_update(TalkMessage, message_id)
            if message is None:
                return DeliveryOutcome("missing")
            message.send_status = SEND_SENT
            message.send_lease_until = None
            message.sent_at = at
            message.delivered_at = at
            if result.message_id:
                message.whatsapp_message_id = result.message_id
            meta = {k: v for k, v in message.meta.items() if k not in ("whatsappError", "whatsappFailedAt")}
            message.meta = {**meta, **patch}
            settled = (message.talk_id, message.created_at)
        uow.commit()
        talk_id, created_at = settled
        return DeliveryOutcome(
            "sent", attempt, next_message_id=_next_of(uow, talk_id, created_at, message_id)
        )


def _mark_failed(message: TalkMessage, talk: Talk | None, attempts: int, reason: str, at: datetime) -> None:
    message.send_status = SEND_FAILED
    message.send_lease_until = None
    message.meta = {
        **message.meta,
        "whatsappSent": False,
        "whatsappError": reason,
        "whatsappAttempts": attempts,
        "whatsappFailedAt": iso(at),
    }
    if talk is not None:
        talk.needs_human = True


def _record_failure(
    uow_factory: UnitOfWorkFactory,
    message_id: uuid.UUID,
    attempt: int,
    reason: str,
    final: bool,
    at: datetime,
    hold: timedelta,
    maybe_sent_at: str | None,
) -> DeliveryOutcome:
    with uow_factory() as uow:
        message = uow.repo.get_for_update(TalkMessage, message_id)
        if message is None:
            return DeliveryOutcome("missing")
        if final:
            _mark_failed(message, uow.repo.get(Talk, message.talk_id), attempt, reason, at)
            uow.commit()
            return DeliveryOutcome("failed", attempt, reason, next_message_id=_next_after(uow, message))
        message.send_status = SEND_PENDING
        message.send_lease_until = at + hold  # the scheduled retry owns it until then
        maybe = {maybe_sent.MAYBE_SENT: maybe_sent_at} if maybe_sent_at else {}
        message.meta = {**message.meta, "whatsappLastError": reason, "whatsappAttempts": attempt, **maybe}
        uow.commit()
        return DeliveryOutcome("retry", attempt, reason)
