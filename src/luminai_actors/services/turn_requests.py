"""TurnRequests: a debounced burst of a lead's messages requests its AI turn once, not once per message.

A turn requested at T with the debounce window d is delayed by d in the broker, so it claims the talk no
earlier than T + d (by the worker's clock), reads every message committed before that, and waits for the
lead's pause itself (it requests itself again while the burst goes on). A message committed before
T + d - margin therefore needs no new request; the margin, min(d/2, `TURN_REQUEST_MARGIN_SECONDS`), absorbs
clock skew between the web and worker processes. A message committed later requests its own turn (and one
committed while a turn runs is found by that turn's read after its commit); the recovery sweep covers a
request that is lost anyway.

Why it is kept: without it every message of a burst is one more Redis round trip in the receiver and one
more AI-turn task for the workers to pick up and find nothing to do; `bench/budget.py` records both counts
(`ai_turn_requests`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: How long before a requested turn may start a message stops counting as covered by it (see the docstring).
TURN_REQUEST_MARGIN_SECONDS = 0.25


@dataclass
class _Requested:
    at: float
    window: float


class TurnRequests:
    """When a talk's AI turn was last requested, so a debounced burst is requested once (bounded memory)."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = 50_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._lock = threading.Lock()
        self._requested: dict[uuid.UUID, _Requested] = {}

    def covered(self, talk_id: uuid.UUID, debounce: float) -> bool:
        """True when a turn requested earlier will still run after a message stored now."""
        if debounce <= 0:
            return False
        with self._lock:
            previous = self._requested.get(talk_id)
        if previous is None:
            return False
        margin = min(previous.window / 2, TURN_REQUEST_MARGIN_SECONDS)
        return self._clock() < previous.at + previous.window - margin

    def mark(self, talk_id: uuid.UUID, requested_at: float, debounce: float) -> None:
        if debounce <= 0:
            return
        with self._lock:
            if len(self._requested) >= self._capacity:
                now = self._clock()
                for stale in [k for k, v in self._requested.items() if now >= v.at + v.window]:
                    del self._requested[stale]
                if len(self._requested) >= self._capacity:
                    self._requested.clear()
            self._requested[talk_id] = _Requested(requested_at, debounce)

    def forget(self, talk_ids: Sequence[uuid.UUID]) -> None:
        with self._lock:
            for talk_id in talk_ids:
                self._requested.pop(talk_id, None)

    def now(self) -> float:
        return self._clock()
