"""Dramatiq actors: `ai_turn` (one TreeFlow + brain turn of a talk) and `send_message` (one sendText attempt).

Both are thin shells over a service function, declared on an explicit broker by `declare_task_actors` (no
global broker, nothing at import time). Messages carry ids only. Retries use Dramatiq's machinery: a
transient failure raises `dramatiq.Retry(delay=...)` with the configured wait, so the waits are exact rather
than Dramatiq's jittered exponential default; the attempt count lives in the database, so a redelivered task
(worker killed, Redis restarted) continues the count instead of starting over.

A reply's first attempt is made by the AI turn's own thread right after the reply is committed
(`LUMINAI_INLINE_SEND`, default on): it saves the Redis hop of a `send_message` task on every reply, and
the attempt is recorded by the very transaction that stores the reply when it can be (next in its talk,
agent available), saving that attempt a transaction of its own; its pacing slot is taken right before the
call, and a paced reply's claim is given back. What
follows the attempt is the send task's business as before: its retry is a delayed `send_message` task, a
pacing wait too, and the talk's next reply is handed over to the queue. A worker killed during that attempt
leaves the message `sending` under its lease, which the recovery sweep finds like any other stalled send.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage

from luminai_actors.actors.broker import WakingRedisBroker
from luminai_actors.ai.brain import Brain
from luminai_actors.config import Settings
from luminai_actors.errors import BrainError, BrokerUnavailable, Unavailable
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.logs import log_context
from luminai_actors.metrics import Metrics
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory
from luminai_actors.services.ai_turn import run_ai_turn
from luminai_actors.services.organization_llm import OrganizationBrains
from luminai_actors.services.outbound import (
    Claimed,
    attempt_fresh_claim,
    claim_fresh_reply,
    deliver_outbound,
)
from luminai_actors.services.pacing import NoPacing, Pacer
from luminai_actors.services.privacy import SuppressionList
from luminai_actors.services.talks import hand_over_after_failure

log = logging.getLogger(__name__)

AI_QUEUE = "ai"
SEND_QUEUE = "send"


class Dispatcher(Protocol):
    """Where services hand work to the task actors (Dramatiq in production, a recorder in unit tests)."""

    def request_ai_turn(self, talk_id: uuid.UUID, delay: float = 0.0) -> None: ...
    def request_send(self, message_id: uuid.UUID, delay: float = 0.0) -> None: ...


@dataclass
class TaskDeps:
    settings: Settings
    uow_factory: UnitOfWorkFactory
    brain: Brain
    evolution: EvolutionClient
    pacer: Pacer = field(default_factory=NoPacing)
    metrics: Metrics = field(default_factory=Metrics)
    suppression: SuppressionList | None = None  # the erased, opted-out numbers no turn may answer
    organization_brains: OrganizationBrains | None = None  # organizations' own LLMs; None: `brain` for all


def _current_retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


class DramatiqDispatcher:
    def __init__(self, ai_actor: dramatiq.Actor[Any, Any], send_actor: dramatiq.Actor[Any, Any]) -> None:
        self.ai_actor = ai_actor
        self.send_actor = send_actor

    def _send(self, actor: dramatiq.Actor[Any, Any], ident: uuid.UUID, delay: float = 0.0) -> None:
        try:
            with self.pipelined():  # the enqueue and its wake-up in one round trip
                if delay > 0:
                    actor.send_with_options(args=(str(ident),), delay=max(1, int(delay * 1000)))
                else:
                    actor.send(str(ident))
        except (dramatiq.errors.ConnectionError, redis.RedisError) as exc:
            raise BrokerUnavailable(f"broker refused {actor.actor_name}: {exc}") from exc

    def request_ai_turn(self, talk_id: uuid.UUID, delay: float = 0.0) -> None:
        self._send(self.ai_actor, talk_id, delay)

    def request_send(self, message_id: uuid.UUID, delay: float = 0.0) -> None:
        self._send(self.send_actor, message_id, delay)

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Requests made by this thread inside the block go to Redis in one round trip at its end (Redis
        broker; elsewhere each goes at once). Raises BrokerUnavailable at the end when Redis refused them."""
        broker = self.ai_actor.broker
        if not isinstance(broker, WakingRedisBroker):
            yield
            return
        try:
            with broker.pipelined():
                yield
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"broker refused a batch of requests: {exc}") from exc


def declare_task_actors(broker: dramatiq.Broker, deps: TaskDeps) -> DramatiqDispatcher:
    settings = deps.settings
    holder: dict[str, DramatiqDispatcher] = {}
    send_lease_seconds = settings.evolution_timeout_seconds + 30

    def ai_turn(talk_id: str) -> None:
        with log_context(talk_id=talk_id):
            _ai_turn(talk_id)

    def _ai_turn(talk_id: str) -> None:
        attempt = _current_retries() + 1
        started = time.perf_counter()
        send_refused: list[BrokerUnavailable] = []
        claims: dict[uuid.UUID, Claimed] = {}

        def claim_reply(uow: UnitOfWork, reply_id: uuid.UUID) -> None:  # in the turn's own transaction
            claimed = claim_fresh_reply(
                uow,
                reply_id,
                max_attempts=settings.send_max_attempts,
                lease_seconds=send_lease_seconds,
                at=datetime.now(UTC),
            )
            if claimed is not None:
                claims[reply_id] = claimed

        def request_send(reply_id: uuid.UUID) -> None:  # as soon as the reply is committed
            if settings.inline_send:
                try:
                    with log_context(message_id=str(reply_id)):
                        _send_message(str(reply_id), inline=True, claimed=claims.pop(reply_id, None))
                    return
                except Exception:  # the reply is committed: the send task takes it from here
                    log.warning("inline send of %s failed; the send queue takes it", reply_id, exc_info=True)
            try:
                holder["dispatcher"].request_send(reply_id)
            except BrokerUnavailable as exc:  # raised below, after the turn, as it always was
                send_refused.append(exc)

        brains = deps.organization_brains
        brain_of = functools.partial(brains.for_organization, deps.uow_factory) if brains else None
        try:
            outcome = run_ai_turn(
                deps.uow_factory,
                deps.brain,
                uuid.UUID(talk_id),
                lease_seconds=settings.ai_timeout_seconds * 2 + 30,
                debounce_seconds=settings.ai_debounce_seconds,
                on_reply=request_send,
                claim_reply=claim_reply if settings.inline_send else None,
                suppressed=deps.suppression.talk_is_suppressed if deps.suppression is not None else None,
                brain_of=brain_of,
            )
        except (BrainError, Unavailable) as exc:
            deps.metrics.ai_turns.labels("error").inc()
            if attempt >= settings.ai_max_attempts:
                log.error("AI turn for talk %s failed after %d attempts: %s", talk_id, attempt, exc)
                told = hand_over_after_failure(deps.uow_factory, uuid.UUID(talk_id), str(exc))
                if told is not None:
                    try:
                        holder["dispatcher"].request_send(told)
                    except BrokerUnavailable:  # stored and pending: the recovery sweep sends it
                        log.warning("handoff message %s waits for the recovery sweep", told)
                return
            raise dramatiq.Retry(str(exc), delay=int(1000 * 2**attempt)) from exc
        deps.metrics.ai_turns.labels(outcome.status).inc()
        if outcome.status in ("replied", "silent"):
            deps.metrics.ai_turn_seconds.observe(time.perf_counter() - started)
        elif outcome.status in ("nothing_pending", "missing", "paused"):  # e.g. a redelivered, answered turn
            log.info("AI turn for talk %s: %s", talk_id, outcome.status)
        # "busy": the running turn re-reads pending messages when it ends and enqueues the next turn itself.
        if outcome.status == "debounce":  # the lead is still typing: look again when the window closes
            holder["dispatcher"].request_ai_turn(uuid.UUID(talk_id), delay=outcome.delay)
            return
        dispatcher = holder["dispatcher"]
        if send_refused:  # a reply's send is requested by `request_send` above, never here
            raise send_refused[0]
        if outcome.more_pending:
            dispatcher.request_ai_turn(uuid.UUID(talk_id))

    def send_message(message_id: str) -> None:
        with log_context(message_id=message_id):
            _send_message(message_id)

    def _send_message(message_id: str, *, inline: bool = False, claimed: Claimed | None = None) -> None:
        """One attempt. `inline`: made by the AI turn that stored the reply, so a retry is a fresh delayed
        `send_message` task rather than a Dramatiq retry (which would run the AI turn again); `claimed`:
        that turn's commit already recorded the attempt."""
        if claimed is not None:
            outcome = attempt_fresh_claim(
                deps.uow_factory,
                deps.evolution,
                uuid.UUID(message_id),
                claimed,
                pacer=deps.pacer,
                max_attempts=settings.send_max_attempts,
                lease_seconds=send_lease_seconds,
                retry_wait=settings.backoff_before_attempt,
            )
        else:
            outcome = deliver_outbound(
                deps.uow_factory,
                deps.evolution,
                uuid.UUID(message_id),
                max_attempts=settings.send_max_attempts,
                lease_seconds=send_lease_seconds,
                retry_wait=settings.backoff_before_attempt,
                max_wait_seconds=settings.send_max_wait_seconds,
                pacer=deps.pacer,
            )
        if outcome.status in ("sent", "retry", "failed"):
            deps.metrics.sends.labels(outcome.status, str(outcome.attempts)).inc()
        if outcome.settled and outcome.next_message_id is not None:
            holder["dispatcher"].request_send(outcome.next_message_id)  # the talk's next reply, in order
        if outcome.status == "paced":
            # Not a failure: a fresh delayed message, so no retry (and no attempt) is spent on waiting.
            holder["dispatcher"].request_send(uuid.UUID(message_id), delay=outcome.delay)
        if outcome.status == "retry":
            wait = settings.backoff_before_attempt(outcome.attempts + 1)
            log.warning(
                "send %s attempt %d failed (%s); retry in %.1fs",
                message_id,
                outcome.attempts,
                outcome.error,
                wait,
            )
            if inline:
                holder["dispatcher"].request_send(uuid.UUID(message_id), delay=wait)
                return
            raise dramatiq.Retry(outcome.error or "send failed", delay=int(wait * 1000))
        # "in_flight": that attempt records its own result; if its worker died, the lease expires and the
        # recovery sweep enqueues the message again. "blocked": the earlier reply hands over when settled.
        # "waiting": the reconnect (connection.update open) or the recovery sweep brings it back.
        if outcome.status == "failed":
            log.error("send %s failed after %d attempts: %s", message_id, outcome.attempts, outcome.error)
        elif outcome.status not in ("sent", "retry", "paced"):
            log.info("send %s: %s %s", message_id, outcome.status, outcome.error or "")

    # Retries are counted in the database; Dramatiq's own limit is only a backstop against a runaway loop.
    ai_actor = dramatiq.Actor(
        ai_turn,
        broker=broker,
        actor_name="ai_turn",
        queue_name=AI_QUEUE,
        priority=0,
        options={"max_retries": settings.ai_max_attempts + 20},
    )
    send_actor = dramatiq.Actor(
        send_message,
        broker=broker,
        actor_name="send_message",
        queue_name=SEND_QUEUE,
        priority=0,
        options={"max_retries": settings.send_max_attempts + 20},
    )
    holder["dispatcher"] = DramatiqDispatcher(ai_actor, send_actor)
    return holder["dispatcher"]
