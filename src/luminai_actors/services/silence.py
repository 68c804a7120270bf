"""The silence alarm: an instance that usually has traffic and sent no webhook for a while.

Evolution 2.3.7 can stop posting webhooks until it is restarted (EvolutionAPI/evolution-api#2665): the
instance stays connected, leads keep writing, and nothing reaches us. `WebhookSilence` remembers, in the
receiving process, when each instance last sent an authenticated webhook and how many it sent per hour. The
recovery sweep asks it which instances went quiet: none for `LUMINAI_SILENCE_ALERT_MINUTES` (default 30)
after at least `LUMINAI_SILENCE_ALERT_MIN_WEBHOOKS` (default 10) in the 24 hours before the silence began.
For each, the sweep logs a warning, probes `connectionState` (test-connection: it records the status) and
marks the agent (`whatsapp_metadata.webhookSilence`: the console shows a banner); `/metrics` counts them
(`luminai_webhook_silent_agents`). The first webhook after it clears the alarm at the next sweep.

Each receiver process judges the traffic it saw; behind a round-robin balancer every replica sees its share,
so each raises the alarm for a silent instance. A process that has seen no traffic since it started cannot
tell silence from a quiet instance, and raises nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from luminai_actors.errors import LuminaiError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.persistence.uow import UnitOfWorkFactory
from luminai_actors.services.whatsapp_admin import test_connection

log = logging.getLogger(__name__)

HOUR = 3600.0


@dataclass
class _Traffic:
    last: float
    hours: deque[tuple[int, int]] = field(default_factory=deque)  # (hour number, webhooks in it), 25 at most


class WebhookSilence:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._traffic: dict[str, _Traffic] = {}

    def seen(self, instance: str) -> None:
        """One authenticated webhook of `instance` arrived now."""
        now = self._clock()
        hour = int(now // HOUR)
        with self._lock:
            traffic = self._traffic.get(instance)
            if traffic is None:
                if len(self._traffic) >= 100_000:
                    return  # bounded memory: an instance first seen past this is not watched
                traffic = self._traffic[instance] = _Traffic(now)
            traffic.last = now
            if traffic.hours and traffic.hours[-1][0] == hour:
                traffic.hours[-1] = (hour, traffic.hours[-1][1] + 1)
            else:
                traffic.hours.append((hour, 1))
                while len(traffic.hours) > 25:
                    traffic.hours.popleft()

    def silent(self, minutes: float, min_webhooks: int) -> dict[str, float]:
        """Instances with no webhook for `minutes` after at least `min_webhooks` in the 24 hours before their
        last one, with the time (epoch seconds) of that last webhook."""
        if minutes <= 0:
            return {}
        now = self._clock()
        found = {}
        with self._lock:
            for instance, traffic in self._traffic.items():
                if now - traffic.last < minutes * 60:
                    continue
                first_hour = int((traffic.last - 24 * HOUR) // HOUR)
                recent = sum(count for hour, count in traffic.hours if hour > first_hour)
                if recent >= min_webhooks:
                    found[instance] = traffic.last
        return found

    def last_seen(self, instance: str) -> float | None:
        with self._lock:
            traffic = self._traffic.get(instance)
            return traffic.last if traffic is not None else None


def sweep_silence(
    watch: WebhookSilence,
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    *,
    minutes: float,
    min_webhooks: int,
    alarmed: set[str],
) -> None:
    """Raise the alarm for instances that went quiet (`alarmed` is updated) and clear it for those that
    spoke again (the recovery sweep calls this)."""
    silent = watch.silent(minutes, min_webhooks)
    for instance, last in silent.items():
        if instance in alarmed:
            continue
        alarmed.add(instance)
        last_at = datetime.fromtimestamp(last, UTC)
        try:
            probe = str(test_connection(uow_factory, client, instance)["status"])
        except LuminaiError as exc:
            probe = f"probe failed: {exc}"
        log.warning(
            "no webhook from instance %s since %s although it usually has traffic; connectionState: %s "
            "(a connected instance that stopped posting webhooks: restart Evolution, see evolution-api#2665)",
            instance,
            last_at.isoformat(),
            probe,
        )
        _mark(uow_factory, instance, {"lastWebhookAt": last_at.isoformat(), "probe": probe})
    for instance in sorted(alarmed - set(silent)):
        alarmed.discard(instance)
        log.info("webhooks from instance %s are back", instance)
        _mark(uow_factory, instance, None)


def _mark(uow_factory: UnitOfWorkFactory, instance: str, silence: dict[str, str] | None) -> None:
    with uow_factory() as uow:
        agent = uow.repo.agent_by_instance(instance)
        if agent is None:
            return
        metadata = {k: v for k, v in (agent.whatsapp_metadata or {}).items() if k != "webhookSilence"}
        if silence is not None:
            metadata["webhookSilence"] = {**silence, "raisedAt": datetime.now(UTC).isoformat()}
        agent.whatsapp_metadata = metadata
        uow.commit()
