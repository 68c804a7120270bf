"""Ops endpoints: liveness, readiness (database and broker reachable) and a look inside the actor system."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from luminai_actors.bootstrap import Container
from luminai_actors.services.recovery import delivery_counts
from luminai_actors.web.admin import require_operator


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    container: Container = request.app.state.container
    database, broker = await asyncio.gather(
        asyncio.to_thread(container.database_ready), asyncio.to_thread(container.broker_ready)
    )
    ready = database and broker
    body = {"status": "ready" if ready else "unavailable", "database": database, "broker": broker}
    return JSONResponse(body, status_code=200 if ready else 503)


@require_operator
async def actors(request: Request) -> Response:
    container: Container = request.app.state.container
    settings = container.settings
    router = container.router
    depths = await asyncio.to_thread(container.queue_depths)
    deliveries = await asyncio.to_thread(delivery_counts, container.uow)
    return JSONResponse(
        {
            "conversations": {
                "live": len(router),
                "max": router.max_actors,
                "idleSeconds": router.idle_seconds,
                "startedTotal": router.started_total,
                "stoppedIdleTotal": router.stopped_idle_total,
                "refusedTotal": router.refused_total,
                "evictedTotal": router.evicted_total,
                "sparesReady": 0,  # spare actors were removed (issue 18); kept for existing readers
                "sparesUsedTotal": 0,
                "actors": router.snapshot(),
            },
            "queues": depths,
            "deliveries": deliveries,
            "concurrency": {
                "broker": "memory" if settings.uses_memory_broker else "redis",
                "embeddedWorkerThreads": settings.worker_threads if container.worker is not None else 0,
                "workerPollMs": settings.worker_poll_ms,
                "sendMaxAttempts": settings.send_max_attempts,
                "sendBackoffSeconds": list(settings.send_backoff_seconds),
                "aiMaxAttempts": settings.ai_max_attempts,
                "maxConversationActors": settings.max_conversation_actors,
                "conversationIdleSeconds": settings.conversation_idle_seconds,
                "dbPoolSize": settings.db_pool_size,
            },
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus exposition: webhooks, actors, AI turns, sends and Dramatiq's message metrics."""
    container: Container = request.app.state.container
    body = await asyncio.to_thread(container.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
