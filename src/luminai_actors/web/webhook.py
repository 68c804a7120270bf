"""POST /api/webhooks/whatsapp/evolution[/<event-slug>]: parse, hand to the conversation actor, answer.

A lead's message is answered 200 only after its conversation actor committed it; a database or actor-system
failure is answered 503 so Evolution delivers it again (it retries 5xx, never 400/401/403/404/422). The wait
for the actor crosses threads through `loop.call_soon_threadsafe` (one wake-up per burst of replies: the
group writer answers many webhooks at once); the event loop never blocks on pykka.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from luminai_actors.bootstrap import Container
from luminai_actors.errors import ConversationBusy, LuminaiError, PayloadError, Unavailable
from luminai_actors.evolution.headers import header_contradiction
from luminai_actors.evolution.webhook import (
    KNOWN_EVENTS,
    ConnectionUpdate,
    InstanceGone,
    MessageBatch,
    MessageStatusUpdate,
    MessageUpsert,
    QrCodeUpdate,
    StatusUpdates,
    WebhookEvent,
    parse_webhook,
)
from luminai_actors.services.channel_events import apply_connection_state, apply_status_update, record_qrcode
from luminai_actors.services.inbound import InboundOutcome, conversation_key, ignore_reason
from luminai_actors.web.auth import webhook_authorized
from luminai_actors.web.bodies import read_body
from luminai_actors.web.errors import error_response
from luminai_actors.web.ratelimit import RateLimiter

log = logging.getLogger(__name__)


def _processed(**extra: object) -> JSONResponse:
    return JSONResponse({"success": True, "message": "Webhook processed", **extra})


async def read_json_body(request: Request, max_bytes: int) -> Any:
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise PayloadError("empty body: expected a JSON object", status=400)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", status=400) from exc


async def handle_message(container: Container, event: MessageUpsert) -> InboundOutcome:
    """Run one upsert through its conversation actor and wait for the outcome without blocking the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any) -> None:
        if future.done():
            return
        if isinstance(result, Unavailable | PayloadError):  # 503 (retry later) or 422 (never retry)
            future.set_exception(result)
        elif isinstance(result, BaseException):
            # Whatever broke while handling (a bug, a lost race that survived the retry): the message was not
            # stored, so Evolution must deliver it again. 503, never 200, never a traceback.
            failure = Unavailable(
                f"the conversation actor could not handle the message ({type(result).__name__})"
            )
            failure.__cause__ = result
            future.set_exception(failure)
        else:
            future.set_result(result)

    inbox = _loop_inbox(loop)

    def reply(result: Any) -> None:
        inbox.post(settle, result)

    container.router.tell(conversation_key(event), event, reply)
    timer = loop.call_later(container.settings.webhook_timeout_seconds, _expire, future)
    try:
        outcome: InboundOutcome = await future
    except TimeoutError as exc:
        raise ConversationBusy("the conversation actor did not answer in time") from exc
    finally:
        timer.cancel()
    return outcome


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _LoopInbox:
    """Calls from other threads onto one event loop, with one wake-up of the loop per burst.

    `loop.call_soon_threadsafe` writes to the loop's self-pipe on every call; the group writer answers a
    whole batch of webhooks at once, so here the calls queue up and only the first of a burst schedules the
    drain (the drain clears the flag before it takes the queue, so nothing posted meanwhile is left behind).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, call: Callable[[Any], None], arg: Any) -> None:
        self._calls.append((call, arg))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody waits for these replies any more
            with self._lock:
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        calls = self._calls
        while calls:
            call, arg = calls.popleft()
            try:
                call(arg)
            except Exception:
                log.exception("a reply to the event loop failed")


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopInbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def _loop_inbox(loop: asyncio.AbstractEventLoop) -> _LoopInbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        with _inboxes_lock:
            inbox = _inboxes.setdefault(loop, _LoopInbox(loop))
    return inbox


def _rate_limited(limiter: RateLimiter, key: str, what: str) -> Response | None:
    wait = limiter.acquire(key)
    if wait <= 0:
        return None
    response = error_response(429, f"too many webhooks for {what}; retry later")
    response.headers["Retry-After"] = RateLimiter.retry_after_header(wait)
    return response


def _event_label(event: WebhookEvent) -> str:
    """The metrics label of an event: a known Evolution event name, else `other` (the sender chooses the
    `event` field; as a label it would grow /metrics without bound)."""
    name = getattr(event, "event", None) or {
        MessageBatch: "messages.upsert",
        MessageStatusUpdate: "messages.update",
        StatusUpdates: "messages.update",
        ConnectionUpdate: "connection.update",
        QrCodeUpdate: "qrcode.updated",
    }.get(type(event), "other")
    return name if name in KNOWN_EVENTS else "other"


async def evolution_webhook(request: Request) -> Response:
    """Count and time every webhook by event and outcome (`luminai_webhooks`, `luminai_webhook_seconds`)."""
    container: Container = request.app.state.container
    started = time.perf_counter()
    request.state.event, request.state.outcome = "unparsed", "error"
    try:
        response = await _receive(request, container)
        request.state.outcome = (
            request.state.outcome if response.status_code < 300 else str(response.status_code)
        )
        return response
    except LuminaiError as exc:
        request.state.outcome = type(exc).__name__
        raise
    finally:
        metrics = container.metrics
        metrics.webhooks.labels(request.state.event, request.state.outcome).inc()
        metrics.webhook_seconds.labels(request.state.event).observe(time.perf_counter() - started)


async def _receive(request: Request, container: Container) -> Response:
    client_ip = request.client.host if request.client else "unknown"
    limited = _rate_limited(request.app.state.ip_limiter, client_ip, f"client {client_ip}")
    if limited is not None:
        return limited
    payload = await read_json_body(request, container.settings.max_webhook_bytes)
    event = parse_webhook(payload, request.path_params.get("event_slug"))
    contradiction = header_contradiction(request.headers, payload)
    if contradiction is not None:
        raise contradiction
    limited = _rate_limited(
        request.app.state.instance_limiter, event.instance, f"instance {event.instance!r}"
    )
    if limited is not None:
        return limited
    hit, agent = container.directory.cached(event.instance)
    if not hit:  # only a miss queries the database, off the event loop
        agent = await run_in_threadpool(container.directory.lookup, event.instance)
    allow = container.settings.allow_unauthenticated_webhooks
    if agent is not None and not webhook_authorized(
        agent.webhook_token, request.headers, allow_unauthenticated=allow
    ):
        if not agent.webhook_token:
            return error_response(
                401,
                f"instance {event.instance!r}: its agent has no webhook secret; rotate one "
                "(POST /api/admin/agents/{agentId}/whatsapp/webhook-token) and run `whatsapp set-webhook`",
            )
        return error_response(401, f"missing or wrong webhook secret for instance {event.instance!r}")
    request.state.event = _event_label(event)  # labelled only once authenticated
    container.silence.seen(event.instance)
    if agent is not None and not agent.organization_active:
        request.state.outcome = "ignored"
        return _processed(ignored="organization inactive")
    return await _dispatch(request, container, event)


async def _dispatch(request: Request, container: Container, event: WebhookEvent) -> Response:
    request.state.outcome = "processed"
    if isinstance(event, MessageBatch):
        outcomes = [await _one(container, message) for message in event.messages]
        stored = sum(1 for o in outcomes if o.status == "stored")
        return _processed(stored=stored, received=len(outcomes))
    if isinstance(event, MessageUpsert):
        outcome = await _one(container, event)
        request.state.outcome = outcome.status
        if outcome.status == "ignored":
            return _processed(ignored=outcome.reason)
        response = _processed(duplicate=True) if outcome.status == "duplicate" else _processed()
        if outcome.message_id is not None:
            # The body stays exactly the seed's; the stored message's id rides in a header.
            response.headers["X-Luminai-Message-Id"] = str(outcome.message_id)
        return response
    if isinstance(event, MessageStatusUpdate | StatusUpdates):
        updates = event.updates if isinstance(event, StatusUpdates) else (event,)
        results = [await run_in_threadpool(apply_status_update, container.uow, update) for update in updates]
        return _processed(receipts=results)
    if isinstance(event, ConnectionUpdate | InstanceGone):
        state = event.state if isinstance(event, ConnectionUpdate) else "close"
        status = await run_in_threadpool(apply_connection_state, container.uow, event.instance, state)
        if status is None:
            return _processed(ignored="no agent for this instance")
        if status == "connected":  # replies that waited for the instance go out now
            await run_in_threadpool(container.resume_agent_sends, event.instance)
        return _processed(status=status)
    if isinstance(event, QrCodeUpdate):
        await run_in_threadpool(record_qrcode, container.uow, event)
        return _processed()
    request.state.outcome = "ignored"
    return _processed(ignored=event.reason)


async def _one(container: Container, event: MessageUpsert) -> InboundOutcome:
    reason = ignore_reason(event, container.settings.ignored_chat_kinds)
    if reason is not None:  # skip the actor: nothing to write, nothing to order
        return InboundOutcome("ignored", reason)
    return await handle_message(container, event)


async def method_not_allowed(request: Request) -> Response:
    return error_response(405, "use POST with a JSON body")
