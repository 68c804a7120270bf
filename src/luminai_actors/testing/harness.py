"""`LuminaiHarness`: the real service in one process, for testing code that runs against our actors.

It builds the real container (`bootstrap.build`): the Starlette app behind a `TestClient`, the pykka
conversation actors, the Dramatiq AI and send actors with an in-process worker, and the database. Evolution
API is a local `FakeEvolutionApi` (and, with `openai=True`, the brain talks to a local `FakeOpenAI`). Tests
need no sleeps: `drain()` returns as soon as every mailbox and queue is empty and their work has finished
(woken by the actors and the memory broker themselves), and `say_in_background()` returns as soon as its
message is queued on its conversation actor.

By default the harness owns a SQLite file in a temporary folder (migrated on start, removed on close), the
memory broker, the offline brain, no debounce and no send pacing, so a test is fast and needs no services::

    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme")
        luminai.say("acme", "Oi")
        luminai.drain()
        assert luminai.replies("acme")

Pass `Settings` to run on PostgreSQL and/or Redis instead. With Redis the caller runs the workers
(`run.py worker`), or passes `embedded_worker=True` so the harness runs a `dramatiq.Worker` in-process.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from dramatiq.brokers.redis import RedisBroker
from starlette.testclient import TestClient

from luminai_actors import bootstrap
from luminai_actors.bootstrap import Container
from luminai_actors.config import Settings
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.database import upgrade_database
from luminai_actors.services.inbound import conversation_key as _conversation_key
from luminai_actors.testing.admin_api import (
    DEFAULT_API_KEY,
    DEFAULT_PHONE,
    DEFAULT_PROMPT,
    AdminApi,
    AdminCallFailed,
)
from luminai_actors.testing.bodies import upsert_body
from luminai_actors.testing.fake_evolution import FakeEvolutionApi
from luminai_actors.testing.fake_openai import FakeOpenAI
from luminai_actors.testing.observe import message_ids, redis_unfinished
from luminai_actors.web.app import WEBHOOK_PATH, create_app

if TYPE_CHECKING:
    # What Starlette's TestClient answers with: httpx2's Response on Starlette 1.x (httpx's before it).
    from httpx2 import Response

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_PHONE",
    "DEFAULT_PROMPT",
    "AdminApi",
    "AdminCallFailed",
    "LuminaiHarness",
]

_BASE_URL = "http://testserver"
_WAIT_SECONDS = 10.0
_REDIS_POLL_SECONDS = 0.02


class LuminaiHarness:
    """The real container and app in this process, against a fake Evolution API; a context manager.

    Arguments:
        settings: run on these settings (e.g. PostgreSQL and Redis) instead of the harness's own SQLite file
            and memory broker. An unset `admin_token` is replaced by a generated one (the helpers need it).
        openai: `True` runs a `FakeOpenAI` owned by the harness; or pass one. Either way `openai_api_key`
            and `openai_base_url` point at it, so the OpenAI brain writes the replies.
        evolution: a `FakeEvolutionApi` to use; by default the harness runs its own.
        A fake the harness starts (its own, or a given one that was not running) is stopped on close; a
        given fake that was already running is left running.
        embedded_worker: run a `dramatiq.Worker` in this process. Default: yes with the memory broker, no
            with Redis (then the caller runs `run.py worker` processes on the same settings).
        recovery: run the periodic recovery sweep (off by default: tests call `container.recover_once()`).
        migrate: upgrade the database to the latest migration on start. Default: only on SQLite (a
            PostgreSQL test database is usually migrated once per session by its own fixture).
        overrides: `Settings` fields to change, on the harness defaults or on `settings`.

    The harness defaults are: `memory://`, a SQLite file in a temporary folder, the offline brain,
    `ai_debounce_seconds=0`, `send_rate_per_instance=0`, fast send retries (`send_backoff_seconds=(0.05,
    0.1)`), `worker_poll_ms=20` and a generated admin token.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        openai: bool | FakeOpenAI = False,
        evolution: FakeEvolutionApi | None = None,
        embedded_worker: bool | None = None,
        recovery: bool = False,
        migrate: bool | None = None,
        **overrides: object,
    ) -> None:
        self._given_settings = settings
        self._overrides = overrides
        self._owns_evolution = evolution is None
        self.evolution: FakeEvolutionApi = evolution if evolution is not None else FakeEvolutionApi()
        """The fake Evolution API every agent made by `admin.create_agent` points at."""
        self._owns_openai = openai is True
        self.openai: FakeOpenAI | None = (
            FakeOpenAI() if openai is True else (openai if isinstance(openai, FakeOpenAI) else None)
        )
        """The fake OpenAI server the brain talks to (None with the offline brain)."""
        self._embedded_worker = embedded_worker
        self._recovery = recovery
        self._migrate = migrate
        self.admin = AdminApi(self)
        """Admin API helpers (operator token)."""
        self.temp_dir: Path | None = None
        """The folder of the harness's own SQLite file (None when `settings` name the database)."""
        self._container: Container | None = None
        self._client: TestClient | None = None
        self._stack: ExitStack | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._webhook_tokens: dict[str, str | None] = {}
        self._told: Counter[str] = Counter()
        self._told_changed = threading.Condition()

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the fakes, migrate, build and start the container, open the client (no-op when started)."""
        if self._stack is not None:
            return self
        with ExitStack() as stack:
            if self._owns_evolution or not self.evolution.running:
                self.evolution.start()
                stack.callback(self.evolution.stop)
            if self.openai is not None and (self._owns_openai or not self.openai.running):
                self.openai.start()
                stack.callback(self.openai.stop)
            settings = self._resolve_settings(stack)
            migrate = settings.uses_sqlite if self._migrate is None else self._migrate
            if migrate:
                upgrade_database(settings.database_url)
            container = bootstrap.build(settings)
            stack.callback(container.close)
            self._observe_tells(container)
            container.start(embedded_worker=self._embedded_worker, recovery=self._recovery)
            client = TestClient(create_app(container=container), base_url=_BASE_URL)
            client.__enter__()
            stack.callback(client.__exit__, None, None, None)
            stack.callback(self._shutdown_executor)
            self._container, self._client = container, client
            self._stack = stack.pop_all()
        return self

    def close(self) -> None:
        """Stop the client, background posts, workers, actors and fakes; remove the temporary folder."""
        stack, self._stack = self._stack, None
        self._container = self._client = None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def container(self) -> Container:
        """The real container (engine, broker, router, dispatcher, brain...)."""
        if self._container is None:
            raise RuntimeError("LuminaiHarness is not started: use it as a context manager or call start()")
        return self._container

    @property
    def client(self) -> TestClient:
        """A Starlette `TestClient` on the app (lifespan entered)."""
        if self._client is None:
            raise RuntimeError("LuminaiHarness is not started: use it as a context manager or call start()")
        return self._client

    @property
    def settings(self) -> Settings:
        """The settings in force."""
        return self.container.settings

    # webhooks --------------------------------------------------------------------------------------------
    def message(
        self,
        instance: str,
        text: str,
        *,
        phone: str = DEFAULT_PHONE,
        message_id: str | None = None,
        push_name: str | None = "Lead",
        from_me: bool = False,
        lid: str | None = None,
    ) -> dict[str, Any]:
        """A `messages.upsert` webhook body for a text message, shaped like Evolution 2.3's
        (`testing.bodies.upsert_body`, which says what each argument does)."""
        return upsert_body(
            instance,
            text,
            server_url=self.evolution.url,
            phone=phone,
            message_id=message_id,
            push_name=push_name,
            from_me=from_me,
            lid=lid,
        )

    def post_webhook(
        self, payload: Any, *, path: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        """POST `payload` (any JSON) to the Evolution webhook as Evolution does; returns the response.

        `path` defaults to `/api/webhooks/whatsapp/evolution` (pass e.g. its `/messages-upsert` sub-path for
        Evolution's byEvents mode). Without `headers`, the webhook token of the payload's instance (from
        `admin.create_agent(token=...)`) is sent as `X-Webhook-Token`; explicit `headers` are sent as given.
        The answer comes once the message is committed (or refused), as in production.
        """
        sent = {"Content-Type": "application/json", "User-Agent": "axios/1.7.9"}
        if headers is None:
            instance = payload.get("instance") if isinstance(payload, Mapping) else None
            sent.update(self.webhook_headers(instance) if isinstance(instance, str) else {})
        else:
            sent.update(headers)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return self.client.post(path or WEBHOOK_PATH, content=body, headers=sent)

    def webhook_headers(self, instance: str) -> dict[str, str]:
        """The headers Evolution sends for `instance` once set-webhook installed its agent's secret."""
        token = self._webhook_tokens.get(instance)
        return {"X-Webhook-Token": token} if token else {}

    def say(self, instance: str, text: str, **kw: Any) -> Response:
        """The lead writes `text` to `instance`: `message(instance, text, **kw)` posted by `post_webhook`."""
        return self.post_webhook(self.message(instance, text, **kw))

    def post_in_background(
        self,
        payload: Any,
        *,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = _WAIT_SECONDS,
    ) -> Future[Response]:
        """`post_webhook` on a background thread; returns once its messages are queued on their
        conversation actors (or the request was answered without reaching one), with a future of the
        response. This is how a test stacks several events in one mailbox while the actor is busy."""
        ids = Counter(message_ids(payload))
        with self._told_changed:
            baseline = {message_id: self._told[message_id] for message_id in ids}
        future = self._background().submit(self.post_webhook, payload, path=path, headers=headers)

        def wake(_: Future[Response]) -> None:
            with self._told_changed:
                self._told_changed.notify_all()

        future.add_done_callback(wake)
        with self._told_changed:
            queued = self._told_changed.wait_for(
                lambda: (
                    future.done() or all(self._told[m] >= baseline[m] + count for m, count in ids.items())
                ),
                timeout,
            )
        if not queued:
            raise TimeoutError(f"the webhook was not handed to a conversation actor within {timeout}s")
        return future

    def say_in_background(self, instance: str, text: str, **kw: Any) -> Future[Response]:
        """`say` on a background thread; returns once the message is queued on its conversation actor."""
        return self.post_in_background(self.message(instance, text, **kw))

    # waiting and looking inside --------------------------------------------------------------------------
    def drain(self, timeout: float = 10.0) -> None:
        """Block until every conversation mailbox and task queue is empty and the work they caused has
        finished; raises TimeoutError otherwise.

        With the memory broker this is `container.drain()`: it waits on the actors' and the broker's own
        conditions, never on a clock. Redis has no such signal, so on Redis it also looks (every 20 ms) until
        no message of ours is queued, delayed or in a worker's hands: `container.drain()` alone counts only
        the ready lists, from which a worker has already taken the message it is still running."""
        container = self.container
        deadline = time.monotonic() + timeout
        while True:
            container.drain(max(0.0, deadline - time.monotonic()))
            broker = container.broker
            if not isinstance(broker, RedisBroker):
                return
            if redis_unfinished(broker) == 0 and container.router.idle():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError("Redis tasks still queued, delayed or running")
            time.sleep(_REDIS_POLL_SECONDS)

    def conversation_key(self, instance: str, phone: str = DEFAULT_PHONE, *, lid: str | None = None) -> str:
        """The key of the conversation actor that owns this lead's messages to `instance`."""
        event = parse_webhook(self.message(instance, "-", phone=phone, lid=lid))
        assert isinstance(event, MessageUpsert)
        return _conversation_key(event)

    def mailbox(self, key: str) -> list[MessageUpsert]:
        """Events queued on the conversation actor `key`, oldest first (not the one being handled)."""
        return cast(list[MessageUpsert], self.container.router.mailbox(key))

    def actors(self) -> list[dict[str, Any]]:
        """Live conversation actors: key, mailboxDepth, inFlight, handled, idleSeconds, ageSeconds, alive."""
        return self.container.router.snapshot()

    def queues(self) -> dict[str, int]:
        """Messages per Dramatiq queue: `ai`, `send`, their delay queues (`.DQ`) and dead letters (`.XQ`)."""
        return self.container.queue_depths()

    def replies(self, instance: str | None = None) -> list[str]:
        """Texts the fake Evolution API accepted through sendText, in order (optionally of one instance)."""
        return [
            str(sent["text"])
            for sent in self.evolution.sent_messages()
            if instance is None or sent.get("_instance") == instance
        ]

    def talks(self, org: str) -> list[dict[str, Any]]:
        """The organization's talks through the admin API."""
        return self.admin.talks(org)

    def messages(self, talk_id: str) -> list[dict[str, Any]]:
        """A talk's messages through the admin API."""
        return self.admin.messages(talk_id)

    # internals -------------------------------------------------------------------------------------------
    def _resolve_settings(self, stack: ExitStack) -> Settings:
        settings = self._given_settings
        if settings is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="luminai-harness-"))
            self.temp_dir = temp_dir
            stack.callback(shutil.rmtree, temp_dir, ignore_errors=True)
            settings = Settings(
                database_url=f"sqlite:///{temp_dir / 'luminai.db'}",
                broker_url="memory://",
                admin_token=secrets.token_urlsafe(24),
                ai_debounce_seconds=0.0,
                send_rate_per_instance=0.0,
                send_backoff_seconds=(0.05, 0.1),
                worker_poll_ms=20,
            )
        elif not settings.admin_token:
            settings = settings.with_overrides(admin_token=secrets.token_urlsafe(24))
        if self.openai is not None:
            settings = settings.with_overrides(
                openai_api_key=self.openai.api_key, openai_base_url=self.openai.url + "/v1"
            )
        return settings.with_overrides(**self._overrides) if self._overrides else settings

    def _observe_tells(self, container: Container) -> None:
        """Count each event handed to a conversation actor, so `post_in_background` can wait for it."""
        router = container.router
        tell = router.tell

        def observed(key: str, event: MessageUpsert, reply: Any) -> None:
            tell(key, event, reply)
            with self._told_changed:
                self._told[event.message_id] += 1
                self._told_changed.notify_all()

        setattr(router, "tell", observed)  # noqa: B010  # mypy forbids assigning to a method

    def _background(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="luminai-harness-post")
        return self._executor

    def _shutdown_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
