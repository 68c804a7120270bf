"""`python3 run.py demo`: the whole service working in one process, with no external services and no keys.

`run_demo` migrates a fresh SQLite file in a temporary directory, builds and starts the container (memory
broker, in-process worker, the offline brain unless `use_openai`), serves the real Starlette app with uvicorn
on a free local port and starts a simulated Evolution API. Through the real admin API it creates an
organization, a sales-qualification TreeFlow and an agent, and points the instance's webhook at the service.
A lead's WhatsApp conversation is then played as real `messages.upsert` webhooks; after each message the work
is drained and the new transcript lines are printed with their delivery marks (the simulated Evolution posts
`send.message` and `messages.update` receipts back). Everything is stopped and removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn

from luminai_actors import bootstrap
from luminai_actors.bootstrap import Container
from luminai_actors.config import Settings
from luminai_actors.persistence.database import upgrade_database
from luminai_actors.testing.fake_evolution import FakeEvolutionApi
from luminai_actors.testing.http import JsonResponse, RecordedRequest
from luminai_actors.web.app import WEBHOOK_PATH, create_app

INSTANCE = "demo-sdr"
LEAD_JID = "5511987654321@s.whatsapp.net"
LEAD_MESSAGES = (
    "Oi! Vi o anúncio de vocês",
    "Sou a Maria Souza",
    "maria@acme",
    "maria@acme.com.br",
    "11-50",
    "sim, pode ser amanhã",
)
# The script exactly as an operator would POST it to /api/admin/organizations/{orgId}/tree-flows.
TREE_FLOW: dict[str, Any] = json.loads("""
{"name": "Qualificação de vendas", "language": "pt",
 "objective": "Qualificar leads que chegam pelo anúncio e marcar uma reunião",
 "steps": [
   {"id": "contact", "name": "Contato", "questions": ["Com quem eu falo?"],
    "fields": [{"name": "name", "type": "text", "description": "nome completo"},
               {"name": "email", "type": "email", "question": "Qual é o seu e-mail?"}]},
   {"id": "size", "name": "Porte", "question": "Quantas pessoas trabalham na sua empresa?",
    "fields": [{"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}],
    "transitions": [{"when": {"field": "company_size", "equals": "1-10"}, "outcome": "disqualified"}],
    "next": "meeting"},
   {"id": "meeting", "name": "Reunião",
    "question": "Podemos marcar uma conversa de 20 minutos com um especialista?",
    "fields": [{"name": "wants_meeting", "type": "boolean"}],
    "transitions": [{"when": {"field": "wants_meeting", "equals": true}, "outcome": "meeting_requested"}],
    "outcome": "qualified"}],
 "outcomes": {"disqualified": {"message": "Obrigada! Por enquanto atendemos só times maiores."},
              "qualified": {"message": "Ótimo perfil! Um colega vai falar com você por e-mail."},
              "meeting_requested": {"message": "Perfeito! Um especialista vai te mandar o convite."}}}
""")


class DemoError(Exception):
    """A step of the demo did not go as expected."""


class _ReceiptingEvolution(FakeEvolutionApi):
    """The simulated Evolution API; it also reports each sent message as delivered, then read.

    Every webhook it posts (send.message, receipts) runs on a tracked thread so that `settle()` can wait for
    them all, and a 429 or 503 answer is retried shortly, as Evolution retries them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    def _track(self, thread: threading.Thread | None) -> threading.Thread | None:
        if thread is not None:
            with self._threads_lock:
                self._threads.append(thread)
        return thread

    def emit(self, name: str, event: str, data: Any) -> threading.Thread | None:
        return self._track(super().emit(name, event, data))

    def post_webhook(
        self, target_url: str, payload: Any, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, object]:
        for _ in range(50):
            status, body = super().post_webhook(target_url, payload, headers, timeout)
            if status not in (429, 503):
                break
            time.sleep(0.05)
        return status, body

    def _send_text(self, request: RecordedRequest, name: str) -> JsonResponse | None:
        response = super()._send_text(request, name)
        if response is not None and response.status == 201:
            key = response.body["key"]

            def receipts() -> None:
                for status in ("DELIVERY_ACK", "READ"):
                    data = {
                        "keyId": key["id"],
                        "remoteJid": key["remoteJid"],
                        "fromMe": True,
                        "status": status,
                    }
                    thread = self.emit(name, "messages.update", data)
                    if thread is not None:
                        thread.join(15)

            thread = threading.Thread(target=receipts, name="demo-receipts", daemon=True)
            self._track(thread)
            thread.start()
        return response

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until every webhook this fake started posting has been answered."""
        deadline = time.monotonic() + timeout
        while True:
            with self._threads_lock:
                self._threads = alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            if time.monotonic() > deadline:
                raise DemoError("the simulated Evolution API's webhooks were not answered in time")
            alive[0].join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _quiet_logs(settings: Settings) -> Iterator[None]:
    """The transcript is the demo's output: INFO logs stay out of it (LUMINAI_LOG_LEVEL=DEBUG keeps them)."""
    previous = logging.root.manager.disable
    if settings.log_level != "DEBUG":
        logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _serve(container: Container) -> Iterator[str]:
    """Serve the real app with uvicorn on a free port of 127.0.0.1 in a background thread; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(container=container), log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the HTTP server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _check(response: httpx.Response, expected: int) -> Any:
    if response.status_code != expected:
        request = response.request
        raise DemoError(
            f"{request.method} {request.url.path} answered {response.status_code}: {response.text}"
        )
    return response.json()


def _mark(message: dict[str, Any]) -> str:
    """WhatsApp's ticks for an outbound message, as far as they went."""
    if message.get("sendStatus") == "failed":
        return f"failed: {(message.get('metadata') or {}).get('whatsappError') or 'unknown reason'}"
    if message.get("sendStatus") != "sent":
        return str(message.get("sendStatus") or "pending")
    ticks = ["sent ✓"]
    if message.get("deliveredAt"):
        ticks.append("delivered ✓✓")
    if message.get("readAt"):
        ticks.append("read ✓✓ blue")
    return " → ".join(ticks)


def _lead_message(text: str, server_url: str) -> dict[str, Any]:
    """A `messages.upsert` webhook shaped like Evolution 2.3's for a lead's text message."""
    key = {"remoteJid": LEAD_JID, "fromMe": False, "id": "3A" + uuid.uuid4().hex[:18].upper()}
    data = {"key": key, "pushName": "Maria", "status": "DELIVERY_ACK", "message": {"conversation": text},
            "messageType": "conversation", "messageTimestamp": int(time.time())}  # fmt: skip
    return {"event": "messages.upsert", "instance": INSTANCE, "data": data, "server_url": server_url}


def run_demo(settings: Settings, *, use_openai: bool, out: TextIO) -> int:
    """Play a whole WhatsApp qualification conversation through the real service; 0 when it went through."""
    if use_openai and not settings.openai_api_key:
        print(
            "demo --openai needs OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible server).\n"
            "Set it, or run the demo without --openai to use the offline brain.",
            file=out,
        )
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="luminai-demo-", ignore_cleanup_errors=True) as tmp,
        _quiet_logs(settings),
    ):
        demo = settings.with_overrides(
            database_url=f"sqlite:///{Path(tmp) / 'demo.db'}",
            broker_url="memory://",
            admin_token=secrets.token_urlsafe(24),
            public_url=None,
            openai_api_key=settings.openai_api_key if use_openai else None,
            ai_debounce_seconds=0.3,
            send_rate_per_instance=0,
        )
        try:
            return _run(demo, out)
        except (DemoError, TimeoutError, httpx.HTTPError) as exc:
            print(f"\ndemo failed: {exc}", file=out, flush=True)
            return 1


def _run(settings: Settings, out: TextIO) -> int:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    started_at = time.monotonic()
    upgrade_database(settings.database_url)
    container = bootstrap.build(settings)
    try:
        container.start(recovery=False)
        bearer = {"Authorization": f"Bearer {settings.admin_token}"}
        with (
            _ReceiptingEvolution() as evolution,
            _serve(container) as url,
            httpx.Client(base_url=url, timeout=30, headers=bearer) as admin,
        ):
            brain = "offline brain"
            if settings.openai_api_key:
                brain = f"OpenAI brain, {settings.ai_model} at {settings.openai_base_url or 'api.openai.com'}"
            say("LuminAI demo: one process, real HTTP, real webhooks, nothing else to run")
            say(f"  service    {url}  (fresh SQLite in a temp dir, memory broker, {brain})")
            say(f"  evolution  {evolution.url}  (simulated Evolution API, instance {INSTANCE!r})")

            api_key = secrets.token_hex(16)
            evolution.add_instance(INSTANCE, api_key)
            org = _check(admin.post("/api/admin/organizations", json={"name": "Acme Demo"}), 201)["id"]
            flow = _check(admin.post(f"/api/admin/organizations/{org}/tree-flows", json=TREE_FLOW), 201)["id"]
            whatsapp = {"instanceName": INSTANCE, "phone": "+5511912345678", "serverUrl": evolution.url,
                        "apiKey": api_key, "active": True, "webhookToken": secrets.token_hex(16)}  # fmt: skip
            agent_body = {"name": "Sofia", "prompt": "You are Sofia, a friendly SDR for Acme. Be brief.",
                          "treeFlowId": flow, "active": True, "whatsapp": whatsapp}  # fmt: skip
            agent = _check(admin.post(f"/api/admin/organizations/{org}/agents", json=agent_body), 201)["id"]
            hook_url = url + WEBHOOK_PATH
            _check(admin.post(f"/api/admin/agents/{agent}/whatsapp/webhook", json={"url": hook_url}), 200)
            hook = evolution.webhook(INSTANCE) or {}
            steps = len(TREE_FLOW["steps"])
            say(f"  setup      organization, TreeFlow {TREE_FLOW['name']!r} ({steps} steps), agent Sofia, "
                f"Evolution webhook -> {hook.get('url')}")  # fmt: skip
            say()

            talk_id: str | None = None
            replies: dict[str, dict[str, Any]] = {}
            for text in LEAD_MESSAGES:
                say(f"lead  > {text}")
                status, body = evolution.post_webhook(
                    hook_url, _lead_message(text, evolution.url), headers=hook.get("headers")
                )
                if status != 200:
                    raise DemoError(f"the webhook answered {status}: {body}")
                container.drain()  # the lead's turn: stored, debounced, answered, sent
                evolution.settle()  # send.message and the receipts posted back by "Evolution"
                container.drain()
                if talk_id is None:
                    talks = _check(admin.get(f"/api/admin/organizations/{org}/talks"), 200)
                    if not talks:
                        raise DemoError("no talk was opened for the lead")
                    talk_id = str(talks[0]["id"])
                for message in _check(admin.get(f"/api/admin/talks/{talk_id}/messages?limit=1000"), 200):
                    if message["direction"] == "outbound" and message["id"] not in replies:
                        replies[message["id"]] = message
                        say(f"agent < {message['body']}   [{_mark(message)}]")

            flow_state = _check(admin.get(f"/api/admin/talks/{talk_id}"), 200).get("talkFlow") or {}
            collected = {k: v.get("value") for k, v in (flow_state.get("collected") or {}).items()}
            outcome = flow_state.get("outcome")
            say()
            say("Collected by the agent:")
            for name, value in collected.items():
                say(f"  {name:<14} {value if isinstance(value, str) else json.dumps(value)}")
            if not collected:
                say("  (nothing)")
            say(f"Outcome: {outcome or 'none yet (the talk is still open)'}")
            read = sum(1 for m in replies.values() if m.get("readAt"))
            say(f"Summary: {len(LEAD_MESSAGES)} lead messages, {len(replies)} agent replies ({read} read), "
                f"{len(collected)} fields collected, outcome {outcome or 'none'}, "
                f"in {time.monotonic() - started_at:.1f} s.")  # fmt: skip
            return 0
    finally:
        container.close()
