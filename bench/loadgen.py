"""Open-loop, fixed-arrival-rate HTTP load generator (asyncio streams) that records every request's latency.

Request i is *scheduled* at t0 + i/rate whatever happened to earlier ones (open loop: a slow server does not
slow the arrivals down, unlike wrk's closed loop). Latency is measured from the scheduled time, so any lag
of the generator itself is charged to the result, never hidden; `lateness` (actual start - scheduled) tells
whether the generator kept up: if its p99 is small and the achieved rate equals the asked one, the figures
describe the server.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8000/api/webhooks/whatsapp/evolution \
        --rate 300 --duration 15 --instance bench-instance --phones 500 --out /tmp/run.json

The HTTP/1.1 client is a minimal keep-alive pool over asyncio streams (TCP_NODELAY, Content-Length bodies):
an httpx AsyncClient here spent ~0.95 core at ~350 req/s once a latency spike made requests queue for its
pool, fell hundreds of ms behind schedule and charged that to the server.

Bodies are Evolution 2.3 `messages.upsert` webhooks with a unique data.key.id ("L<tag><index>") from a
pool of `--phones` lead numbers; they are all encoded before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, summary_ms, webhook_body


@dataclass
class Record:
    index: int
    scheduled: float  # time.monotonic() the request was due
    started: float  # time.monotonic() just before the POST was issued
    ended: float  # time.monotonic() when the response (or the error) came back
    status: int  # 0 on a transport error
    message_id: str | None  # X-Luminai-Message-Id of a 200
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.scheduled

    @property
    def service_time(self) -> float:
        return self.ended - self.started


def phone_for(index: int, phones: int, base: int = 0) -> str:
    return f"551198{(base + (index * 31) % phones):07d}"


def make_bodies(count: int, instance: str, tag: str, phones: int, base: int = 0) -> list[bytes]:
    return [
        json.dumps(
            webhook_body(
                instance, phone_for(i, phones, base), f"Oi, quero saber mais ({i})", f"L{tag}{i:09d}"
            )
        ).encode()
        for i in range(count)
    ]


class _Pool:
    """Keep-alive HTTP/1.1 connections to one host: at most `size` open, idle ones reused (LIFO)."""

    IDLE_LIMIT = 3.0  # seconds; uvicorn closes a keep-alive connection idle for 5 s

    def __init__(self, host: str, port: int, size: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.IDLE_LIMIT and not reader.at_eof():
                return reader, writer
            writer.close()  # the server may have closed it already: never send on it
        return await self._connect()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str]]:
        async with self.slots:
            reader, writer = await self._take()
            try:
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    "Content-Type: application/json\r\nX-Webhook-Token: bench-webhook-token\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                writer.write(head + body)
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
            except BaseException:
                writer.close()
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((reader, writer, time.monotonic()))
            return status, headers

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


async def open_loop(
    url: str,
    bodies: Sequence[bytes],
    rate: float,
    *,
    connections: int = 64,
    timeout: float = 30.0,
    on_start: Callable[[int, float], None] | None = None,
    drain_timeout: float = 60.0,
) -> list[Record]:
    """POST bodies[i] at t0 + i/rate; return one Record per request (in index order)."""
    records: list[Record | None] = [None] * len(bodies)
    parts = urlsplit(url)
    pool = _Pool(parts.hostname or "127.0.0.1", parts.port or 80, connections, timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")

    async def fire(i: int, due: float) -> None:
        started = time.monotonic()
        if on_start is not None:
            on_start(i, started)
        try:
            status, headers = await pool.request("POST", path, bodies[i])
            error = None
            message_id = headers.get("x-luminai-message-id") if status == 200 else None
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            status, error, message_id = 0, f"{type(exc).__name__}: {exc}", None
        records[i] = Record(i, due, started, time.monotonic(), status, message_id, error)

    try:
        # Warm the pool so the first scheduled requests do not pay for connection set-up.
        await asyncio.gather(
            *(pool.request("GET", "/readyz") for _ in range(min(8, connections))), return_exceptions=True
        )
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic() + 0.05
        for i in range(len(bodies)):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(fire(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=drain_timeout)
            for task in tasks:
                task.cancel()
    finally:
        pool.close()
    return [r for r in records if r is not None]


def summarize(records: list[Record], rate: float) -> dict[str, Any]:
    ok = [r for r in records if r.status == 200]
    starts = [r.started for r in records]
    span = (max(starts) - min(starts)) if len(starts) > 1 else 0.0
    lateness = [r.started - r.scheduled for r in records]
    codes: dict[str, int] = {}
    for r in records:
        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
    return {
        "asked_rate": rate,
        "requests": len(records),
        "achieved_start_rate": round((len(records) - 1) / span, 1) if span else None,
        "codes": codes,
        "latency_from_schedule": summary_ms([r.latency for r in ok]),
        "service_time": summary_ms([r.service_time for r in ok]),
        "generator_lateness": {
            "p50_ms": round((percentile(lateness, 50) or 0) * 1000, 2),
            "p99_ms": round((percentile(lateness, 99) or 0) * 1000, 2),
            "max_ms": round(max(lateness, default=0) * 1000, 2),
        },
        "errors": sorted({r.error for r in records if r.error})[:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second (fixed arrivals)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals")
    parser.add_argument("--instance", default="bench-instance")
    parser.add_argument("--phones", type=int, default=500, help="distinct lead numbers in the pool")
    parser.add_argument("--phone-base", type=int, default=0)
    parser.add_argument("--tag", default="LG", help="makes data.key.id unique across runs")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", help="write the summary and every request's record here (JSON)")
    args = parser.parse_args(argv)
    count = int(args.rate * args.duration)
    bodies = make_bodies(count, args.instance, args.tag, args.phones, args.phone_base)
    records = asyncio.run(open_loop(args.url, bodies, args.rate, connections=args.connections))
    summary = summarize(records, args.rate)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"summary": summary, "records": [asdict(r) for r in records]}) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
