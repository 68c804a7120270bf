"""Conversation actors (pykka): one thread per live conversation serialises everything for that contact.

`ConversationRouter` owns them: it starts an actor on the first message for a key, counts the work it handed
each actor, and a single reaper thread stops actors that stayed idle (nothing queued, nothing running) for
`idle_seconds`. Removal from the map and the stop happen under the router's lock, so a message is never
handed to an actor that is stopping (pykka would drop it silently). At `max_actors` the router first stops
the longest-idle actor and otherwise refuses with `ConversationBusy` (the webhook answers 503 and Evolution
retries) instead of growing threads without bound.

Replies cross back to asyncio through a callback the caller supplies (typically `loop.call_soon_threadsafe`),
never by awaiting a pykka future, which would block the event loop. A handler's exception is passed to the
callback; it never escapes `on_receive`, so it cannot kill the actor or drop its queued messages.

A handler may answer `Deferred`: it has handed the event to someone that finishes it on another thread (the
group-commit writer) in the order the actor decided. The actor goes on with its next event; the event stays
"in flight" (so the actor is neither reaped nor evicted, and `wait_idle` waits for it) until the deferred is
resolved, which delivers the reply.

A fast lane (`set_fast_lane`) may take an event instead of the actor, but only while that conversation's
actor is live and holds nothing (no event queued or being handled): the lane decides for the actor exactly
what its handler would have (hand the event to the group writer, in order) without the two thread hand-offs.
The event counts as in flight on the actor until its reply, so the actor is neither reaped nor evicted
meanwhile; the next event of the conversation goes to the lane again, or to the actor's mailbox behind
whatever the actor holds.

With `spare_actors` > 0 the router keeps that many started, unbound actors: a new conversation takes one (it
learns its key from a `Bind` message queued before its first event) instead of starting a thread while the
caller waits, and a background thread starts the replacement once no conversation has work in flight (or after
`spare_refill_wait` seconds), so that it does not compete with the new conversation's first message. Spares
are not conversations: they do not count against `max_actors` and are not listed; `stop()` stops them too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pykka

from luminai_actors.errors import ConversationBusy

log = logging.getLogger(__name__)

E = TypeVar("E")
R = TypeVar("R")
Reply = Callable[[Any], None]


def _inbox(ref: pykka.ActorRef[Any]) -> queue.Queue[Any]:
    """pykka's ThreadingActor mailbox is a queue.Queue (typed only as its protocol)."""
    inbox = ref.actor_inbox
    assert isinstance(inbox, queue.Queue)
    return inbox


class Deferred:
    """A result that arrives later, from another thread; `resolve` may come before or after `attach`."""

    __slots__ = ("_has_result", "_lock", "_result", "_then")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._has_result = False
        self._result: Any = None
        self._then: Callable[[Any], None] | None = None

    def attach(self, then: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._has_result:
                self._then = then
                return
        then(self._result)

    def resolve(self, result: Any) -> None:
        with self._lock:
            if self._has_result:
                return
            self._has_result, self._result = True, result
            then = self._then
        if then is not None:
            then(result)

    def wait(self, timeout: float) -> Any:
        """Block until resolved (for synchronous callers outside the actor system)."""
        arrived = threading.Event()
        self.attach(lambda _result: arrived.set())
        if not arrived.wait(timeout):
            raise TimeoutError("the deferred result did not arrive in time")
        return self._result


@dataclass(frozen=True, slots=True)
class Handle(Generic[E]):
    """Work for the actor: handle `event`, then call `reply` with the result or the exception."""

    event: E
    reply: Reply


FastLane = Callable[[str, Any, Reply], bool]
"""(key, event, reply) -> True when it took the event (and calls `reply` once, from any thread)."""


@dataclass(frozen=True, slots=True)
class Bind:
    """The first message to a spare actor: the conversation it serves from now on."""

    key: str


class ConversationActor(pykka.ThreadingActor, Generic[E, R]):
    def __init__(
        self,
        key: str,
        handler: Callable[[E], R],
        on_done: Callable[[str], None],
        on_returned: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self._handler = handler
        self._on_done = on_done
        self._on_returned = on_returned or (lambda _key: None)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Bind):
            self.key = message.key
            return None
        if not isinstance(message, Handle):
            log.warning("conversation actor %s got an unknown message %r", self.key, type(message).__name__)
            return None
        try:
            result: Any = self._handler(message.event)
        except Exception as exc:
            log.exception("conversation %s failed to handle an event", self.key)
            result = exc
        if isinstance(result, Deferred):
            reply = message.reply
            self._on_returned(self.key)  # the actor holds nothing more of this event
            result.attach(lambda final: self._finish(reply, final))
            return None
        self._on_returned(self.key)
        self._finish(message.reply, result)
        return None

    def _finish(self, reply: Reply, result: Any) -> None:
        # Idle from here on. Should the reaper stop the actor now, pykka still runs the rest of this call (the
        # reply below) before it handles the stop message.
        self._on_done(self.key)
        try:
            reply(result)
        except Exception:
            log.exception("conversation %s could not deliver its reply", self.key)


@dataclass(slots=True)
class _Entry:
    ref: pykka.ActorRef[Any]
    started_at: float
    last_activity: float
    in_flight: int = 0  # told and not yet answered (queued, being handled, or deferred)
    at_actor: int = 0  # queued on the actor or being handled by it (a part of in_flight)
    handled: int = 0
    fast_lane: int = 0  # events the fast lane took for this conversation
    extra: dict[str, Any] = field(default_factory=dict)


class ConversationRouter(Generic[E, R]):
    """Maps conversation keys to live actors; bounded, self-cleaning, observable."""

    def __init__(
        self,
        handler: Callable[[E], R],
        *,
        max_actors: int,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        spare_actors: int = 0,
        spare_refill_wait: float = 0.1,
    ) -> None:
        self._handler = handler
        self.max_actors = max_actors
        self.idle_seconds = idle_seconds
        self.spare_actors = spare_actors
        self.spare_refill_wait = spare_refill_wait
        self._spares: list[pykka.ActorRef[Any]] = []
        self._refill = threading.Event()
        self._spare_maker: threading.Thread | None = None
        self.spares_used_total = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified whenever an actor finishes a piece of work
        self._actors: dict[str, _Entry] = {}
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        self._fast_lane: FastLane | None = None
        self.fast_lane_total = 0
        self.started_total = 0
        self.stopped_idle_total = 0
        self.refused_total = 0

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._reaper is None:
            self._stopping.clear()
            self._reaper = threading.Thread(
                target=self._reap_forever, name="conversation-reaper", daemon=True
            )
            self._reaper.start()
        if self.spare_actors > 0 and self._spare_maker is None:
            self._spare_maker = threading.Thread(
                target=self._make_spares_forever, name="conversation-spares", daemon=True
            )
            self._spare_maker.start()
            self._refill.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the reaper and every actor; queued messages are handled before each actor stops."""
        self._stopping.set()
        self._refill.set()
        with self._idle:
            self._idle.notify_all()  # a spare maker waiting for quiet
        for thread in (self._reaper, self._spare_maker):
            if thread is not None:
                thread.join(timeout)
        self._reaper = self._spare_maker = None
        with self._lock:
            refs = [entry.ref for entry in self._actors.values()] + self._spares
            self._actors.clear()
            self._spares = []
        futures = [ref.stop(block=False) for ref in refs]
        deadline = time.monotonic() + timeout
        for future in futures:
            try:
                future.get(timeout=max(0.01, deadline - time.monotonic()))
            except Exception:
                log.warning("a conversation actor did not stop in time")

    # work ------------------------------------------------------------------------------------------------
    def set_fast_lane(self, lane: FastLane | None) -> None:
        """Let `lane` take a live actor's events while the actor holds none (see the module docstring)."""
        self._fast_lane = lane

    def tell(self, key: str, event: E, reply: Reply) -> None:
        """Queue `event` on the actor for `key` (started on demand); `reply` is called from its thread.

        Refused with ConversationBusy once `stop()` began: an actor started then would outlive the router
        (pykka's threads are not daemons) and keep the process from exiting.
        """
        if self._stopping.is_set():
            raise ConversationBusy("the conversation actors are shutting down")
        if self._fast_lane is not None and self._take_fast_lane(key, event, reply):
            return
        with self._lock:
            entry = self._actors.get(key)
            if entry is None or not entry.ref.is_alive():
                entry = self._start_locked(key)
            entry.in_flight += 1
            entry.at_actor += 1
            entry.last_activity = self._clock()
            try:
                entry.ref.tell(Handle(event, reply))
            except pykka.ActorDeadError:
                # Died between our check and the tell: replace it; the message goes to the new actor.
                replacement = self._start_locked(key)
                replacement.in_flight = replacement.at_actor = 1
                replacement.ref.tell(Handle(event, reply))

    def _take_fast_lane(self, key: str, event: E, reply: Reply) -> bool:
        lane = self._fast_lane
        assert lane is not None
        with self._lock:
            entry = self._actors.get(key)
            if entry is None or entry.at_actor or not entry.ref.is_alive():
                return False
            entry.in_flight += 1  # reserved: the actor is neither reaped nor evicted while the lane has it
            entry.last_activity = self._clock()

        def finish(result: Any) -> None:
            self._done(key)
            reply(result)

        try:
            taken = lane(key, event, finish)
        except Exception:
            log.exception("the fast lane failed on conversation %s; its actor handles the event", key)
            taken = False
        with self._lock:
            if taken:
                entry.fast_lane += 1
                self.fast_lane_total += 1
            else:
                entry.in_flight = max(0, entry.in_flight - 1)
                self._idle.notify_all()
        return taken

    def _start_locked(self, key: str) -> _Entry:
        self._actors.pop(key, None)
        if len(self._actors) >= self.max_actors and not self._evict_one_idle_locked():
            self.refused_total += 1
            raise ConversationBusy(f"{len(self._actors)} conversation actors are busy (the bound)")
        ref = self._bind_spare_locked(key) or self._new_actor(key)
        now = self._clock()
        entry = _Entry(ref=ref, started_at=now, last_activity=now)
        self._actors[key] = entry
        self.started_total += 1
        return entry

    def _new_actor(self, key: str) -> pykka.ActorRef[Any]:
        return ConversationActor.start(key, self._handler, self._done, self._returned)

    def _bind_spare_locked(self, key: str) -> pykka.ActorRef[Any] | None:
        while self._spares:
            ref = self._spares.pop()
            self._refill.set()
            try:
                ref.tell(Bind(key))
            except pykka.ActorDeadError:
                continue
            self.spares_used_total += 1
            return ref
        return None

    def _make_spares_forever(self) -> None:
        """Keep `spare_actors` started actors ready: once asked, wait for the router to be quiet (see
        `_wait_quiet_locked`), then start every missing one, each outside the lock."""
        while not self._stopping.is_set():
            self._refill.wait()
            self._refill.clear()
            with self._lock:
                self._wait_quiet_locked()
            while not self._stopping.is_set():
                with self._lock:
                    if len(self._spares) >= self.spare_actors:
                        break
                try:
                    ref = self._new_actor("")  # its key comes with `Bind`
                except Exception:  # e.g. no thread could be started: new conversations start their own
                    log.exception("could not start a spare conversation actor")
                    break
                with self._lock:
                    if self._stopping.is_set():  # stop() has already collected the spares
                        ref.stop(block=False)
                        return
                    self._spares.append(ref)

    def _quiet_locked(self) -> bool:
        return self._stopping.is_set() or all(entry.in_flight == 0 for entry in self._actors.values())

    def _wait_quiet_locked(self) -> None:
        """Wait (at most `spare_refill_wait` seconds) until no conversation has work in flight.

        Starting an actor costs ~0.7 ms of the GIL; started at once, the replacement of the spare a new lead
        just took competes with that lead's own first message (its statements came out ~0.35 ms slower).
        Woken by each finished event (`_done` notifies); under steady load the wait runs out and the spares
        are started anyway, all of them: new conversations that find none start their own thread, on the
        caller's (the event loop's) time."""
        self._idle.wait_for(self._quiet_locked, timeout=self.spare_refill_wait)

    def _returned(self, key: str) -> None:
        with self._lock:
            entry = self._actors.get(key)
            if entry is not None:
                entry.at_actor = max(0, entry.at_actor - 1)

    def _done(self, key: str) -> None:
        with self._lock:
            entry = self._actors.get(key)
            if entry is not None:
                entry.in_flight = max(0, entry.in_flight - 1)
                entry.handled += 1
                entry.last_activity = self._clock()
            self._idle.notify_all()

    # idleness --------------------------------------------------------------------------------------------
    def _evict_one_idle_locked(self) -> bool:
        idle = [(entry.last_activity, key) for key, entry in self._actors.items() if entry.in_flight == 0]
        if not idle:
            return False
        _, key = min(idle)
        self._actors.pop(key).ref.stop(block=False)
        return True

    def reap_idle(self) -> int:
        """Stop every actor idle for at least idle_seconds; returns how many were stopped."""
        now = self._clock()
        with self._lock:
            keys = [
                key
                for key, entry in self._actors.items()
                if entry.in_flight == 0 and now - entry.last_activity >= self.idle_seconds
            ]
            for key in keys:
                self._actors.pop(key).ref.stop(block=False)
            self.stopped_idle_total += len(keys)
        return len(keys)

    def _reap_forever(self) -> None:
        interval = min(max(self.idle_seconds / 4, 0.02), 1.0)
        while not self._stopping.wait(interval):
            try:
                self.reap_idle()
            except Exception:
                log.exception("conversation reaper failed; it keeps running")

    # observation -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._actors)

    @property
    def spares_ready(self) -> int:
        with self._lock:
            return len(self._spares)

    def snapshot(self) -> list[dict[str, Any]]:
        """Live actors with key, mailbox depth, work in flight, messages handled, idle time and age."""
        now = self._clock()
        with self._lock:
            items = list(self._actors.items())
        return [
            {
                "key": key,
                "mailboxDepth": _inbox(entry.ref).qsize(),
                "inFlight": entry.in_flight,
                "handled": entry.handled,
                "fastLane": entry.fast_lane,
                "idleSeconds": round(now - entry.last_activity, 3),
                "ageSeconds": round(now - entry.started_at, 3),
                "alive": entry.ref.is_alive(),
            }
            for key, entry in items
        ]

    def mailbox(self, key: str) -> list[Any]:
        """The events waiting in one actor's mailbox (not the one being handled), oldest first."""
        with self._lock:
            entry = self._actors.get(key)
        if entry is None:
            return []
        inbox = _inbox(entry.ref)
        with inbox.mutex:  # queue.Queue's own lock: a consistent copy without taking anything out
            return [
                envelope.message.event
                for envelope in list(inbox.queue)
                if isinstance(envelope.message, Handle)
            ]

    def idle(self) -> bool:
        """True when no actor has work queued or running."""
        with self._lock:
            return all(entry.in_flight == 0 for entry in self._actors.values())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no actor has work queued or running (woken by each finished event, not by polling)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: all(entry.in_flight == 0 for entry in self._actors.values()), timeout=timeout
            )
