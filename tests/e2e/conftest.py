"""End-to-end harness: the real `run.py serve` and `run.py worker` processes on PostgreSQL + Redis.

Each test gets a fresh schema state (rows truncated), an emptied Redis database, a local fake Evolution API
and a local fake OpenAI server, then starts the service and one worker process as subprocesses exactly as an
operator would, and waits for /readyz. `Admin` drives the admin API; `Db` reads rows straight from SQL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "e2e-admin-token"
# The webhook secret of the agents `Admin.setup_agent` creates, which `Service.post_webhook` sends.
WEBHOOK_SECRET = "e2e-webhook-secret"
WEBHOOK = "/api/webhooks/whatsapp/evolution"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Service:
    url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)  # closed with the service, even after a failure

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def post_webhook(
        self, payload: dict[str, Any], path: str = WEBHOOK, secret: str | None = WEBHOOK_SECRET
    ) -> httpx.Response:
        """Post as Evolution would, with the webhook secret of `setup_agent`'s agents (None: no secret)."""
        headers = {} if secret is None else {"X-Webhook-Token": secret}
        with self.client() as client:
            return client.post(path, json=payload, headers=headers)

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.logs)

    def start_worker(self, tmp_path: Path) -> subprocess.Popen[bytes]:
        """One more `run.py worker` process on the same settings (e.g. to replace a killed one)."""
        log = tmp_path / f"worker-extra-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "worker", "--threads", "4"],
                cwd=tmp_path,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class Admin:
    def __init__(self, service: Service) -> None:
        self._client = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )
        service.clients.append(self._client)

    def close(self) -> None:
        self._client.close()

    def post(self, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        response = self._client.post(path, json=body)
        assert response.status_code == expect, response.text
        data: dict[str, Any] = response.json()
        return data

    def get(self, path: str) -> Any:
        response = self._client.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def setup_agent(
        self,
        evolution: FakeEvolutionApi,
        instance: str,
        *,
        org_name: str = "Acme",
        steps: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        token: str = WEBHOOK_SECRET,
    ) -> tuple[str, str]:
        """Organization, tree flow and agent on `instance` of the fake Evolution; returns (org, agent)."""
        api_key = f"key-{instance}"
        evolution.add_instance(instance, api_key)
        org = self.post("/api/admin/organizations", {"name": org_name})["id"]
        flow = self.post(
            f"/api/admin/organizations/{org}/tree-flows",
            {
                "name": "Qualification",
                "steps": steps
                or [
                    {"id": "need", "question": "What are you looking for?"},
                    {"id": "budget", "question": "What budget do you have in mind?"},
                ],
            },
        )["id"]
        agent = self.post(
            f"/api/admin/organizations/{org}/agents",
            {
                "name": "Sofia",
                "prompt": "You are Sofia, a friendly SDR for Acme.",
                "treeFlowId": flow,
                "active": True,
                "whatsapp": {
                    "instanceName": instance,
                    "phone": "+5511912345678",
                    "serverUrl": evolution.url,
                    "apiKey": api_key,
                    "active": True,
                    "webhookToken": token,
                    "metadata": metadata,
                },
            },
        )["id"]
        return org, agent


class Db:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql), params)]

    def one(self, sql: str, **params: Any) -> dict[str, Any]:
        rows = self.rows(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]

    def close(self) -> None:
        self.engine.dispose()


def text_message(
    instance: str, phone: str, body: str, *, message_id: str | None = None, push_name: str = "John Doe"
) -> dict[str, Any]:
    """A `messages.upsert` webhook shaped like Evolution 2.3's (reference §2.3 example A)."""
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {
                "remoteJid": f"{phone.lstrip('+')}@s.whatsapp.net",
                "fromMe": False,
                "id": message_id or "3A" + uuid.uuid4().hex[:18].upper(),
            },
            "pushName": push_name,
            "status": "DELIVERY_ACK",
            "message": {"conversation": body},
            "messageType": "conversation",
            "messageTimestamp": int(time.time()),
            "source": "android",
        },
        "destination": "http://127.0.0.1/api/webhooks/whatsapp/evolution",
        "date_time": "2025-10-21T11:40:39.512Z",
        "sender": "5511912345678@s.whatsapp.net",
        "server_url": "http://127.0.0.1:8080",
        "apikey": None,
    }


@pytest.fixture
def evolution() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi() as fake:
        yield fake


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-e2e") as fake:
        yield fake


@pytest.fixture
def start_service(clean_pg: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(extra_env: dict[str, str] | None = None, workers: int = 1) -> Service:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LUMINAI_", "OPENAI_"))},
            "LUMINAI_NO_VENV": "1",
            "LUMINAI_DATABASE_URL": clean_pg,
            "LUMINAI_BROKER_URL": redis_url,
            "LUMINAI_ADMIN_TOKEN": ADMIN_TOKEN,
            "LUMINAI_LOG_LEVEL": "INFO",
            "LUMINAI_AI_DEBOUNCE_SECONDS": "0.3",  # short bursts still become one turn; tests stay quick
            **(extra_env or {}),
        }
        service = Service(url=f"http://127.0.0.1:{port}", env=env)
        commands = [["serve", "--port", str(port)]] + [["worker", "--threads", "4"]] * workers
        for index, args in enumerate(commands):
            log = tmp_path / f"{args[0]}-{index}.log"
            service.logs.append(log)
            with log.open("wb") as sink:
                service.processes.append(
                    subprocess.Popen(
                        [sys.executable, str(ROOT / "run.py"), *args],
                        cwd=tmp_path,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                )
        started.append(service)

        def ready() -> bool:
            for process in service.processes:
                if process.poll() is not None:
                    raise AssertionError(f"a service process exited early\n{service.log_text()}")
            try:
                return httpx.get(service.url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def db(clean_pg: str) -> Iterator[Db]:
    database = Db(clean_pg)
    yield database
    database.close()
