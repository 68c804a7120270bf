"""Wake-on-enqueue for Dramatiq's Redis broker: an idle worker learns of new work at once instead of polling.

Dramatiq's Redis consumer, when a fetch finds nothing, sleeps with a growing backoff (up to the worker's
`worker_timeout`, our `LUMINAI_WORKER_POLL_MS`) before it fetches again, so every hop of a task waits for the
next poll. Here each enqueue also pushes a token onto a small per-queue Redis list (the "wake list", key
`<namespace>:__wake__.<queue>`, for delay queues `X.DQ` too), and the consumer spends its idle wait in a
BLPOP on that list with the same timeout instead of a sleep. So:

- an enqueue wakes one blocked consumer of that queue at once (Redis hands each pushed token to one blocked
  client); with several worker processes, each enqueue wakes at least one of them;
- a token pushed while nobody waits stays in the list (at most `WAKE_TOKENS_MAX` of them) and only makes the
  next idle wait return at once: one extra, empty fetch, never a missed message. The consumer always fetches
  before it waits, and a message is in its queue before its token is pushed, so no wake-up can be lost;
- the wait never lasts longer than Dramatiq's sleep would have (the same backoff), so delayed messages,
  heartbeats and queue maintenance keep at least their old pace; without a token it behaves as before.
  One BLPOP blocks at most `max_wait_ms` (2 s): redis-py gives its connections a 5 s socket timeout by
  default, which a longer BLPOP would run into; a longer backoff is then cut short (one more fetch), which
  only matters for `worker_timeout` above 2 s;
- a message delayed by `WAKE_DELAY_BELOW_MS` (1 s) or more pushes no token (the push is half the CPU of an
  enqueue in the web server): the delay queue's consumer fetches it at its next poll, at most one idle wait
  (`worker_timeout`, 100 ms by default) after the enqueue, long before it is due, and Dramatiq releases a
  delayed message at the first turn of that consumer's loop after its time either way (retries of 2 s and
  4 s, debounce windows). Immediate and short-delay enqueues still wake a consumer.

Everything else (fetch, ack, nack, requeue, prefetch accounting, heartbeats, the Lua scripts) is Dramatiq's.
Only the consumer's `__next__` is written again here, because the sleep sits in the middle of it.

`pipelined()` lets one thread send many enqueues in one round trip: inside the block, the enqueue command of
Dramatiq's dispatch script (and the wake pushes) go into a redis-py pipeline of that thread, executed when
the block ends. Every request of `actors.tasks.DramatiqDispatcher` uses it, so an enqueue and its wake-up
are one round trip, not two.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

log = logging.getLogger(__name__)

#: Tokens kept at most per wake list. One would do for consumers that are waiting (Redis hands the pushed
#: token to one blocked client when the MULTI ends, so the trim never takes it from them); a few more let
#: several idle processes each find one after a burst nobody waited for. A surplus token costs an empty fetch.
WAKE_TOKENS_MAX = 8

#: Messages delayed by at least this many milliseconds push no wake token (see the module's docstring).
WAKE_DELAY_BELOW_MS = 1_000


def wake_key(namespace: str, queue_name: str) -> str:
    """The wake list of one queue (its actual name: `ai`, or the delay queue `ai.DQ`)."""
    return f"{namespace}:__wake__.{queue_name}"


class _PipelinedDispatch:
    """Dramatiq's dispatch script, sending "enqueue" into the calling thread's pipeline while it has one.

    It goes in as a plain EVALSHA: handing redis-py the Script object would make the pipeline ask Redis
    whether the script exists (one more round trip) every time it is sent. A script Redis lost (it was
    restarted) answers NOSCRIPT, and `WakingRedisBroker.pipelined` runs those enqueues again directly.
    """

    def __init__(self, script: Any, local: threading.local) -> None:
        self.script = script
        self._local = local

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        pipe = getattr(self._local, "pipe", None)
        if pipe is not None and client is None and args and args[0] == "enqueue":
            keys, args = list(keys or ()), list(args)
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)  # queued: sent at the block's end
            self._local.queued.append((len(pipe) - 1, keys, args))
            return None
        return self.script(keys=keys, args=args, client=client)


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose enqueue also wakes an idle consumer of the queue (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # dramatiq leaves it unannotated
        self._local = threading.local()
        self._dispatch_script = _PipelinedDispatch(self.scripts["dispatch"], self._local)
        self.scripts["dispatch"] = self._dispatch_script

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Enqueues made by this thread inside the block reach Redis in one round trip when it ends.

        Redis errors surface at the end of the block (none of the enqueues can be assumed to have happened);
        a block that raises sends nothing. Nested blocks share the outer one's pipeline.
        """
        if getattr(self._local, "pipe", None) is not None:
            yield
            return
        pipe = self.client.pipeline(transaction=False)
        self._local.pipe, self._local.queued = pipe, []
        try:
            yield
        finally:
            self._local.pipe = None
        queued: list[tuple[int, list[Any], list[Any]]] = self._local.queued
        if not len(pipe):
            return
        results = pipe.execute(raise_on_error=False)
        for index, keys, args in queued:
            if isinstance(results[index], redis.exceptions.NoScriptError):
                self._dispatch_script.script(keys=keys, args=args)  # loads the script, then enqueues
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, redis.exceptions.NoScriptError):
                raise result

    @property
    def consumer_class(self) -> type[WakingRedisConsumer]:
        return WakingRedisConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued: Message[Any] = super().enqueue(message, delay=delay)
        if not delay or delay < WAKE_DELAY_BELOW_MS:  # a longer delay is fetched by the next poll in time
            self.wake(str(enqueued.queue_name))  # the queue it went to: `X`, or `X.DQ` when delayed
        return enqueued

    def wake(self, queue_name: str) -> None:
        """Push one token onto the queue's wake list and trim it, in one round trip (MULTI/EXEC)."""
        key = wake_key(self.namespace, queue_name)
        batch = getattr(self._local, "pipe", None)
        if batch is not None:  # inside `pipelined()`: sent with the enqueues (a blocked client is served at
            batch.lpush(key, b"1")  # the push, before the trim)
            batch.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(key, b"1")
            pipe.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
            pipe.execute()
        except redis.RedisError as exc:
            # The message itself is stored; a consumer just finds it at its next poll instead of at once.
            log.warning("wake-up for queue %s not sent (the message is enqueued): %s", queue_name, exc)


class WakingRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that its idle wait is a BLPOP on the queue's wake list."""

    #: The longest single BLPOP, below redis-py's default socket timeout (5 s).
    max_wait_ms = 2_000

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.wake_key = wake_key(broker.namespace, queue_name)

    def __next__(self) -> MessageProxy | None:
        """The next message, or None after an idle wait (the worker then runs its housekeeping and asks
        again). Same steps as Dramatiq's: serve the prefetched cache; when it is empty, fetch as many
        messages as the prefetch limit leaves room for; when there is no room or nothing came, wait the
        growing backoff and return None. The one difference is `_idle`."""
        try:
            while True:
                while self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # Dramatiq guards against this too (its issue #266); skip it
                        log.warning("empty entry in the message cache of queue %s skipped", self.queue_name)
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room > 0:
                    self.message_cache = self.broker.do_fetch(self.queue_name, room)
                    if self.message_cache:
                        continue
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                if room > 0:
                    self._idle(backoff_ms)
                else:
                    # Full: a token would be wasted here (another process may have room), so only wait.
                    self._pause(backoff_ms)
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _idle(self, backoff_ms: int) -> bool:
        """Wait up to `backoff_ms` for a token on the wake list; an enqueue ends the wait at once.
        True when a token ended it (the caller fetches again either way)."""
        wait_ms = min(backoff_ms, self.max_wait_ms)
        if wait_ms <= 0:
            return False  # BLPOP's timeout 0 would mean "forever"
        # A socket timeout shorter than the wait (a client option) just ends the wait early.
        with contextlib.suppress(redis.TimeoutError):
            return self.broker.client.blpop([self.wake_key], timeout=wait_ms / 1000) is not None
        return False

    def _pause(self, backoff_ms: int) -> None:
        time.sleep(backoff_ms / 1000)
