"""Per-instance send pacing: at most `rate` sendText calls per second for one WhatsApp number.

`try_acquire(instance)` takes the instance's next send slot when it is free (returns 0.0) or says how many
seconds until it is (takes nothing). The slot table must be shared by every worker process, so with the
Redis broker it lives in Redis (one atomic script, Redis's own clock); with the in-process broker a dict
behind a lock is enough. Rate 0 turns pacing off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Pacer(Protocol):
    def try_acquire(self, instance: str) -> float: ...


class NoPacing:
    def try_acquire(self, instance: str) -> float:
        return 0.0


class MemoryPacer:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def try_acquire(self, instance: str) -> float:
        now = self._clock()
        with self._lock:
            free_at = self._next.get(instance, 0.0)
            if free_at <= now:
                self._next[instance] = now + self.interval
                return 0.0
            return free_at - now


# KEYS[1]: the instance's slot key; ARGV[1]: interval in microseconds. Returns the wait in microseconds.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if free_at <= now then
  local interval = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], tostring(now + interval), 'PX', math.ceil(interval / 1000) + 1000)
  return 0
end
return free_at - now
"""


class RedisPacer:
    def __init__(self, client: Any, rate: float, namespace: str = "luminai:pace") -> None:
        self.interval_us = int(1_000_000 / rate)
        self._namespace = namespace
        self._script = client.register_script(_ACQUIRE)

    def try_acquire(self, instance: str) -> float:
        wait_us = int(self._script(keys=[f"{self._namespace}:{instance}"], args=[self.interval_us]))
        return wait_us / 1_000_000
