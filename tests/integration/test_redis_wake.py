"""Wake-on-enqueue (`actors/broker.py`) on a real Redis: an idle consumer is woken by an enqueue, tokens stay
bounded, a token left while nobody waits costs one extra fetch, a message delayed by a second or more pushes
no token and is fetched by the poll, and a lost Redis surfaces as Dramatiq's ConnectionClosed, as it does
with Dramatiq's own consumer.

The consumers here wait with `worker_timeout` = 60 s and start "long idle" (their next wait is 30-60 s), so a
message can only arrive within the bounded waits below if the enqueue woke the consumer; the bounds only keep
a broken wake from hanging the suite, they measure nothing.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from luminai_actors.actors.broker import (
    WAKE_DELAY_BELOW_MS,
    WAKE_TOKENS_MAX,
    WakingRedisBroker,
    WakingRedisConsumer,
    wake_key,
)
from luminai_actors.testing.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

LONG_MS = 60_000  # worker_timeout of the consumers under test
LONG_IDLE_MISSES = 30  # Dramatiq's backoff after this many empty fetches is 50-100 % of the timeout: 30-60 s
BOUND_S = 15.0  # how long a test waits for what a wake-up should bring at once (far below 30 s)


class LongIdleConsumer(WakingRedisConsumer):
    """A consumer with a 60 s `worker_timeout` that has been idle for long: its next wait is 30-60 s.
    (The timeout is set here rather than on the Worker, whose threads would then take 60 s to stop.)"""

    max_wait_ms = LONG_MS  # its connections have no socket timeout (see Brokers.make)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.timeout = LONG_MS
        self.misses = LONG_IDLE_MISSES


class LongIdleBroker(WakingRedisBroker):
    @property
    def consumer_class(self) -> type[WakingRedisConsumer]:
        return LongIdleConsumer


class Brokers:
    """Brokers on the test Redis, each on its own connections named `name` (visible in CLIENT LIST)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.namespace = f"wake-test-{secrets.token_hex(4)}"
        self.admin = redis.Redis.from_url(redis_url)
        self.opened: list[WakingRedisBroker] = []

    def make(
        self, url: str | None = None, cls: type[WakingRedisBroker] = LongIdleBroker
    ) -> WakingRedisBroker:
        name = f"{self.namespace}-{len(self.opened)}"
        # No socket timeout, so that a 30-60 s BLPOP can only end by a token (or the test's release).
        client = redis.Redis.from_url(url or self.redis_url, client_name=name, socket_timeout=None)
        broker = cls(client=client, namespace=self.namespace)
        broker.client_name = name
        self.opened.append(broker)
        return broker

    def blocked(self, broker: WakingRedisBroker) -> int:
        """How many of this broker's connections Redis holds blocked in a BLPOP right now."""
        return sum(
            1
            for c in self.admin.client_list()
            if c.get("name") == broker.client_name and c.get("cmd") == "blpop" and "b" in c.get("flags", "")
        )

    def wait_blocked(self, broker: WakingRedisBroker, count: int = 1) -> None:
        deadline = time.monotonic() + BOUND_S
        while self.blocked(broker) < count:
            assert time.monotonic() < deadline, "the consumer never went into its idle wait"
            time.sleep(0.01)

    def release(self, *queues: str) -> None:
        """Wake whatever is still waiting so that no thread outlives its test."""
        for queue in queues:
            self.admin.lpush(wake_key(self.namespace, queue), b"1")

    def close(self) -> None:
        for broker in self.opened:
            broker.client.close()
            broker.client.connection_pool.disconnect()
        for key in self.admin.scan_iter(f"{self.namespace}:*"):
            self.admin.delete(key)
        self.admin.close()


@pytest.fixture
def brokers(redis_url: str) -> Iterator[Brokers]:
    made = Brokers(redis_url)
    yield made
    made.close()


def message(queue: str, body: str = "x") -> Message[Any]:
    return Message(queue_name=queue, actor_name="noop", args=(body,), kwargs={}, options={})


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def next_message(consumer: WakingRedisConsumer, stop: threading.Event | None = None) -> Any:
    """What the worker's consumer thread does: ask again after every idle wait until a message comes
    (or, when `stop` is set, until the wait it is in ends)."""
    while stop is None or not stop.is_set():
        got = next(consumer)
        if got is not None:
            return got
    return None


@pytest.mark.parametrize(("queue", "delay"), [("q", None), ("q.DQ", 1)])
def test_a_consumer_blocked_in_its_idle_wait_gets_a_message_enqueued_by_another_thread(
    brokers: Brokers, queue: str, delay: int | None
) -> None:
    consumer_broker, producer = brokers.make(), brokers.make()
    consumer = consumer_broker.consume(queue, prefetch=1, timeout=LONG_MS)
    thread, out = in_thread(lambda: next_message(consumer))
    try:
        brokers.wait_blocked(consumer_broker)  # in BLPOP, with 30-60 s to go
        sent = producer.enqueue(message("q", "hello"), delay=delay)
        thread.join(BOUND_S)
        assert not thread.is_alive(), "the enqueue did not end the consumer's idle wait"
    finally:
        brokers.release(queue)
        thread.join(BOUND_S)
    assert "error" not in out, out
    assert sent.queue_name == queue
    assert out["value"].message_id == sent.message_id
    assert out["value"].args == ("hello",)


def test_each_enqueue_leaves_one_token_on_its_own_queue_and_the_list_stays_bounded(brokers: Brokers) -> None:
    producer = brokers.make()
    for i in range(WAKE_TOKENS_MAX * 3):
        producer.enqueue(message("q", str(i)))
    producer.enqueue(message("q"), delay=WAKE_DELAY_BELOW_MS - 1)  # a short delay still wakes

    assert brokers.admin.llen(wake_key(brokers.namespace, "q")) == WAKE_TOKENS_MAX
    assert brokers.admin.llen(wake_key(brokers.namespace, "q.DQ")) == 1
    assert brokers.admin.llen(f"{brokers.namespace}:q") == WAKE_TOKENS_MAX * 3  # every message enqueued
    assert brokers.admin.llen(f"{brokers.namespace}:q.DQ") == 1


@pytest.mark.parametrize("delay", [WAKE_DELAY_BELOW_MS, 2_000, 60_000])
def test_a_message_delayed_by_a_second_or_more_pushes_no_token_and_the_poll_still_fetches_it(
    brokers: Brokers, delay: int
) -> None:
    """The delay queue's consumer, polling every 100 ms (the default `worker_timeout`), finds the message
    without a token; the worker then holds it until its eta (Dramatiq's delay queue), so the missing token
    never makes it late."""
    producer, consumer_broker = brokers.make(), brokers.make(cls=WakingRedisBroker)
    consumer = consumer_broker.consume("q.DQ", prefetch=1, timeout=100)
    stop = threading.Event()
    thread, out = in_thread(lambda: next_message(consumer, stop))
    try:
        brokers.wait_blocked(consumer_broker)  # idle, between two polls
        sent = producer.enqueue(message("q", "later"), delay=delay)
        assert brokers.admin.llen(wake_key(brokers.namespace, "q.DQ")) == 0  # no wake-up pushed
        thread.join(BOUND_S)
    finally:
        stop.set()
        thread.join(BOUND_S)
    assert sent.queue_name == "q.DQ"
    assert out.get("value") is not None, out
    assert out["value"].message_id == sent.message_id
    assert out["value"].options["eta"] == sent.options["eta"]
    assert brokers.admin.llen(wake_key(brokers.namespace, "q.DQ")) == 0


def test_a_token_left_while_nobody_waited_only_ends_the_next_wait_early(brokers: Brokers) -> None:
    broker = brokers.make()
    consumer = broker.consume("q", prefetch=1, timeout=LONG_MS)
    sent = broker.enqueue(message("q"))  # nobody waits: the token stays
    got = next(consumer)  # the fetch comes first, so the message needs no token
    assert got is not None
    assert got.message_id == sent.message_id
    consumer.ack(got)
    assert brokers.admin.llen(consumer.wake_key) == 1

    thread, out = in_thread(lambda: consumer._idle(LONG_MS))  # the left token ends the wait at once
    thread.join(BOUND_S)
    if thread.is_alive():
        brokers.release("q")
        thread.join(BOUND_S)
    assert out == {"value": True}
    assert brokers.admin.llen(consumer.wake_key) == 0
    assert brokers.admin.llen(f"{brokers.namespace}:q") == 0


def test_with_two_idle_consumers_one_enqueue_wakes_one_and_it_gets_the_message(brokers: Brokers) -> None:
    """Two worker processes (two brokers, two connections) waiting on one queue."""
    first, second, producer = brokers.make(), brokers.make(), brokers.make()
    consumers = [b.consume("q", prefetch=1, timeout=LONG_MS) for b in (first, second)]
    stop = threading.Event()
    runs = [in_thread(lambda c=c: next_message(c, stop)) for c in consumers]
    try:
        brokers.wait_blocked(first)
        brokers.wait_blocked(second)
        sent = producer.enqueue(message("q"))
        deadline = time.monotonic() + BOUND_S
        while all(thread.is_alive() for thread, _ in runs) and time.monotonic() < deadline:
            time.sleep(0.01)
        received = [out["value"] for thread, out in runs if not thread.is_alive() and "value" in out]
    finally:
        stop.set()
        brokers.release("q", "q")
        for thread, _ in runs:
            thread.join(BOUND_S)
    assert [m.message_id for m in received] == [sent.message_id]


def test_a_worker_runs_a_task_enqueued_by_another_process_while_its_consumers_wait(
    brokers: Brokers, redis_url: str
) -> None:
    broker = brokers.make()
    ran = threading.Event()

    def noop(body: str) -> None:
        ran.set()

    dramatiq.Actor(noop, broker=broker, actor_name="noop", queue_name="q", priority=0, options={})
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        brokers.wait_blocked(broker, 2)  # the consumers of `q` and `q.DQ`, 30-60 s from their next fetch
        producer = (
            "import sys, redis; from dramatiq.message import Message;"
            "from luminai_actors.actors.broker import WakingRedisBroker;"
            "b = WakingRedisBroker(client=redis.Redis.from_url(sys.argv[1]), namespace=sys.argv[2]);"
            "b.enqueue(Message(queue_name='q', actor_name='noop', args=('x',), kwargs={}, options={}));"
            "b.client.close()"
        )
        subprocess.run([sys.executable, "-c", producer, redis_url, brokers.namespace], check=True, timeout=60)
        assert ran.wait(BOUND_S), "the worker did not wake for the new task"
    finally:
        stopping = threading.Event()
        waker = threading.Thread(target=_keep_waking, args=(brokers, stopping), daemon=True)
        waker.start()  # consumers still in a long wait must see that the worker stops
        worker.stop(timeout=int(BOUND_S * 1000))
        stopping.set()
        waker.join(BOUND_S)


def _keep_waking(brokers: Brokers, stopping: threading.Event) -> None:
    while not stopping.wait(0.05):
        brokers.release("q", "q.DQ")


def test_a_consumer_waiting_when_redis_goes_away_raises_connection_closed(brokers: Brokers) -> None:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = brokers.redis_url.replace(":6379", f":{proxy.port}")
        broker = brokers.make(url)
        consumer = broker.consume("q", prefetch=1, timeout=LONG_MS)
        thread, out = in_thread(lambda: next_message(consumer))
        brokers.wait_blocked(broker)
        proxy.cut()  # like Redis going down under a waiting worker
        thread.join(BOUND_S)
        assert not thread.is_alive(), "the consumer kept waiting on a dead connection"
        assert isinstance(out.get("error"), ConnectionClosed), out  # Dramatiq's worker restarts it

        with pytest.raises(ConnectionClosed):
            next(consumer)  # the fetch fails the same way
        with pytest.raises(redis.ConnectionError):
            broker.enqueue(message("q"))  # the caller learns it (DramatiqDispatcher: BrokerUnavailable)


def test_a_lost_wake_up_push_is_logged_not_raised(brokers: Brokers, caplog: pytest.LogCaptureFixture) -> None:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        broker = brokers.make(brokers.redis_url.replace(":6379", f":{proxy.port}"))
        proxy.cut()
        with caplog.at_level(logging.WARNING, logger="luminai_actors.actors.broker"):
            broker.wake("q")  # the message is enqueued already; consumers still poll
    assert any("wake-up for queue q not sent" in r.getMessage() for r in caplog.records)


def test_enqueues_inside_pipelined_reach_redis_together_when_the_block_ends(
    brokers: Brokers, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer, other = brokers.make(), brokers.make()
    producer.enqueue(message("warm", "loads the scripts"))
    queue_key = f"{brokers.namespace}:q"
    delayed_key = f"{brokers.namespace}:q.DQ"
    direct: list[Any] = []  # commands the producer sent on its own, outside a pipeline
    executes: list[int] = []  # the producer's pipelines sent, by size
    real_command, real_execute = producer.client.execute_command, redis.client.Pipeline.execute

    def counting_command(*args: Any, **options: Any) -> Any:
        direct.append(args[0])
        return real_command(*args, **options)

    def counting_execute(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        if pipe.connection_pool is producer.client.connection_pool:
            executes.append(len(pipe))
        return real_execute(pipe, raise_on_error)

    def no_immediate(pipe: redis.client.Pipeline, *args: Any, **options: Any) -> Any:
        raise AssertionError(f"an extra round trip before the pipeline: {args[:1]}")  # e.g. SCRIPT EXISTS

    monkeypatch.setattr(producer.client, "execute_command", counting_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    monkeypatch.setattr(redis.client.Pipeline, "immediate_execute_command", no_immediate)
    with producer.pipelined():
        for i in range(20):
            producer.enqueue(message("q", f"now {i}"))
            producer.enqueue(message("q", f"later {i}"), delay=2_000)
        other.enqueue(message("q", "another broker's enqueue goes at once"))
        assert brokers.admin.llen(queue_key) == 1  # nothing of the block's has been sent yet
        assert brokers.admin.llen(delayed_key) == 0
        with producer.pipelined():  # nested: the same batch
            producer.enqueue(message("q", "nested"))
        assert brokers.admin.llen(queue_key) == 1
    sent_directly, pipelines = list(direct), list(executes)

    assert sent_directly == []
    assert pipelines == [41 + 2 * 21]  # one round trip: 41 scripts, a push and a trim per immediate one
    assert brokers.admin.llen(queue_key) == 22
    assert brokers.admin.llen(delayed_key) == 20
    assert brokers.admin.llen(wake_key(brokers.namespace, "q")) == WAKE_TOKENS_MAX
    consumer = producer.consume("q", prefetch=30, timeout=LONG_MS)
    bodies = set()
    for _ in range(22):
        got = next(consumer)
        assert got is not None
        bodies.add(got.args[0])
    assert bodies == {f"now {i}" for i in range(20)} | {"nested", "another broker's enqueue goes at once"}


def test_a_block_that_raises_sends_nothing_and_a_redis_failure_surfaces_at_its_end(brokers: Brokers) -> None:
    producer = brokers.make()

    def changes_its_mind() -> None:
        with producer.pipelined():
            producer.enqueue(message("q", "never"))
            raise RuntimeError("the caller changed its mind")

    with pytest.raises(RuntimeError):
        changes_its_mind()
    assert brokers.admin.llen(f"{brokers.namespace}:q") == 0

    with TcpProxy("127.0.0.1", 6379) as proxy:
        cut = brokers.make(brokers.redis_url.replace(":6379", f":{proxy.port}"))
        cut.enqueue(message("q", "connected"))  # the scripts are loaded, the connection is pooled
        proxy.cut()
        with pytest.raises(redis.ConnectionError), cut.pipelined():
            cut.enqueue(message("q", "lost"))  # queued: the error comes when the block sends it


def test_a_pipelined_enqueue_whose_script_redis_lost_is_enqueued_anyway(brokers: Brokers) -> None:
    producer = brokers.make()
    producer.enqueue(message("q", "before the restart"))
    brokers.admin.script_flush()  # what a restarted Redis looks like to a connected broker
    with producer.pipelined():
        producer.enqueue(message("q", "after the restart"))
        producer.enqueue(message("q", "and another"))
    consumer = producer.consume("q", prefetch=5, timeout=LONG_MS)
    bodies = {next(consumer).args[0] for _ in range(3)}
    assert bodies == {"before the restart", "after the restart", "and another"}
