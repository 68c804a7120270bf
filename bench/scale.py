"""Scale of conversations: the actor bound under 10,000 contacts, memory, and one contact's burst.

    .venv/bin/python bench/scale.py             # about 4 minutes; writes bench/results/scale.json

Real `run.py serve` on a fresh PostgreSQL database and the Redis broker (db 14) with
LUMINAI_MAX_CONVERSATION_ACTORS=1000, LUMINAI_CONVERSATION_IDLE_SECONDS=20 (`--idle-seconds`; at the ~80
webhooks/s this box sustains, an idle time of 2 s keeps only ~160-260 actors alive, so the bound of 1000
would never be reached; 20 s makes the demand ~1,600 and the bound binding), rate limits off, debounce 0.
No worker runs: the 2 cores go to the server under test; the AI turns it enqueues wait in Redis (flushed at
the end). The recovery sweep of `serve` runs as configured by default (every 30 s).

(a) 10,000 distinct contacts, one message each, 32 concurrent senders. A 503 (back-pressure) or 429 is
    counted and retried until answered 200, as Evolution would. During the run `GET /ops/actors` (admin
    token) is polled every 0.5 s (max of `conversations.live`) and VmRSS / Threads of the serve process are
    read from /proc/<pid>/status every 0.1 s; then we wait until every actor has idled out and read VmRSS
    again (target: growth once idle <= 50 MB). PostgreSQL: 10,000 messages stored, no duplicates.
    With 32 senders and a bound of 1000 there is always an idle actor to evict, so no 503 is expected here.
(b) one contact, 200 POSTs all at once (200 connections): all stored, one contact, one talk, no duplicates,
    and stored in the order they reached the actor: the serve log's "inbound stored" lines (serve runs at
    DEBUG: the first is written by the actor's thread, the rest by the group writer in the order the actor
    handed them over) give that order; it must equal the order of the rows' created_at and of their ids
    (UUIDv7), with strictly increasing created_at.
(c) back-pressure actually exercised: `serve` restarted with LUMINAI_MAX_CONVERSATION_ACTORS=16 and 1,000 new
    contacts from 64 concurrent senders (more conversations in flight than the bound): 503s counted and
    retried (after Retry-After, capped at 1 s) until every message is stored exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ADMIN_TOKEN,
    INSTANCE,
    WEBHOOK,
    Bench,
    CpuMeter,
    rss_kib,
    summary_ms,
    threads_of,
    unique_tag,
    webhook_body,
    write_results,
)

from luminai_actors.testing import FakeEvolutionApi

ENV = {
    "LUMINAI_MAX_CONVERSATION_ACTORS": "1000",
    "LUMINAI_CONVERSATION_IDLE_SECONDS": "20",  # --idle-seconds
    "LUMINAI_RATE_LIMIT_PER_INSTANCE": "0",
    "LUMINAI_RATE_LIMIT_PER_IP": "0",
    "LUMINAI_AI_DEBOUNCE_SECONDS": "0",
}
RETRYABLE = {429, 500, 502, 503, 504, 0}


class Monitor:
    """Samples /ops/actors and the serve process's memory while the load runs."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.max_live = 0
        self.max_rss_kib = 0
        self.max_threads = 0
        self.timeline: list[dict[str, Any]] = []
        self.polls = 0
        self.poll_errors = 0
        self.last: dict[str, Any] = {}

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as client:
            t0 = time.monotonic()
            next_poll = next_mark = 0.0
            while not stop.is_set():
                now = time.monotonic() - t0
                rss, threads = rss_kib(self.pid), threads_of(self.pid)
                self.max_rss_kib, self.max_threads = (
                    max(self.max_rss_kib, rss),
                    max(self.max_threads, threads),
                )
                if now >= next_poll:
                    next_poll = now + 0.5
                    try:
                        doc = (await client.get("/ops/actors")).json()["conversations"]
                        self.polls += 1
                        self.max_live = max(self.max_live, int(doc["live"]))
                        self.last = {
                            k: doc[k]
                            for k in ("live", "max", "startedTotal", "stoppedIdleTotal", "refusedTotal")
                        }
                    except (httpx.HTTPError, ValueError, KeyError):
                        self.poll_errors += 1
                if now >= next_mark:
                    next_mark = now + 1.0
                    self.timeline.append(
                        {
                            "t_s": round(now, 1),
                            "rss_mib": round(rss / 1024, 1),
                            "threads": threads,
                            **self.last,
                        }
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)


async def post_all(
    url: str, bodies: list[bytes], concurrency: int, deadline: float, all_at_once: bool = False
) -> dict[str, Any]:
    """POST every body until it is answered 200 (retrying 429/5xx/transport errors); count what happened."""
    codes: dict[str, int] = {}
    errors: dict[str, int] = {}  # transport errors (counted under code "0"), by exception type
    latencies: list[float] = []
    ids: dict[int, str] = {}
    retries = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        limits=limits, timeout=30, headers={"Content-Type": "application/json"}
    ) as client:

        async def one(i: int) -> None:
            nonlocal retries
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    r = await client.post(url + WEBHOOK, content=bodies[i])
                    status, wait = r.status_code, float(r.headers.get("retry-after", "0.2") or 0.2)
                except httpx.HTTPError as exc:
                    status, wait = 0, 0.2
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                codes[str(status)] = codes.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(time.monotonic() - t0)
                    ids[i] = r.headers.get("x-luminai-message-id", "")
                    return
                if status not in RETRYABLE:
                    return
                retries += 1
                await asyncio.sleep(min(wait, 1.0))

        if all_at_once:
            await asyncio.gather(*(one(i) for i in range(len(bodies))))
        else:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(len(bodies)):
                queue.put_nowait(i)

            async def sender() -> None:
                while not queue.empty():
                    await one(queue.get_nowait())

            await asyncio.gather(*(sender() for _ in range(concurrency)))
    return {
        "codes": codes,
        "transport_errors": errors,
        "retries": retries,
        "answered_200": len(ids),
        "latency": summary_ms(latencies),
        "ids": ids,
    }


def part_a(bench: Bench, url: str, pid: int, contacts: int, tag: str) -> dict[str, Any]:
    bodies = [
        json.dumps(webhook_body(INSTANCE, f"551197{i:07d}", f"Oi ({i})", f"A{tag}{i:07d}")).encode()
        for i in range(contacts)
    ]
    rss_before = rss_kib(pid)
    threads_before = threads_of(pid)
    monitor = Monitor(url, pid)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        t0 = time.monotonic()
        result = await post_all(url, bodies, 32, deadline=time.monotonic() + 220)
        result["seconds"] = round(time.monotonic() - t0, 1)
        # wait (bounded) until every conversation actor has idled out and been stopped
        t1 = time.monotonic()
        idle = float(ENV["LUMINAI_CONVERSATION_IDLE_SECONDS"])
        while time.monotonic() - t1 < idle + 15 and monitor.last.get("live", 1) > 0:
            await asyncio.sleep(0.25)
        result["seconds_until_no_live_actor"] = round(time.monotonic() - t1, 1)
        await asyncio.sleep(3)  # threads have exited; let the allocator settle
        stop.set()
        await task
        return result

    result = asyncio.run(run())
    rss_after = rss_kib(pid)
    rows = bench.sql(
        "SELECT count(*) AS n, count(DISTINCT whatsapp_message_id) AS distinct_ids, "
        "count(DISTINCT from_contact_id) AS contacts, count(DISTINCT talk_id) AS talks "
        "FROM talk_message WHERE direction = 'inbound' AND whatsapp_message_id LIKE :p",
        p=f"A{tag}%",
    )[0]
    growth_mib = (rss_after - rss_before) / 1024
    return {
        "contacts": contacts,
        "concurrency": 32,
        "seconds_to_store_all": result["seconds"],
        "webhooks_per_second": round(contacts / result["seconds"], 1),
        "responses_by_code": result["codes"],
        "back_pressure_503": result["codes"].get("503", 0),
        "transport_errors_retried": result["transport_errors"],
        "retries": result["retries"],
        "answered_200": result["answered_200"],
        "latency_of_200s": result["latency"],
        "live_actors_max_seen": monitor.max_live,
        "live_actors_bound": int(ENV["LUMINAI_MAX_CONVERSATION_ACTORS"]),
        "bound_respected": monitor.max_live <= int(ENV["LUMINAI_MAX_CONVERSATION_ACTORS"]),
        "ops_actors_polls": monitor.polls,
        "ops_actors_poll_errors": monitor.poll_errors,
        "router_counters_at_end": monitor.last,
        "seconds_until_no_live_actor_after_load": result["seconds_until_no_live_actor"],
        "serve_threads": {"before": threads_before, "max": monitor.max_threads, "after": threads_of(pid)},
        "serve_rss_mib": {
            "before": round(rss_before / 1024, 1),
            "peak": round(monitor.max_rss_kib / 1024, 1),
            "after_idle": round(rss_after / 1024, 1),
            "growth_once_idle": round(growth_mib, 1),
            "target_growth_mib": 50,
            "target_met": growth_mib <= 50,
        },
        "database": rows,
        "all_stored_exactly_once": rows["n"] == contacts and rows["distinct_ids"] == contacts,
        "timeline_1s": monitor.timeline,
    }


def part_b(bench: Bench, url: str, count: int, tag: str) -> dict[str, Any]:
    phone = "5511960000001"
    wids = [f"B{tag}{i:04d}" for i in range(count)]
    bodies = [
        json.dumps(webhook_body(INSTANCE, phone, f"burst {i}", wid)).encode() for i, wid in enumerate(wids)
    ]
    t0 = time.monotonic()
    result = asyncio.run(post_all(url, bodies, count, deadline=time.monotonic() + 60, all_at_once=True))
    seconds = time.monotonic() - t0
    rows = bench.sql(
        "SELECT m.id::text AS id, m.whatsapp_message_id AS wid, m.created_at, m.talk_id::text AS talk, "
        "m.from_contact_id::text AS contact FROM talk_message m "
        "WHERE m.direction = 'inbound' AND m.whatsapp_message_id LIKE :p ORDER BY m.created_at, m.id",
        p=f"B{tag}%",
    )
    contacts = bench.sql("SELECT count(*) AS n FROM contact WHERE phone LIKE :p", p="%" + phone[-8:])[0]["n"]
    # the actor's order: its thread logs "inbound stored" after each commit, in mailbox order
    log_order: list[str] = []
    for line in bench.logs["serve"].read_text(errors="replace").splitlines():
        if line.startswith("{") and '"inbound stored"' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            wid = entry.get("whatsapp_message_id", "")
            if wid.startswith(f"B{tag}"):
                log_order.append(wid)
    by_created = [r["wid"] for r in rows]
    by_id = [r["wid"] for r in sorted(rows, key=lambda r: r["id"])]
    created = [r["created_at"] for r in rows]
    strictly_increasing = all(a < b for a, b in itertools.pairwise(created))
    answered_ids = set(result["ids"].values())
    return {
        "messages": count,
        "sent_concurrently": True,
        "seconds": round(seconds, 2),
        "responses_by_code": result["codes"],
        "retries": result["retries"],
        "latency_of_200s": result["latency"],
        "rows_stored": len(rows),
        "distinct_whatsapp_ids": len({r["wid"] for r in rows}),
        "all_sent_ids_stored": {r["wid"] for r in rows} == set(wids),
        "answered_ids_equal_stored_ids": answered_ids == {r["id"] for r in rows},
        "contacts_with_that_phone": contacts,
        "talks": len({r["talk"] for r in rows}),
        "actor_log_lines": len(log_order),
        "db_order_by_created_at_equals_actor_order": by_created == log_order,
        "db_order_by_uuid7_equals_actor_order": by_id == log_order,
        "created_at_strictly_increasing": strictly_increasing,
        "ok": len(rows) == count
        and len({r["wid"] for r in rows}) == count
        and contacts == 1
        and len({r["talk"] for r in rows}) == 1
        and by_created == log_order
        and strictly_increasing,
    }


def part_c(bench: Bench, evolution: FakeEvolutionApi, contacts: int, bound: int, tag: str) -> dict[str, Any]:
    """Back-pressure: a bound below the number of conversations in flight at once -> 503s, retried."""
    url, serve = bench.start_serve(
        {**ENV, "LUMINAI_MAX_CONVERSATION_ACTORS": str(bound)}, label="serve-backpressure"
    )
    bodies = [
        json.dumps(webhook_body(INSTANCE, f"551195{i:07d}", f"Oi ({i})", f"C{tag}{i:07d}")).encode()
        for i in range(contacts)
    ]
    monitor = Monitor(url, serve.pid)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        result = await post_all(url, bodies, 64, deadline=time.monotonic() + 60)
        stop.set()
        await task
        return result

    t0 = time.monotonic()
    result = asyncio.run(run())
    seconds = time.monotonic() - t0
    bench.stop_process(serve)
    rows = bench.sql(
        "SELECT count(*) AS n, count(DISTINCT whatsapp_message_id) AS distinct_ids "
        "FROM talk_message WHERE direction = 'inbound' AND whatsapp_message_id LIKE :p",
        p=f"C{tag}%",
    )[0]
    return {
        "contacts": contacts,
        "concurrency": 64,
        "LUMINAI_MAX_CONVERSATION_ACTORS": bound,
        "seconds": round(seconds, 1),
        "responses_by_code": result["codes"],
        "back_pressure_503": result["codes"].get("503", 0),
        "transport_errors_retried": result["transport_errors"],
        "retries": result["retries"],
        "answered_200": result["answered_200"],
        "live_actors_max_seen": monitor.max_live,
        "bound_respected": monitor.max_live <= bound,
        "router_counters_at_end": monitor.last,
        "database": rows,
        "all_stored_exactly_once": rows["n"] == contacts and rows["distinct_ids"] == contacts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--backpressure-bound", type=int, default=16, help="0 skips part (c)")
    args = parser.parse_args()
    ENV["LUMINAI_CONVERSATION_IDLE_SECONDS"] = f"{args.idle_seconds:g}"
    tag = unique_tag()
    figures: dict[str, Any] = {"settings": {**ENV, "worker": "none (AI turns stay queued in Redis)"}}
    figures["settings"]["LUMINAI_CONVERSATION_IDLE_SECONDS"] = ENV["LUMINAI_CONVERSATION_IDLE_SECONDS"]
    with Bench("scale", time_limit=420) as bench, FakeEvolutionApi() as evolution:
        bench.create_database()
        bench.flush_redis()
        # DEBUG: a known conversation's message logs "inbound stored" at DEBUG (part b reads the actor's order
        # from those lines; they are written in the order the actor handed the messages to the group writer)
        url, serve = bench.start_serve({**ENV, "LUMINAI_LOG_FORMAT": "json", "LUMINAI_LOG_LEVEL": "DEBUG"})
        bench.setup_agent(url, evolution)
        time.sleep(1)
        meter = CpuMeter({"serve": serve.pid}, bench.db_name)
        meter.start()
        a = part_a(bench, url, serve.pid, args.contacts, tag)
        a["cpu"] = meter.stop()
        figures["a_10k_contacts"] = a
        print(
            f"(a) {a['contacts']} contacts in {a['seconds_to_store_all']} s ({a['webhooks_per_second']}/s): "
            f"codes {a['responses_by_code']}, live max {a['live_actors_max_seen']} "
            f"(bound {a['live_actors_bound']}), "
            f"RSS MiB {a['serve_rss_mib']}, threads {a['serve_threads']}, stored {a['database']}"
        )
        meter.start()
        b = part_b(bench, url, args.burst, tag)
        b["cpu"] = meter.stop()
        figures["b_one_contact_burst"] = b
        print(f"(b) {json.dumps(b)}")
        bench.stop_process(serve)
        if args.backpressure_bound:
            meter = CpuMeter({}, bench.db_name)
            meter.start()
            c = part_c(bench, evolution, 1000, args.backpressure_bound, tag)
            c["cpu"] = meter.stop()
            figures["c_back_pressure"] = c
            print(f"(c) {json.dumps(c)}")
        write_results("scale", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
