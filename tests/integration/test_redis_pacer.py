"""RedisPacer on a real Redis: one slot table shared by every worker process, Redis's clock."""

from __future__ import annotations

import time

import pytest
import redis

from luminai_actors.services.pacing import RedisPacer

pytestmark = pytest.mark.integration


def test_slots_are_shared_between_pacers_and_free_up_after_the_interval(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first, second = RedisPacer(client, rate=5), RedisPacer(client, rate=5)  # two worker processes

    assert first.try_acquire("acme") == 0.0
    wait = second.try_acquire("acme")
    assert 0.1 < wait <= 0.2
    assert second.try_acquire("other") == 0.0
    time.sleep(wait + 0.01)
    assert second.try_acquire("acme") == 0.0
    client.close()
