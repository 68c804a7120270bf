"""Composition root: the only place that builds and wires engine, broker, clients, brain and actors.

`build(settings)` returns a `Container`; `Container.start()` starts what runs in the background of this
process (the conversation reaper, the in-process Dramatiq worker when the broker is `memory://`, the recovery
sweep) and `Container.close()` stops it all in reverse order. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware import CurrentMessage
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.actors.broker import WakingRedisBroker
from luminai_actors.actors.conversation import ConversationRouter
from luminai_actors.actors.tasks import (
    AI_QUEUE,
    SEND_QUEUE,
    DramatiqDispatcher,
    TaskDeps,
    declare_task_actors,
)
from luminai_actors.ai.brain import Brain, OfflineBrain
from luminai_actors.ai.openai_brain import connect
from luminai_actors.config import Settings
from luminai_actors.errors import BrokerUnavailable, LuminaiError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.evolution.webhook import MessageUpsert
from luminai_actors.logs import log_context
from luminai_actors.metrics import DramatiqMetrics, LiveCollector, Metrics
from luminai_actors.persistence.database import create_db_engine, make_session_factory
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services import licence_gate, whatsapp_admin
from luminai_actors.services.agents import AgentDirectory
from luminai_actors.services.inbound import Autocommit, InboundOutcome, record_inbound
from luminai_actors.services.organization_llm import OrganizationBrains
from luminai_actors.services.pacing import MemoryPacer, NoPacing, Pacer, RedisPacer
from luminai_actors.services.privacy import Erased, SuppressionList
from luminai_actors.services.recovery import find_stalled_work
from luminai_actors.services.silence import WebhookSilence, sweep_silence
from luminai_actors.services.turn_requests import TurnRequests

log = logging.getLogger(__name__)

REDIS_MAINTENANCE_CHANCE = 50_000  # of 1e6: recover a dead worker's messages within seconds, not minutes


def build_broker(settings: Settings, metrics: Metrics | None = None) -> dramatiq.Broker:
    broker: dramatiq.Broker
    if settings.uses_memory_broker:
        broker = StubBroker()
    else:
        broker = WakingRedisBroker(
            url=settings.broker_url,
            heartbeat_timeout=int(settings.redis_heartbeat_seconds * 1000),
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
        return connect(
            settings.openai_api_key,
            settings.openai_base_url,
            settings.ai_model,
            timeout=settings.ai_timeout_seconds,
            one_call=settings.ai_one_call,
        )
    return OfflineBrain()


@dataclass
class Container:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    broker: dramatiq.Broker
    dispatcher: DramatiqDispatcher
    evolution: EvolutionClient
    brain: Brain
    router: ConversationRouter[MessageUpsert, InboundOutcome]
    directory: AgentDirectory = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)
    worker: dramatiq.Worker | None = None
    turn_requests: TurnRequests = field(default_factory=TurnRequests)
    suppression: SuppressionList | None = None  # the suppression list (`services.privacy`), set by `build`
    autocommit: Autocommit | None = None  # PostgreSQL with LUMINAI_FAST_INGEST: `persistence.append`
    silence: WebhookSilence = field(default_factory=WebhookSilence)  # webhooks seen per instance
    _silent: set[str] = field(default_factory=set)  # instances whose silence alarm is raised
    brains: OrganizationBrains | None = None  # organizations' own LLMs (`services.organization_llm`)
    _recovery_stop: threading.Event = field(default_factory=threading.Event)
    _recovery_thread: threading.Thread | None = None

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
            "luminai_webhook_silent_agents": (
                "Instances that usually have traffic and sent no webhook for LUMINAI_SILENCE_ALERT_MINUTES",
                float(len(self._silent)),
            ),
            "luminai_agents_license_required": (
                "Agents whose Evolution server answers with its licence gate (replies wait)",
                licence_gate.gated_agents(self.uow),
            ),
        }

    def uow(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.session_factory)

    # runs on a conversation actor's thread
    def handle_inbound(self, event: MessageUpsert) -> InboundOutcome:
        """The conversation actor's handler: store the message (`services.inbound`), request its AI turn."""
        _, agent = self.directory.cached(event.instance)  # the row the webhook layer looked up, if fresh
        outcome = record_inbound(
            self.uow,
            event,
            ignored_chats=self.settings.ignored_chat_kinds,
            talk_expiry=timedelta(hours=self.settings.talk_expiry_hours),
            agent=agent,
            autocommit=self.autocommit,
        )
        self.metrics.inbound_path.labels("fast" if outcome.fast else "slow").inc()
        if outcome.needs_ai_turn and outcome.talk_id is not None:
            self._request_ai_turn(outcome.talk_id)
        # One more message of a known conversation is logged at DEBUG (uvicorn's access line already records
        # the webhook); new conversations, duplicates and ignored messages at INFO.
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
        return outcome

    def _request_ai_turn(self, talk_id: uuid.UUID) -> None:
        """Enqueue the talk's AI turn unless one requested earlier in this burst will answer it."""
        debounce = self.settings.ai_debounce_seconds
        if self.turn_requests.covered(talk_id, debounce):
            return
        requested_at = self.turn_requests.now()
        try:
            self.dispatcher.request_ai_turn(talk_id, delay=debounce)
        except BrokerUnavailable as exc:
            # Not remembered: the message is committed, so the next message of the talk asks again and the
            # recovery sweep enqueues it once the broker is back.
            log.warning("AI turn for talk %s not enqueued: %s", talk_id, exc)
            return
        self.turn_requests.mark(talk_id, requested_at, debounce)

    def forget_erased(self, erased: Erased) -> None:
        """Drop what this process remembers about an erased contact (its talks' turn requests)."""
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
        sweep_silence(
            self.silence,
            self.uow,
            self.evolution,
            minutes=self.settings.silence_alert_minutes,
            min_webhooks=self.settings.silence_alert_min_webhooks,
            alarmed=self._silent,
        )
        for instance in whatsapp_admin.probe_gated_agents(self.uow, self.evolution):
            log.info("Evolution server of %s is activated: its waiting replies go out", instance)
            self.resume_agent_sends(instance)
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
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
            self.worker = None
        self.broker.close()
        self.evolution.close()
        if self.brains is not None:
            self.brains.close()
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
    pacer, brains = build_pacer(settings, broker), OrganizationBrains(settings, brain)
    deps = TaskDeps(settings, uow_factory, brain, evolution, pacer, metrics, suppression, brains)
    dispatcher = declare_task_actors(broker, deps)
    holder: dict[str, Container] = {}

    def handle(event: MessageUpsert) -> InboundOutcome:
        return holder["container"].handle_inbound(event)

    router: ConversationRouter[MessageUpsert, InboundOutcome] = ConversationRouter(
        handle,
        max_actors=settings.max_conversation_actors,
        idle_seconds=settings.conversation_idle_seconds,
    )
    container = Container(
        settings, engine, session_factory, broker, dispatcher, evolution, brain, router, metrics
    )
    container.suppression = suppression
    container.brains = brains
    if engine.dialect.name == "postgresql" and settings.fast_ingest:
        container.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT").connect
    holder["container"] = container
    return container
