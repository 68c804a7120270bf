"""What `LuminaiHarness` reads to know when the service is done: the messages of a webhook body, and the
tasks Redis holds unacknowledged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from luminai_actors.actors.tasks import AI_QUEUE, SEND_QUEUE


def redis_unfinished(broker: RedisBroker) -> int:
    """Messages of the AI and send queues not yet acknowledged (queued, delayed, or fetched by a worker).

    Dramatiq keeps each message in `<ns>:<queue>.msgs` from enqueue until its ack (after it ran, a retry
    being enqueued before the ack), so one atomic read of these hashes sees any unfinished chain of tasks.
    """
    pipe = broker.client.pipeline(transaction=True)
    for queue in (AI_QUEUE, SEND_QUEUE):
        for name in (queue, f"{queue}.DQ"):
            pipe.hlen(f"{broker.namespace}:{name}.msgs")
    return sum(int(count) for count in pipe.execute())


def message_ids(payload: Any) -> list[str]:
    """The WhatsApp ids of the messages in an upsert body (one object or a batch)."""
    if not isinstance(payload, Mapping):
        return []
    data = payload.get("data")
    items: Sequence[Any] = data if isinstance(data, list) else [data]
    ids: list[str] = []
    for item in items:
        key = item.get("key") if isinstance(item, Mapping) else None
        message_id = key.get("id") if isinstance(key, Mapping) else None
        if isinstance(message_id, str):
            ids.append(message_id)
    return ids
