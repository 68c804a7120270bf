"""Shared base of the local fake servers: a real stdlib HTTP/1.1 JSON server on a background thread.

A fake subclasses `HttpBase` and implements `handle()`. The base records every request, answers with
Content-Length so pooled keep-alive clients (httpx, openai) behave as they would against a real server, and
can be stopped and restarted on the same port to simulate an outage.
"""

from __future__ import annotations

import abc
import contextlib
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import urlsplit

__all__ = ["Fault", "HttpBase", "JsonResponse", "RecordedRequest"]

# How long stop() waits for a connection thread; a thread stuck in user code must not hang the test run.
_JOIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a fake server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes
    received_at: float

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urlsplit(self.path).path


@dataclass(frozen=True)
class JsonResponse:
    """What a fake answers: a status and a JSON-serialisable body."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """A programmed misbehaviour for one upcoming request."""

    kind: Literal["fail", "hang", "drop", "late"]
    response: JsonResponse | None = None
    seconds: float = 0.0


class _Server(ThreadingHTTPServer):
    # stop() cuts connections and joins their threads itself, with a timeout, instead of the stdlib's
    # unbounded join, which hangs on idle keep-alive connections.
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: HttpBase) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.owner._connection_opened(request, thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        self.owner._connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up (timeout tests) or a stop() that cuts the socket is expected, not a bug.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY each keep-alive answer waits ~40 ms for the
    # client's delayed ACK (measured in bench/fake_evolution_latency.py: 44 ms vs 0.8 ms per sendText).
    disable_nagle_algorithm = True
    server_version = "LuminaiFake/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return  # tests inspect recorded requests; access logs would only clutter their output

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        owner = cast(_Server, self.server).owner
        body = self._read_body()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            json=parsed,
            body=body,
            received_at=time.monotonic(),
        )
        owner._record(request)
        try:
            response = owner.handle(request)
        except Exception as exc:
            # A bug in a fake should surface as a readable 500, not as a hung or reset client.
            response = JsonResponse(500, {"error": f"fake server crashed: {exc!r}"})
        if response is None:
            self.close_connection = True
            return
        payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class HttpBase(abc.ABC):
    """A JSON HTTP/1.1 server on 127.0.0.1 (random free port unless one is given) in a daemon thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        self._connections: dict[Any, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._requests_changed = threading.Condition()
        self._faults: deque[Fault] = deque()
        self._faults_lock = threading.Lock()

    @abc.abstractmethod
    def handle(self, request: RecordedRequest) -> JsonResponse | None:
        """Answer one request; returning None closes the connection without any response."""

    def start(self) -> Self:
        """Start serving (no-op if already running); the port is kept for later restarts."""
        with self._lifecycle:
            if self._server is not None:
                return self
            self._stopping = threading.Event()
            server = _Server((self._host, self._port), self)
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, free the port and cut open connections (also waking requests held by faults)."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None or thread is None:
                return
            server.shutdown()
            server.server_close()
            with self._connections_lock:
                connections = dict(self._connections)
            for sock in connections:
                with contextlib.suppress(OSError):  # already closed by its handler thread
                    sock.shutdown(socket.SHUT_RDWR)
            # Only now wake held requests: their connections are already cut, so none can still answer.
            self._stopping.set()
            for conn_thread in connections.values():
                conn_thread.join(_JOIN_TIMEOUT)
            thread.join(_JOIN_TIMEOUT)

    def restart(self) -> Self:
        """Stop, then serve again on the same port: the "server down, then back up" scenario."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{type(self).__name__} has no port until start() is called")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pause(self, seconds: float) -> bool:
        """Wait `seconds` unless the server stops first; True if the full time elapsed."""
        return not self._stopping.wait(seconds)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._requests_changed:
            return list(self._requests)

    def wait_for_requests(
        self, count: int, timeout: float = 10.0, path_prefix: str | None = None
    ) -> list[RecordedRequest]:
        """Block until at least `count` requests (under `path_prefix`, if given) arrived; return them all."""

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path_prefix is None or r.path.startswith(path_prefix)]

        with self._requests_changed:
            if not self._requests_changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(
                    f"{type(self).__name__}: expected {count} request(s) under {path_prefix or '/'} "
                    f"within {timeout}s, got {len(matching())}"
                )
            return matching()

    def clear(self) -> None:
        """Forget the recorded requests (programmed faults stay queued)."""
        with self._requests_changed:
            self._requests.clear()

    def _queue_faults(self, count: int, fault: Fault) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._faults_lock:
            self._faults.extend([fault] * count)

    def _take_fault(self) -> Fault | None:
        with self._faults_lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_changed:
            self._requests.append(request)
            self._requests_changed.notify_all()

    def _connection_opened(self, sock: Any, thread: threading.Thread) -> None:
        with self._connections_lock:
            self._connections[sock] = thread

    def _connection_closed(self, sock: Any) -> None:
        with self._connections_lock:
            self._connections.pop(sock, None)
