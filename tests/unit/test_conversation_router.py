"""ConversationRouter over real pykka actors: per-key order, cross-key concurrency, bounds, reaping, stop.

No database: the handler is a plain function recording what ran, on which thread, and whether two events of
one key ever overlapped. Waiting is done on Events/Conditions and thread joins, never on sleeps; the only
sleeps are the "slow handler" itself and the timing test that is loose on purpose.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from luminai_actors.actors.conversation import ConversationRouter
from luminai_actors.errors import ConversationBusy, Unavailable
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.services.inbound import InboundOutcome, conversation_key
from luminai_actors.web.webhook import handle_message

WAIT = 10.0  # generous upper bound for anything that should take milliseconds


@dataclass(frozen=True, slots=True)
class Ev:
    key: str
    seq: int
    submitter: int = 0


def actor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ConversationActor")]


def join_threads(threads: list[threading.Thread] | set[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} is still running"


class Replies:
    """A reply callback that keeps every result and lets the test wait for a count of them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Any] = []

    def __call__(self, result: Any) -> None:
        with self._cond:
            self.items.append(result)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = WAIT) -> list[Any]:
        with self._cond:
            done = self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            assert done, f"got {len(self.items)} replies of {count}"
            return list(self.items)


class Recorder:
    """The handler: records order, threads and overlap per key, then runs the optional `work`."""

    def __init__(self, work: Callable[[Ev], Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._work = work
        self.handled: list[Ev] = []
        self.threads: dict[str, list[threading.Thread]] = defaultdict(list)
        self._active: dict[str, int] = defaultdict(int)
        self.max_overlap = 0
        self._started: dict[Any, threading.Event] = defaultdict(threading.Event)

    def started(self, ev: Ev) -> threading.Event:
        with self._lock:
            return self._started[ev]

    def __call__(self, ev: Ev) -> Any:
        with self._lock:
            self._active[ev.key] += 1
            self.max_overlap = max(self.max_overlap, self._active[ev.key])
            thread = threading.current_thread()
            if thread not in self.threads[ev.key]:
                self.threads[ev.key].append(thread)
            started = self._started[ev]
        started.set()
        try:
            return self._work(ev) if self._work is not None else ev
        finally:
            with self._lock:
                self._active[ev.key] -= 1
                self.handled.append(ev)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """Builds routers and gates; the fixture opens every gate, then stops every router."""

    routers: list[ConversationRouter[Any, Any]]
    gates: list[threading.Event]

    def router(
        self,
        handler: Callable[[Any], Any],
        *,
        max_actors: int = 100,
        idle_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> ConversationRouter[Any, Any]:
        router: ConversationRouter[Any, Any] = ConversationRouter(
            handler,
            max_actors=max_actors,
            idle_seconds=idle_seconds,
            clock=clock,
        )
        self.routers.append(router)
        return router

    def gate(self) -> threading.Event:
        gate = threading.Event()
        self.gates.append(gate)
        return gate


@pytest.fixture
def harness() -> Iterator[Harness]:
    before = set(actor_threads())
    h = Harness([], [])
    yield h
    for gate in h.gates:
        gate.set()
    for router in h.routers:
        router.stop()
    join_threads(set(actor_threads()) - before)


def blocking_work(gate: threading.Event, keys: set[str] | None = None) -> Callable[[Ev], Ev]:
    """Work that waits on `gate` (only for events of `keys`, when given)."""

    def work(ev: Ev) -> Ev:
        if keys is None or ev.key in keys:
            assert gate.wait(WAIT), "the test never opened the gate"
        return ev

    return work


def sleeping_work(seconds: float) -> Callable[[Ev], Ev]:
    def work(ev: Ev) -> Ev:
        time.sleep(seconds)
        return ev

    return work


# ordering -------------------------------------------------------------------------------------------------


def test_events_of_one_key_are_handled_one_at_a_time_in_submission_order(harness: Harness) -> None:
    recorder = Recorder(sleeping_work(0.002))
    router = harness.router(recorder)
    replies = Replies()
    events = [Ev("acme|5511987654321", n) for n in range(20)]

    for ev in events:
        router.tell(ev.key, ev, replies)

    assert replies.wait(20) == events
    assert recorder.handled == events
    assert recorder.max_overlap == 1
    [thread] = recorder.threads[events[0].key]
    assert thread.name.startswith("ConversationActor")
    assert thread is not threading.current_thread()
    assert router.started_total == 1


def test_fifty_events_from_several_submitters_keep_each_submitters_order_and_never_overlap(
    harness: Harness,
) -> None:
    recorder = Recorder(sleeping_work(0.002))
    router = harness.router(recorder)
    replies = Replies()
    key = "acme|5511987654321"
    submitters, per_submitter = 5, 10
    go = threading.Barrier(submitters, timeout=WAIT)

    def submit(submitter: int) -> None:
        go.wait()
        for seq in range(per_submitter):
            router.tell(key, Ev(key, seq, submitter), replies)

    threads = [threading.Thread(target=submit, args=(s,)) for s in range(submitters)]
    for thread in threads:
        thread.start()
    join_threads(threads)

    replies.wait(submitters * per_submitter)
    assert len(recorder.handled) == submitters * per_submitter
    assert len(set(recorder.handled)) == submitters * per_submitter  # each exactly once
    for submitter in range(submitters):
        seqs = [ev.seq for ev in recorder.handled if ev.submitter == submitter]
        assert seqs == list(range(per_submitter)), f"submitter {submitter} out of order: {seqs}"
    assert recorder.max_overlap == 1
    assert len(recorder.threads[key]) == 1
    assert router.started_total == 1


def test_different_keys_are_handled_concurrently(harness: Harness) -> None:
    both_inside = threading.Barrier(2, timeout=WAIT)

    def work(ev: Ev) -> Ev:
        both_inside.wait()  # passes only if the two keys' handlers run at the same time
        return ev

    router = harness.router(Recorder(work))
    replies = Replies()
    router.tell("a", Ev("a", 0), replies)
    router.tell("b", Ev("b", 0), replies)

    results = replies.wait(2)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert {r.key for r in results} == {"a", "b"}


def test_two_slow_keys_finish_in_about_one_handler_time(harness: Harness) -> None:
    handler_seconds = 0.4
    recorder = Recorder(sleeping_work(handler_seconds))
    router = harness.router(recorder)
    replies = Replies()

    started = time.monotonic()
    router.tell("a", Ev("a", 0), replies)
    router.tell("b", Ev("b", 0), replies)
    replies.wait(2)
    elapsed = time.monotonic() - started

    assert handler_seconds <= elapsed < 1.75 * handler_seconds  # serial handling would take 2x
    assert recorder.threads["a"] != recorder.threads["b"]


# failures -------------------------------------------------------------------------------------------------


def test_a_handler_exception_is_the_reply_and_the_same_actor_handles_the_next_events(
    harness: Harness,
) -> None:
    raised: list[Exception] = []

    def work(ev: Ev) -> Ev:
        if ev.seq == 1:
            error = ValueError(f"bad event {ev.seq}")
            raised.append(error)
            raise error
        return ev

    recorder = Recorder(work)
    router = harness.router(recorder)
    replies = Replies()
    events = [Ev("k", n) for n in range(4)]
    for ev in events:
        router.tell("k", ev, replies)

    results = replies.wait(4)
    assert results[0] == events[0]
    assert results[1] is raised[0]
    assert results[2:] == events[2:]
    assert recorder.handled == events
    assert len(recorder.threads["k"]) == 1
    assert router.started_total == 1
    [snap] = router.snapshot()
    assert snap["alive"] is True
    assert snap["handled"] == 4
    assert snap["inFlight"] == 0

    router.tell("k", Ev("k", 4), replies)
    assert replies.wait(5)[4] == Ev("k", 4)
    assert router.started_total == 1


def test_a_reply_callback_that_raises_does_not_kill_the_actor(harness: Harness) -> None:
    router = harness.router(Recorder())
    replies = Replies()

    def bad_reply(result: Any) -> None:
        raise RuntimeError("the caller went away")

    router.tell("k", Ev("k", 0), bad_reply)
    router.tell("k", Ev("k", 1), replies)

    assert replies.wait(1) == [Ev("k", 1)]
    assert router.started_total == 1


# the max_actors bound ---------------------------------------------------------------------------------------


def test_at_the_bound_with_every_actor_busy_a_new_key_is_refused(harness: Harness) -> None:
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate))
    router = harness.router(recorder, max_actors=2)
    replies = Replies()
    for key in ("a", "b"):
        router.tell(key, Ev(key, 0), replies)
        assert recorder.started(Ev(key, 0)).wait(WAIT)

    with pytest.raises(ConversationBusy):
        router.tell("c", Ev("c", 0), replies)
    assert router.refused_total == 1
    assert router.started_total == 2
    assert len(router) == 2

    gate.set()
    replies.wait(2)
    router.tell("c", Ev("c", 1), replies)  # now an idle actor can make room
    assert replies.wait(3)[2] == Ev("c", 1)
    assert Ev("c", 0) not in recorder.handled  # the refused event was not queued anywhere
    assert router.refused_total == 1
    assert len(router) == 2


def test_at_the_bound_the_longest_idle_actor_is_evicted_to_make_room(harness: Harness) -> None:
    clock = FakeClock()
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate, keys={"busy"}))
    router = harness.router(recorder, max_actors=3, clock=clock)
    replies = Replies()

    router.tell("old", Ev("old", 0), replies)
    replies.wait(1)
    clock.now += 10
    router.tell("recent", Ev("recent", 0), replies)
    replies.wait(2)
    clock.now += 10
    router.tell("busy", Ev("busy", 0), replies)
    assert recorder.started(Ev("busy", 0)).wait(WAIT)
    old_thread = recorder.threads["old"][0]

    router.tell("new", Ev("new", 0), replies)

    assert replies.wait(3)[2] == Ev("new", 0)
    assert {s["key"] for s in router.snapshot()} == {"recent", "busy", "new"}
    join_threads([old_thread])
    assert router.refused_total == 0
    assert router.started_total == 4
    assert router.evicted_total == 1


def test_eviction_follows_the_latest_activity_not_the_start_order(harness: Harness) -> None:
    clock = FakeClock()
    recorder = Recorder()
    router = harness.router(recorder, max_actors=3, clock=clock)
    replies = Replies()
    for n, key in enumerate(("a", "b", "c")):
        router.tell(key, Ev(key, 0), replies)
        replies.wait(n + 1)
        clock.now += 1
    router.tell("a", Ev("a", 1), replies)  # "a" started first but is now the most recently active
    replies.wait(4)

    router.tell("d", Ev("d", 0), replies)
    replies.wait(5)
    assert {s["key"] for s in router.snapshot()} == {"a", "c", "d"}  # "b" was the longest idle
    router.tell("e", Ev("e", 0), replies)
    replies.wait(6)
    assert {s["key"] for s in router.snapshot()} == {"a", "d", "e"}
    assert (router.evicted_total, router.refused_total) == (2, 0)


# idle reaping ---------------------------------------------------------------------------------------------


def test_reap_idle_stops_idle_actors_and_spares_one_with_work_in_flight(harness: Harness) -> None:
    clock = FakeClock()
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate, keys={"busy"}))
    router = harness.router(recorder, idle_seconds=5.0, clock=clock)
    replies = Replies()
    for key in ("a", "b"):
        router.tell(key, Ev(key, 0), replies)
    replies.wait(2)
    router.tell("busy", Ev("busy", 0), replies)
    assert recorder.started(Ev("busy", 0)).wait(WAIT)
    router.tell("busy", Ev("busy", 1), replies)  # a second one waits in the mailbox
    threads_before = set(actor_threads())

    clock.now += 4.9
    assert router.reap_idle() == 0  # not idle long enough yet
    clock.now += 10
    assert router.reap_idle() == 2

    reaped = recorder.threads["a"] + recorder.threads["b"]
    join_threads(reaped)
    assert set(reaped) <= threads_before - set(actor_threads())
    assert len(actor_threads()) <= len(threads_before) - 2
    assert router.stopped_idle_total == 2
    assert [s["key"] for s in router.snapshot()] == ["busy"]
    busy_thread = recorder.threads["busy"][0]
    assert busy_thread.is_alive()

    gate.set()
    replies.wait(4)
    assert recorder.handled[-2:] == [Ev("busy", 0), Ev("busy", 1)]  # the queued one was not dropped
    clock.now += 10
    assert router.reap_idle() == 1
    join_threads([busy_thread])
    assert len(router) == 0


def test_the_reaper_thread_started_by_start_reaps_by_itself(harness: Harness) -> None:
    recorder = Recorder()
    router = harness.router(recorder, idle_seconds=0.1)
    router.start()
    replies = Replies()
    router.tell("k", Ev("k", 0), replies)
    replies.wait(1)
    [thread] = recorder.threads["k"]

    join_threads([thread])  # nobody but the reaper stops it

    assert router.stopped_idle_total == 1
    assert len(router) == 0
    assert thread not in actor_threads()


def test_a_message_for_a_reaped_key_starts_a_fresh_actor_and_is_handled(harness: Harness) -> None:
    clock = FakeClock()
    recorder = Recorder()
    router = harness.router(recorder, idle_seconds=1.0, clock=clock)
    replies = Replies()
    router.tell("k", Ev("k", 0), replies)
    replies.wait(1)
    clock.now += 2
    assert router.reap_idle() == 1
    [first] = recorder.threads["k"]
    join_threads([first])

    router.tell("k", Ev("k", 1), replies)

    assert replies.wait(2)[1] == Ev("k", 1)
    assert router.started_total == 2
    second = recorder.threads["k"][1]
    assert second is not first
    assert second.is_alive()


def test_nothing_is_dropped_while_a_fast_reaper_races_the_messages(harness: Harness) -> None:
    """idle_seconds=0: every idle moment is a chance to reap; a tell must never land on a stopping actor."""
    recorder = Recorder(sleeping_work(0.001))
    router = harness.router(recorder, idle_seconds=0.0)
    router.start()
    replies = Replies()
    events = [Ev("k", n) for n in range(200)]
    for ev in events:
        router.tell("k", ev, replies)
        if ev.seq % 3 == 0:
            replies.wait(ev.seq + 1)  # let the actor go idle so that the reaper can take it
        if ev.seq % 25 == 0:
            join_threads(recorder.threads["k"][-1:])  # and sometimes wait until it did

    # Handling order is the guarantee; a reply may be delivered by a reaped actor just after its successor
    # replied (the router counts an event done before its reply callback runs), so compare replies as a set.
    assert sorted(replies.wait(len(events)), key=lambda ev: ev.seq) == events
    assert recorder.handled == events
    assert recorder.max_overlap == 1
    assert router.started_total >= 8  # the reaper really did stop actors between the messages


# observation ----------------------------------------------------------------------------------------------


def test_snapshot_and_mailbox_show_the_waiting_events_while_the_actor_is_blocked(harness: Harness) -> None:
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate))
    router = harness.router(recorder)
    replies = Replies()
    first, *waiting = [Ev("k", n) for n in range(4)]
    router.tell("k", first, replies)
    assert recorder.started(first).wait(WAIT)
    for ev in waiting:
        router.tell("k", ev, replies)

    [snap] = router.snapshot()
    assert snap["key"] == "k"
    assert snap["mailboxDepth"] == 3
    assert snap["inFlight"] == 4
    assert snap["handled"] == 0
    assert snap["alive"] is True
    assert router.mailbox("k") == waiting
    assert router.mailbox("unknown") == []
    assert router.idle() is False

    gate.set()
    assert replies.wait(4) == [first, *waiting]
    assert router.idle() is True
    [snap] = router.snapshot()
    assert snap["mailboxDepth"] == 0
    assert snap["inFlight"] == 0
    assert snap["handled"] == 4
    assert router.mailbox("k") == []


def test_idle_is_false_while_work_is_queued_and_true_after(harness: Harness) -> None:
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate, keys={"slow"}))
    router = harness.router(recorder)
    replies = Replies()
    assert router.idle() is True  # no actors at all

    router.tell("fast", Ev("fast", 0), replies)
    router.tell("slow", Ev("slow", 0), replies)
    assert replies.wait(1) == [Ev("fast", 0)]
    assert router.idle() is False  # "slow" still has its event

    gate.set()
    replies.wait(2)
    assert router.idle() is True


# stop -----------------------------------------------------------------------------------------------------


def test_stop_handles_already_queued_events_then_leaves_no_actor_threads(harness: Harness) -> None:
    before = set(actor_threads())
    gate = harness.gate()
    recorder = Recorder(blocking_work(gate))
    router = harness.router(recorder)
    router.start()
    replies = Replies()
    events = {key: [Ev(key, n) for n in range(5)] for key in ("a", "b")}
    for key, evs in events.items():
        for ev in evs:
            router.tell(key, ev, replies)
    for key in events:
        assert recorder.started(events[key][0]).wait(WAIT)

    stopper = threading.Thread(target=router.stop)
    stopper.start()
    gate.set()
    join_threads([stopper])

    assert len(replies.items) == 10  # all handled by the time stop() returned
    for key, evs in events.items():
        assert [ev for ev in recorder.handled if ev.key == key] == evs
    assert len(router) == 0
    join_threads(set(actor_threads()) - before)
    assert not [t for t in actor_threads() if t not in before]


# the asyncio bridge of web/webhook.py --------------------------------------------------------------------

UPSERT: dict[str, Any] = {
    "event": "messages.upsert",
    "instance": "acme-support",
    "data": {
        "key": {
            "remoteJid": "5511987654321@s.whatsapp.net",
            "fromMe": False,
            "id": "3A5F1C2B9D8E7F6A5B4C",
        },
        "pushName": "Maria",
        "status": "DELIVERY_ACK",
        "message": {"conversation": "Oi, quero agendar"},
        "messageType": "conversation",
        "messageTimestamp": 1761057639,
        "source": "ios",
    },
    "destination": "https://bot.example.com/hooks/evolution",
    "date_time": "2025-10-21T11:40:39.512Z",
    "sender": "5511912345678@s.whatsapp.net",
    "server_url": "https://evo.example.com",
    "apikey": "B5E2C1D0-INSTANCE-TOKEN",
}


def upsert(n: int) -> MessageUpsert:
    payload = copy.deepcopy(UPSERT)
    payload["data"]["key"]["remoteJid"] = f"55119876543{n:02d}@s.whatsapp.net"
    payload["data"]["key"]["id"] = f"3A5F1C2B9D8E7F6A{n:04d}"
    event = parse_webhook(payload)
    assert isinstance(event, MessageUpsert)
    return event


def container_for(router: ConversationRouter[Any, Any], timeout: float = WAIT) -> Any:
    return SimpleNamespace(router=router, settings=SimpleNamespace(webhook_timeout_seconds=timeout))


def test_handle_message_keeps_the_event_loop_responsive_while_actors_work(harness: Harness) -> None:
    def handler(event: MessageUpsert) -> InboundOutcome:
        time.sleep(0.3)
        return InboundOutcome("stored", reason=event.message_id)

    router = harness.router(handler)
    container = container_for(router)
    events = [upsert(n) for n in range(20)]
    assert len({conversation_key(e) for e in events}) == 20

    async def scenario() -> tuple[list[InboundOutcome], list[float], float]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks.append(time.monotonic())

        tick_task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # let the ticker start before the work
        started = time.monotonic()
        outcomes = await asyncio.gather(*(handle_message(container, e) for e in events))
        stop.set()
        await tick_task
        return list(outcomes), ticks, started

    outcomes, ticks, started = asyncio.run(scenario())

    assert [o.reason for o in outcomes] == [e.message_id for e in events]
    # A loop blocked by a handler would stall for its whole 0.3 s sleep; one that stays responsive keeps
    # ticking throughout. Counting ticks in a window assumed an idle machine (11 of 15 on a loaded one);
    # the longest gap between ticks is the property itself.
    during = [started, *(t for t in ticks if t >= started)]
    longest = max(b - a for a, b in itertools.pairwise(during))
    assert len(during) > 3
    assert longest < 0.2, f"the event loop stalled for {longest:.3f} s while actors worked"
    assert router.started_total == 20


def test_handle_message_turns_a_handlers_crash_into_unavailable_on_the_loop(harness: Harness) -> None:
    def handler(event: MessageUpsert) -> InboundOutcome:
        raise LookupError(f"no agent for {event.instance}")

    router = harness.router(handler)

    async def scenario() -> None:
        await handle_message(container_for(router), upsert(1))

    with pytest.raises(Unavailable, match="LookupError") as raised:
        asyncio.run(scenario())
    assert isinstance(raised.value.__cause__, LookupError)  # kept for the log, answered as 503
    assert router.started_total == 1
    assert router.snapshot()[0]["alive"] is True


def test_handle_message_answers_conversation_busy_when_the_actor_is_too_slow(harness: Harness) -> None:
    gate = harness.gate()

    def handler(event: MessageUpsert) -> InboundOutcome:
        assert gate.wait(WAIT)
        return InboundOutcome("stored")

    router = harness.router(handler)

    async def scenario() -> None:
        await handle_message(container_for(router, timeout=0.1), upsert(1))

    with pytest.raises(ConversationBusy):
        asyncio.run(scenario())
    gate.set()  # the late reply must not break anything (the loop is closed by then)


def test_after_stop_a_new_event_is_refused_instead_of_starting_an_actor(harness: Harness) -> None:
    router = harness.router(Recorder())
    replies = Replies()
    router.tell("k", Ev("k", 0), replies)
    replies.wait(1)
    threads_before = set(actor_threads())
    router.stop()

    with pytest.raises(ConversationBusy):
        router.tell("late", Ev("late", 0), replies)
    assert not (set(actor_threads()) - threads_before)  # no actor was started for it
    assert len(router) == 0


# the fast lane ----------------------------------------------------------------------------------------------


def test_replies_from_other_threads_reach_the_loop_in_order_with_fewer_wake_ups_than_replies() -> None:
    from luminai_actors.web.webhook import _loop_inbox

    async def scenario() -> tuple[dict[int, list[int]], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        inbox = _loop_inbox(loop)
        assert _loop_inbox(loop) is inbox  # one per loop
        got: dict[int, list[int]] = defaultdict(list)
        all_in = asyncio.Event()

        def deliver(item: tuple[int, int]) -> None:
            assert threading.current_thread() is threading.main_thread()  # on the loop's thread
            got[item[0]].append(item[1])
            if sum(len(v) for v in got.values()) == 4 * 500:
                all_in.set()

        def poster(n: int) -> None:
            for k in range(500):
                inbox.post(deliver, (n, k))

        threads = [threading.Thread(target=poster, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await asyncio.wait_for(all_in.wait(), WAIT)
        for t in threads:
            t.join(WAIT)
        return got, wakeups

    got, wakeups = asyncio.run(scenario())
    assert dict(got) == {n: list(range(500)) for n in range(4)}
    assert 1 <= wakeups < 4 * 500
