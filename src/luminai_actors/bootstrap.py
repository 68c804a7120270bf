"""Composition root: the only place that builds and wires engine, broker, clients, brain and actors.

`build(settings)` returns a `Container`; `Container.start()` starts what runs in the background of this
process (the conversation reaper, the in-process Dramatiq worker when the broker is `memory://`, the recovery
sweep) and `Container.close()` stops it all in reverse order. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import openai
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware import CurrentMessage
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.actors.broker import WakingRedisBroker
from luminai_actors.actors.conversation import ConversationRouter, Deferred
from luminai_actors.actors.tasks import (
    AI_QUEUE,
    SEND_QUEUE,
    DramatiqDispatcher,
    TaskDeps,
    declare_task_actors,
)
from luminai_actors.ai.brain import Brain, OfflineBrain
from luminai_actors.ai.openai_brain import OpenAIBrain
from luminai_actors.config import Settings
from luminai_actors.errors import BrokerUnavailable, LuminaiError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.logs import log_context
from luminai_actors.metrics import DramatiqMetrics, LiveCollector, Metrics
from luminai_actors.persistence.database import create_db_engine, make_session_factory
from luminai_actors.persistence.group_commit import GroupCommitWriter
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services.agents import AgentDirectory
from luminai_actors.services.inbound import InboundOutcome, conversation_key, record_inbound
from luminai_actors.services.inbound_fast import FastInbound, SlowInbound, TurnRequests, insert_known_messages
from luminai_actors.services.pacing import MemoryPacer, NoPacing, Pacer, RedisPacer
from luminai_actors.services.privacy import Erased, SuppressionList
from luminai_actors.services.recovery import find_stalled_work

log = logging.getLogger(__name__)

REDIS_HEARTBEAT_TIMEOUT_MS = 15_000
REDIS_MAINTENANCE_CHANCE = 50_000  # of 1e6: recover a dead worker's messages within seconds, not minutes


#: Started, unbound conversation actors kept ready, so that a new lead's first message does not wait for a
#: thread to start (~0.2 ms, and a slower first hand-off); they are not conversations (not bounded, not
#: listed as live) and show in /ops/actors as `sparesReady`.
SPARE_CONVERSATION_ACTORS = 4


def build_broker(settings: Settings, metrics: Metrics | None = None) -> dramatiq.Broker:
    broker: dramatiq.Broker
    if settings.uses_memory_broker:
        broker = StubBroker()
    else:
        broker = WakingRedisBroker(
            url=settings.broker_url,
            heartbeat_timeout=REDIS_HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=REDIS_MAINTENANCE_CHANCE,
        )
    broker.add_middleware(CurrentMessage())
    if metrics is not None:
        broker.add_middleware(DramatiqMetrics(metrics))
    return broker


def boot_worker_process(broker: dramatiq.Broker) -> None:
    """What the dramatiq CLI does in a worker process: without it TimeLimit is not enforced. It starts a
    watchdog thread that never ends, so only processes that run a worker call it, once."""
    if not getattr(broker, "_luminai_booted", False):
        broker.emit_after("process_boot")
        broker._luminai_booted = True  # type: ignore[attr-defined]  # a marker on the broker we own


def build_pacer(settings: Settings, broker: dramatiq.Broker) -> Pacer:
    if settings.send_rate_per_instance <= 0:
        return NoPacing()
    if isinstance(broker, RedisBroker):
        return RedisPacer(broker.client, settings.send_rate_per_instance)
    return MemoryPacer(settings.send_rate_per_instance)


def build_brain(settings: Settings) -> Brain:
    if settings.openai_api_key:
        client = openai.OpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.ai_timeout_seconds,
            max_retries=0,  # retries belong to the AI actor, with backoff and a final hand-off
        )
        return OpenAIBrain(client, settings.ai_model)
    return OfflineBrain()


@dataclass
class _WriterBatch:
    """What the group writer's callbacks of one batch leave for its end (`Container.writer_callbacks`)."""

    turns: list[uuid.UUID] = field(default_factory=list)
    replies: list[tuple[Callable[[Any], None], Any]] = field(default_factory=list)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    broker: dramatiq.Broker
    dispatcher: DramatiqDispatcher
    evolution: EvolutionClient
    brain: Brain
    router: ConversationRouter[MessageUpsert | SlowInbound, InboundOutcome | Deferred]
    directory: AgentDirectory = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)
    worker: dramatiq.Worker | None = None
    fast_inbound: FastInbound | None = None  # PostgreSQL only: known conversations' messages, group-committed
    turn_requests: TurnRequests = field(default_factory=TurnRequests)
    suppression: SuppressionList | None = None  # the suppression list (`services.privacy`), set by `build`
    _recovery_stop: threading.Event = field(default_factory=threading.Event)
    _recovery_thread: threading.Thread | None = None
    _writer_batch: threading.local = field(default_factory=threading.local)  # see `writer_callbacks`

    def __post_init__(self) -> None:
        self.directory = AgentDirectory(self.uow)
        self.metrics.watch(LiveCollector(self._live_gauges))

    def _live_gauges(self) -> dict[str, tuple[str, float]]:
        actors = self.router.snapshot()
        depths = [a["mailboxDepth"] for a in actors]
        return {
            "luminai_conversation_actors": ("Live conversation actors", float(len(actors))),
            "luminai_conversation_actors_max": (
                "The bound on live conversation actors",
                float(self.router.max_actors),
            ),
            "luminai_conversation_mailbox_depth": (
                "Events waiting in all conversation mailboxes",
                float(sum(depths)),
            ),
            "luminai_conversation_mailbox_depth_max": (
                "The deepest conversation mailbox",
                float(max(depths, default=0)),
            ),
            "luminai_conversation_in_flight": (
                "Events queued or running in actors",
                float(sum(a["inFlight"] for a in actors)),
            ),
        }

    def uow(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.session_factory)

    # runs on a conversation actor's thread
    def handle_inbound(self, event: MessageUpsert | SlowInbound) -> InboundOutcome | Deferred:
        """The conversation actor's handler: the outcome, or a Deferred the group-commit writer resolves.

        A message of a known conversation is handed to the writer and the actor goes on (the writer commits
        in the order the actors handed over). Should the writer not store it, it comes back to this actor as
        a SlowInbound and takes the full lookup, keeping the time it arrived.
        """
        if isinstance(event, SlowInbound):
            return self._record_slow(event.event, event.key, event.arrived_at)
        fast = self.fast_inbound
        if fast is None:
            return self._record_slow(event, "", None)
        key = conversation_key(event)
        deferred = Deferred()
        if fast.submit(key, event, self._fast_finished(key, event, deferred.resolve)):
            return deferred
        return self._record_slow(event, key, None)

    def fast_lane(self, key: str, event: object, reply: Callable[[Any], None]) -> bool:
        """The router's fast lane: a known conversation's message goes to the group writer directly.

        The router offers an event here only while its conversation actor holds nothing, so handing it to the
        writer now is what the actor's `handle_inbound` would have done next, in the same order. False (the
        actor takes it): not a lead's message of a known conversation, or fast ingest is off.
        """
        fast = self.fast_inbound
        if fast is None or not isinstance(event, MessageUpsert):
            return False  # a SlowInbound always goes to its actor
        return fast.submit(key, event, self._fast_finished(key, event, reply))

    def _fast_finished(
        self, key: str, event: MessageUpsert, reply: Callable[[Any], None]
    ) -> Callable[[InboundOutcome | None, datetime], None]:
        fast = self.fast_inbound
        assert fast is not None

        def finished(outcome: InboundOutcome | None, arrived_at: datetime) -> None:  # on the writer's thread
            if outcome is not None:
                self._after_record(event, outcome)
                batch: _WriterBatch | None = getattr(self._writer_batch, "batch", None)
                if batch is not None:
                    batch.replies.append((reply, outcome))  # after the batch's AI-turn requests
                else:
                    reply(outcome)
                return
            fast.forget(key)
            try:
                self.router.tell(key, SlowInbound(event, key, arrived_at), reply)
            except Exception as exc:  # the actor system refused: the webhook answers 503, Evolution retries
                reply(exc)

        return finished

    def handle_inbound_now(self, event: MessageUpsert) -> InboundOutcome:
        """`handle_inbound` for callers outside the actor system: waits for a deferred outcome."""
        result = self.handle_inbound(event)
        if isinstance(result, Deferred):
            result = result.wait(self.settings.webhook_timeout_seconds)
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, InboundOutcome)
        return result

    def _record_slow(self, event: MessageUpsert, key: str, arrived_at: datetime | None) -> InboundOutcome:
        outcome = record_inbound(
            self.uow,
            event,
            (lambda: arrived_at) if arrived_at is not None else None,
            ignored_chats=self.settings.ignored_chat_kinds,
            talk_expiry=timedelta(hours=self.settings.talk_expiry_hours),
        )
        if self.fast_inbound is not None:
            self.fast_inbound.remember(key, outcome)
        self._after_record(event, outcome)
        return outcome

    def _after_record(self, event: MessageUpsert, outcome: InboundOutcome) -> None:
        self.metrics.inbound_path.labels("fast" if outcome.fast else "slow").inc()
        if outcome.needs_ai_turn and outcome.talk_id is not None:
            self._request_ai_turn(outcome.talk_id)
        # One more message of a known conversation is logged at DEBUG (uvicorn's access line already records
        # the webhook); new conversations, duplicates, ignored messages and fallbacks at INFO.
        level = logging.DEBUG if outcome.fast else logging.INFO
        if log.isEnabledFor(level):
            with log_context(
                instance=event.instance,
                whatsapp_message_id=event.message_id,
                talk_id=outcome.talk_id,
                message_id=outcome.message_id,
                contact_id=outcome.contact_id,
            ):
                reason = f": {outcome.reason}" if outcome.reason else ""
                log.log(level, "inbound %s%s", outcome.status, reason)

    @contextlib.contextmanager
    def writer_callbacks(self) -> Iterator[None]:
        """Around the group writer's callbacks of one batch: the AI turns they request are enqueued together
        (one Redis round trip) when the batch's callbacks are done, and only then are its webhooks answered,
        so a 200 still means "stored, and its AI turn requested"."""
        batch = _WriterBatch()
        self._writer_batch.batch = batch
        try:
            yield
        finally:
            self._writer_batch.batch = None
            self._flush_writer_batch(batch)

    def _flush_writer_batch(self, batch: _WriterBatch) -> None:
        if batch.turns:
            self._enqueue_turns(batch.turns)
        for reply, result in batch.replies:
            try:
                reply(result)
            except Exception:
                log.exception("a webhook's reply failed")

    def _request_ai_turn(self, talk_id: uuid.UUID) -> None:
        """Enqueue the talk's AI turn unless one requested earlier in this burst will answer it."""
        debounce = self.settings.ai_debounce_seconds
        if self.turn_requests.covered(talk_id, debounce):
            return
        batch: _WriterBatch | None = getattr(self._writer_batch, "batch", None)
        if batch is not None:  # on the group writer, inside `writer_callbacks`: enqueued with the batch
            if talk_id not in batch.turns:
                batch.turns.append(talk_id)
            return
        self._enqueue_turns([talk_id])

    def _enqueue_turns(self, talk_ids: list[uuid.UUID]) -> None:
        """Enqueue these talks' AI turns (one Redis round trip) and remember them as requested.

        A turn the broker refuses is not remembered: the message is committed, so the next message of the
        talk asks again and the recovery sweep enqueues it once the broker is back."""
        debounce = self.settings.ai_debounce_seconds
        requested_at = self.turn_requests.now()
        requested: list[uuid.UUID] = []
        try:
            with self.dispatcher.pipelined():
                for talk_id in talk_ids:
                    try:
                        self.dispatcher.request_ai_turn(talk_id, delay=debounce)
                        requested.append(talk_id)
                    except BrokerUnavailable as exc:
                        log.warning("AI turn for talk %s not enqueued: %s", talk_id, exc)
        except BrokerUnavailable as exc:
            log.warning("AI turns of %d talks not enqueued: %s", len(talk_ids), exc)
            return
        for talk_id in requested:
            self.turn_requests.mark(talk_id, requested_at, debounce)

    def forget_erased(self, erased: Erased) -> None:
        """Drop what this process remembers about an erased contact (its known conversations, its talks'
        turn requests): its number's next message takes the full lookup and starts a fresh contact."""
        if self.fast_inbound is not None:
            self.fast_inbound.forget_contact(erased.contact_id)
        self.turn_requests.forget(erased.talk_ids)

    def resume_agent_sends(self, instance: str) -> int:
        """Enqueue the replies that waited for this instance to reconnect; returns how many."""
        with self.uow() as uow:
            agent = uow.repo.agent_by_instance(instance)
            waiting = uow.repo.unsettled_outbound_of_agent(agent.id, 1000) if agent is not None else []
        for message_id in waiting:
            self.dispatcher.request_send(message_id)
        return len(waiting)

    def start(self, *, embedded_worker: bool | None = None, recovery: bool = True) -> None:
        if self.fast_inbound is not None:
            self.fast_inbound.writer.start()
        self.router.start()
        run_worker = self.settings.uses_memory_broker if embedded_worker is None else embedded_worker
        if run_worker and self.worker is None:
            boot_worker_process(self.broker)
            self.worker = dramatiq.Worker(
                self.broker,
                worker_threads=self.settings.worker_threads,
                worker_timeout=self.settings.worker_poll_ms,
            )
            self.worker.start()
        if recovery and self._recovery_thread is None:
            self._recovery_stop.clear()
            self._recovery_thread = threading.Thread(
                target=self._recover_forever, name="recovery", daemon=True
            )
            self._recovery_thread.start()

    def recover_once(self) -> tuple[int, int]:
        """Enqueue AI turns and sends that should have run by now; returns (turns, sends) enqueued."""
        interval = self.settings.recovery_interval_seconds
        stalled = find_stalled_work(self.uow, older_than_seconds=interval)
        for talk_id in stalled.talks_awaiting_ai:
            self.dispatcher.request_ai_turn(talk_id)
        for message_id in stalled.messages_awaiting_send:
            self.dispatcher.request_send(message_id)
        if stalled.talks_awaiting_ai or stalled.messages_awaiting_send:
            log.info(
                "recovery enqueued %d AI turns and %d sends",
                len(stalled.talks_awaiting_ai),
                len(stalled.messages_awaiting_send),
            )
        return len(stalled.talks_awaiting_ai), len(stalled.messages_awaiting_send)

    def _recover_forever(self) -> None:
        while not self._recovery_stop.wait(self.settings.recovery_interval_seconds):
            try:
                self.recover_once()
            except LuminaiError as exc:
                log.warning("recovery sweep skipped: %s", exc)
            except Exception:
                log.exception("recovery sweep failed; it keeps running")

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting per Dramatiq queue (ready, delayed and dead-lettered)."""
        depths: dict[str, int] = {}
        for queue in (AI_QUEUE, SEND_QUEUE):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                depths[name] = _queue_depth(self.broker, name)
        return depths

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every conversation mailbox and every task queue (delayed messages too) is empty and the
        work they cause has finished; for tests and the demo. Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.router.wait_idle(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("conversation actors still busy")
            if isinstance(self.broker, StubBroker):
                for queue in (AI_QUEUE, SEND_QUEUE):
                    remaining = max(1, int((deadline - time.monotonic()) * 1000))
                    try:
                        self.broker.join(queue, timeout=remaining, fail_fast=False)
                    except QueueJoinTimeout as exc:
                        raise TimeoutError(f"queue {queue} not drained") from exc
                if self.worker is not None:
                    self.worker.join()
            elif any(depth > 0 for name, depth in self.queue_depths().items() if not name.endswith(".XQ")):
                if time.monotonic() > deadline:
                    raise TimeoutError("Redis queues not drained")
                time.sleep(0.05)  # Redis offers no join: look again shortly
                continue
            # A task may have enqueued more work or told an actor; done only when all is quiet at once.
            if self.router.idle() and all(
                depth == 0 for name, depth in self.queue_depths().items() if not name.endswith(".XQ")
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("work kept arriving")

    def database_ready(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def broker_ready(self) -> bool:
        if isinstance(self.broker, RedisBroker):
            try:
                return bool(self.broker.client.ping())
            except Exception:
                return False
        return True

    def close(self) -> None:
        self._recovery_stop.set()
        if self._recovery_thread is not None:
            self._recovery_thread.join(5)
            self._recovery_thread = None
        self.router.stop()
        if self.fast_inbound is not None:  # after the actors: what they queued is committed first
            self.fast_inbound.writer.stop()
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
            self.worker = None
        self.broker.close()
        self.evolution.close()
        self.engine.dispose()


def _queue_depth(broker: dramatiq.Broker, name: str) -> int:
    if isinstance(broker, StubBroker):
        if name.endswith(".XQ"):
            return len(broker.dead_letters_by_queue.get(name[:-3], []))
        queue: Any = broker.queues.get(name)
        return int(queue.qsize()) if queue is not None else 0
    if isinstance(broker, RedisBroker):
        try:
            # Dramatiq keeps a message in the `.msgs` hash until it is acked, so this counts what is
            # waiting, held by a worker (prefetched or delayed in its memory) or running: all not yet done.
            return int(broker.client.hlen(f"{broker.namespace}:{name}.msgs"))
        except Exception:
            return -1
    return -1


def build(settings: Settings) -> Container:
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    session_factory = make_session_factory(engine)
    metrics = Metrics()
    broker = build_broker(settings, metrics)
    evolution = EvolutionClient(timeout=settings.evolution_timeout_seconds, policy=settings.address_policy)
    brain = build_brain(settings)

    def uow_factory() -> SqlAlchemyUnitOfWork:
        # The task actors' blocks wait on nothing between their transactions: one connection each.
        return SqlAlchemyUnitOfWork(session_factory, hold_connection=True)

    suppression = SuppressionList(uow_factory, settings.suppression_key)
    deps = TaskDeps(
        settings, uow_factory, brain, evolution, build_pacer(settings, broker), metrics, suppression
    )
    dispatcher = declare_task_actors(broker, deps)
    holder: dict[str, Container] = {}

    def handle(event: MessageUpsert | SlowInbound) -> InboundOutcome | Deferred:
        return holder["container"].handle_inbound(event)

    router: ConversationRouter[MessageUpsert | SlowInbound, InboundOutcome | Deferred] = ConversationRouter(
        handle,
        max_actors=settings.max_conversation_actors,
        idle_seconds=settings.conversation_idle_seconds,
        spare_actors=SPARE_CONVERSATION_ACTORS,
    )
    container = Container(
        settings, engine, session_factory, broker, dispatcher, evolution, brain, router, metrics
    )
    if engine.dialect.name == "postgresql" and settings.fast_ingest:
        container.fast_inbound = FastInbound(
            GroupCommitWriter(
                engine.raw_connection,
                insert_known_messages,
                name="inbound-group-commit",
                on_batch=lambda size, ok: metrics.ingest_batch_size.observe(size),
                single_statement=True,  # insert_known_messages is one statement: autocommit, one round trip
                around_callbacks=container.writer_callbacks,
            ),
            talk_expiry=timedelta(hours=settings.talk_expiry_hours),
            capacity=max(10_000, 2 * settings.max_conversation_actors),
        )
    container.suppression = suppression
    holder["container"] = container
    if container.fast_inbound is not None:
        router.set_fast_lane(container.fast_lane)
    return container
