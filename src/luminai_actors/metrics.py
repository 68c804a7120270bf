"""Prometheus metrics: webhooks, conversation actors, AI turns, sends, and Dramatiq's own message metrics.

Each `Metrics` owns its registry (no global state, so tests can build many). With LUMINAI_METRICS_DIR set,
`run.py` switches prometheus-client to multiprocess mode before anything imports it, so the worker
processes' counters land in that folder and the server's `/metrics` adds them up (set the same folder for
`serve` and every `worker` on a machine). Gauges about live actors are read from the router at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "luminai_webhooks", "Webhooks by event and outcome", ["event", "outcome"], registry=r
        )
        self.webhook_seconds = Histogram(
            "luminai_webhook_seconds", "Webhook handling time", ["event"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inbound_path = Counter(
            "luminai_inbound_path",
            "Inbound messages stored by the append statement (fast) or the general transaction (slow)",
            ["path"],
            registry=r,
        )
        self.ai_turns = Counter("luminai_ai_turns", "AI turns by status", ["status"], registry=r)
        self.ai_turn_seconds = Histogram(
            "luminai_ai_turn_seconds",
            "AI turn time (extraction + reply)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sends = Counter(
            "luminai_sends", "sendText attempts by outcome and attempt", ["outcome", "attempt"], registry=r
        )
        self.dramatiq_messages = Counter(
            "dramatiq_messages", "Messages processed", ["queue_name", "actor_name"], registry=r
        )
        self.dramatiq_errors = Counter(
            "dramatiq_message_errors", "Messages that raised", ["queue_name", "actor_name"], registry=r
        )
        self.dramatiq_retries = Counter(
            "dramatiq_message_retries", "Messages retried", ["queue_name", "actor_name"], registry=r
        )
        self.dramatiq_duration = Histogram(
            "dramatiq_message_duration_milliseconds",
            "Time spent processing messages",
            ["queue_name", "actor_name"],
            buckets=MS_BUCKETS,
            registry=r,
        )

        self._live = CollectorRegistry()

    def watch(self, collector: Collector) -> None:
        """Add a collector read at scrape time (live actors, mailbox depth, queue depths)."""
        self._live.register(collector)

    def exposition(self) -> bytes:
        live = generate_latest(self._live)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            # Every process's files in the shared folder (prometheus-client leaves this constructor untyped).
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined) + live
        return generate_latest(self.registry) + live


class LiveCollector(Collector):
    """Gauges computed on each scrape from a callable returning {name: (help, value)}."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (description, value) in self._read().items():
            yield GaugeMetricFamily(name, description, value=value)


class DramatiqMetrics(dramatiq.Middleware):
    """Dramatiq's message metrics (the names of its own Prometheus middleware) into our registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, time.monotonic())
        self.metrics.dramatiq_duration.labels(*labels).observe((time.monotonic() - started) * 1000)
        self.metrics.dramatiq_messages.labels(*labels).inc()
        if exception is not None:
            if isinstance(exception, dramatiq.Retry):
                self.metrics.dramatiq_retries.labels(*labels).inc()
            else:
                self.metrics.dramatiq_errors.labels(*labels).inc()

    after_skip_message = after_process_message
