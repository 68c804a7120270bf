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

The map is kept in order of last activity (an `OrderedDict`), so finding the longest-idle actor to evict
or the actors to reap takes the front of it instead of a scan of every live conversation: at the bound,
each new conversation used to pay a scan of all 2,000 entries under the router's lock (bench/budget.py's
curve, `bench/results/budget.json`, records known-conversation ingest at 500 / 2,000 / 10,000 live
conversations against the bound of 2,000).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Handle(Generic[E]):
    """Work for the actor: handle `event`, then call `reply` with the result or the exception."""

    event: E
    reply: Reply


class ConversationActor(pykka.ThreadingActor, Generic[E, R]):
    def __init__(self, key: str, handler: Callable[[E], R], on_done: Callable[[str], None]) -> None:
        super().__init__()
        self.key = key
        self._handler = handler
        self._on_done = on_done

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Handle):
            log.warning("conversation actor %s got an unknown message %r", self.key, type(message).__name__)
            return None
        try:
            result: Any = self._handler(message.event)
        except Exception as exc:
            log.exception("conversation %s failed to handle an event", self.key)
            result = exc
        # Idle from here on. Should the reaper stop the actor now, pykka still runs the rest of this call (the
        # reply below) before it handles the stop message.
        self._on_done(self.key)
        try:
            message.reply(result)
        except Exception:
            log.exception("conversation %s could not deliver its reply", self.key)


@dataclass(slots=True)
class _Entry:
    ref: pykka.ActorRef[Any]
    started_at: float
    last_activity: float
    in_flight: int = 0  # told and not yet answered (queued or being handled)
    handled: int = 0


class ConversationRouter(Generic[E, R]):
    """Maps conversation keys to live actors; bounded, self-cleaning, observable."""

    def __init__(
        self,
        handler: Callable[[E], R],
        *,
        max_actors: int,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler
        self.max_actors = max_actors
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified whenever an actor finishes a piece of work
        self._actors: OrderedDict[str, _Entry] = OrderedDict()  # least recently active first
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        self.started_total = 0
        self.stopped_idle_total = 0
        self.evicted_total = 0
        self.refused_total = 0

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._reaper is None:
            self._stopping.clear()
            self._reaper = threading.Thread(
                target=self._reap_forever, name="conversation-reaper", daemon=True
            )
            self._reaper.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the reaper and every actor; queued messages are handled before each actor stops."""
        self._stopping.set()
        if self._reaper is not None:
            self._reaper.join(timeout)
            self._reaper = None
        with self._lock:
            refs = [entry.ref for entry in self._actors.values()]
            self._actors.clear()
        futures = [ref.stop(block=False) for ref in refs]
        deadline = time.monotonic() + timeout
        for future in futures:
            try:
                future.get(timeout=max(0.01, deadline - time.monotonic()))
            except Exception:
                log.warning("a conversation actor did not stop in time")

    # work ------------------------------------------------------------------------------------------------
    def tell(self, key: str, event: E, reply: Reply) -> None:
        """Queue `event` on the actor for `key` (started on demand); `reply` is called from its thread.

        Refused with ConversationBusy once `stop()` began: an actor started then would outlive the router
        (pykka's threads are not daemons) and keep the process from exiting.
        """
        if self._stopping.is_set():
            raise ConversationBusy("the conversation actors are shutting down")
        with self._lock:
            entry = self._actors.get(key)
            if entry is None or not entry.ref.is_alive():
                entry = self._start_locked(key)
            else:
                self._actors.move_to_end(key)
            entry.in_flight += 1
            entry.last_activity = self._clock()
            try:
                entry.ref.tell(Handle(event, reply))
            except pykka.ActorDeadError:
                # Died between our check and the tell: replace it; the message goes to the new actor.
                replacement = self._start_locked(key)
                replacement.in_flight = 1
                replacement.ref.tell(Handle(event, reply))

    def _start_locked(self, key: str) -> _Entry:
        self._actors.pop(key, None)
        if len(self._actors) >= self.max_actors and not self._evict_one_idle_locked():
            self.refused_total += 1
            raise ConversationBusy(f"{len(self._actors)} conversation actors are busy (the bound)")
        ref: pykka.ActorRef[Any] = ConversationActor.start(key, self._handler, self._done)
        now = self._clock()
        entry = _Entry(ref=ref, started_at=now, last_activity=now)
        self._actors[key] = entry
        self.started_total += 1
        return entry

    def _done(self, key: str) -> None:
        with self._lock:
            entry = self._actors.get(key)
            if entry is not None:
                entry.in_flight = max(0, entry.in_flight - 1)
                entry.handled += 1
                entry.last_activity = self._clock()
                self._actors.move_to_end(key)
            self._idle.notify_all()

    # idleness --------------------------------------------------------------------------------------------
    def _evict_one_idle_locked(self) -> bool:
        """Stop the least recently active actor with nothing in flight (the front of the map)."""
        for key, entry in self._actors.items():
            if entry.in_flight == 0:
                del self._actors[key]
                entry.ref.stop(block=False)
                self.evicted_total += 1
                return True
        return False

    def reap_idle(self) -> int:
        """Stop every actor idle for at least idle_seconds; returns how many were stopped."""
        now = self._clock()
        with self._lock:
            keys = []
            for key, entry in self._actors.items():
                if now - entry.last_activity < self.idle_seconds:
                    break  # in order of activity: everything after this one is fresher
                if entry.in_flight == 0:
                    keys.append(key)
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
