"""End-to-end latency: webhook POST -> sendText arriving at a local FakeEvolutionApi.

    .venv/bin/python bench/end_to_end.py        # about 1.5 minutes; writes bench/results/end_to_end.json

Real `run.py serve` + one `run.py worker --threads 4` on a fresh PostgreSQL database and the Redis broker
(db 14), offline brain (instant), LUMINAI_AI_DEBOUNCE_SECONDS=0, LUMINAI_SEND_RATE_PER_INSTANCE=0, and
LUMINAI_WORKER_POLL_MS = 100, then 10 (the service and worker are restarted for each), each with
LUMINAI_INLINE_SEND on (the default; `--inline-send on,off` adds the same setting without it). Per setting: 10
warm-up messages, then 300 messages, one every 50 ms (open loop, bench/loadgen.py), each from a distinct
lead: each is a new contact and talk. With `--known-leads` every lead first writes once and is answered, and
the measured message is its second (a known conversation: the inbound fast path; the reply is the second
sendText to that number); results go to end_to_end_known_leads.json. The FakeEvolutionApi runs in this
process, so latency = its `received_at` (time.monotonic) of the sendText for that lead - the
time.monotonic() just before that lead's webhook POST started.

Where the time goes is read back from PostgreSQL (wall clock of the same machine, converted to this
process's monotonic clock): inbound `created_at` (the conversation actor started recording), the 200
(client side), the reply's `created_at` (the AI turn stored its reply), the reply's `whatsappLastAttemptAt`
(the send task claimed the message), the fake's receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    INSTANCE,
    WEBHOOK,
    Bench,
    CpuMeter,
    set_fake_evolution_nodelay,
    summary_ms,
    unique_tag,
    write_results,
)
from loadgen import make_bodies, open_loop, phone_for

from luminai_actors.testing import FakeEvolutionApi

SEND_PREFIX = "/message/sendText/"


def digits(number: str) -> str:
    return "".join(ch for ch in number.split("@", 1)[0] if ch.isdigit())


def replies_by_number(evolution: FakeEvolutionApi, wanted: set[str]) -> dict[str, list[float]]:
    """The receipt times of the sendTexts to each wanted number, oldest first."""
    got: dict[str, list[float]] = {}
    for r in evolution.sendtext_attempts(INSTANCE):
        number = digits(str((r.json or {}).get("number", "")))
        if number in wanted:
            got.setdefault(number, []).append(r.received_at)
    return got


def run_setting(
    bench: Bench, evolution: FakeEvolutionApi, poll_ms: int, count: int, interval: float, base: int, tag: str,
    agent_ready: bool, known_leads: bool = False, inline_send: bool = True,
) -> dict[str, Any]:  # fmt: skip
    env = {
        "LUMINAI_AI_DEBOUNCE_SECONDS": "0",
        "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
        "LUMINAI_WORKER_POLL_MS": str(poll_ms),
        "LUMINAI_INLINE_SEND": "true" if inline_send else "false",
    }
    bench.flush_redis()
    url, serve = bench.start_serve(env, label=f"serve-{poll_ms}")
    worker = bench.start_worker(env, threads=4, label=f"worker-{poll_ms}")
    try:
        if not agent_ready:
            bench.setup_agent(url, evolution)
        time.sleep(1.0)  # the worker connects to Redis and starts polling
        # warm-up: connections, prepared statements, first-use imports on both processes
        warm = make_bodies(10, INSTANCE, f"{tag}W", 10, base + 90_000)
        before = len(evolution.sendtext_attempts())
        asyncio.run(open_loop(url + WEBHOOK, warm, 1 / interval, connections=16))
        evolution.wait_for_requests(before + 10, timeout=30, path_prefix=SEND_PREFIX)

        bodies = make_bodies(count, INSTANCE, f"{tag}M", count, base)
        phones = [phone_for(i, count, base) for i in range(count)]
        assert len(set(phones)) == count, "leads must be distinct"
        wanted = set(phones)
        seen_before: dict[str, int] = {}
        if known_leads:  # every lead writes once and is answered; the measured message is its second one
            first = make_bodies(count, INSTANCE, f"{tag}F", count, base)
            asyncio.run(open_loop(url + WEBHOOK, first, 1 / interval, connections=16))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen_before = {n: len(v) for n, v in replies_by_number(evolution, wanted).items()}
                if len(seen_before) == count:
                    break
                time.sleep(0.1)
            assert len(seen_before) == count, f"only {len(seen_before)} of {count} leads got a first reply"
            time.sleep(1.0)
        starts: dict[int, float] = {}
        offset = time.time() - time.monotonic()  # wall -> monotonic, for the database timestamps
        meter = CpuMeter({"serve": serve.pid, "worker": worker.pid}, bench.db_name)
        meter.start()
        records = asyncio.run(
            open_loop(
                url + WEBHOOK,
                bodies,
                1 / interval,
                connections=16,
                on_start=lambda i, t: starts.__setitem__(i, t),
            )
        )
        deadline = time.monotonic() + 60
        got: dict[str, float] = {}
        while time.monotonic() < deadline and len(got) < count:
            for number, times in replies_by_number(evolution, wanted).items():
                skip = seen_before.get(number, 0)  # the replies to the first message of a known lead
                if len(times) > skip:
                    got[number] = times[skip]
            if len(got) < count:
                time.sleep(0.05)
        cpu = meter.stop()
        latencies = [got[p] - starts[i] for i, p in enumerate(phones) if p in got and i in starts]
        codes: dict[str, int] = {}
        for r in records:
            codes[str(r.status)] = codes.get(str(r.status), 0) + 1
        stages = breakdown(bench, phones, starts, records, got, offset, f"L{tag}M")
        return {
            "worker_poll_ms": poll_ms,
            "inline_send": inline_send,
            "leads": "known (measured message is the lead's second)"
            if known_leads
            else "new (first message)",
            "messages": count,
            "interval_ms": interval * 1000,
            "webhook_codes": codes,
            "replies_received": len(got),
            "latency_webhook_start_to_sendtext": summary_ms(latencies),
            "webhook_response_time": summary_ms([r.ended - r.started for r in records if r.status == 200]),
            "stages": stages,
            "cpu": cpu,
        }
    finally:
        bench.stop_process(worker)
        bench.stop_process(serve)


def breakdown(
    bench: Bench, phones: list[str], starts: dict[int, float], records: list[Any], got: dict[str, float],
    offset: float, prefix: str,
) -> dict[str, Any]:  # fmt: skip
    rows = bench.sql(
        """
        SELECT i.whatsapp_message_id AS wid, i.created_at AS inbound_at, r.created_at AS reply_at,
               r.metadata->>'whatsappLastAttemptAt' AS attempt_at, r.sent_at AS sent_at
        FROM talk_message i
        JOIN LATERAL (SELECT * FROM talk_message o WHERE o.talk_id = i.talk_id AND o.direction = 'outbound'
                      AND o.created_at >= i.created_at ORDER BY o.created_at LIMIT 1) r ON true
        WHERE i.direction = 'inbound' AND i.whatsapp_message_id LIKE :p
        """,
        p=prefix + "%",
    )

    def mono(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return float(value.timestamp()) - offset

    by_wid = {r["wid"]: r for r in rows}
    stage_names = [
        "1 POST start -> actor starts recording (HTTP, event loop, directory, actor hand-off)",
        "2 actor starts recording -> 200 at client (transaction, enqueue ai_turn, reply hop)",
        "3 200 at client -> reply stored by AI turn (Redis pickup of ai_turn + AI turn)",
        "4 reply stored -> send claimed (commit, then inline: claim; else enqueue send, Redis pickup, claim)",
        "5 send claimed -> sendText received by fake Evolution (HTTP call)",
    ]
    stages: dict[str, list[float]] = {name: [] for name in stage_names}
    for i, phone in enumerate(phones):
        rec = records[i] if i < len(records) and records[i].index == i else None
        row = by_wid.get(f"{prefix}{i:09d}")
        if rec is None or row is None or phone not in got or i not in starts:
            continue
        points = [
            starts[i],
            mono(row["inbound_at"]),
            rec.ended,
            mono(row["reply_at"]),
            mono(row["attempt_at"]),
            got[phone],
        ]
        if any(p is None for p in points):
            continue
        for name, a, b in zip(stage_names, points, points[1:], strict=False):
            stages[name].append(b - a)  # type: ignore[operator]
    return {name: summary_ms(values) for name, values in stages.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=50)
    parser.add_argument("--poll-ms", default="100,10")
    parser.add_argument(
        "--fake-nodelay",
        action="store_true",
        help="set TCP_NODELAY on the fake's sockets (removes its ~40 ms delayed-ACK stall per response); "
        "results go to end_to_end_fake_nodelay.json",
    )
    parser.add_argument(
        "--known-leads",
        action="store_true",
        help="each lead first writes once and is answered; the latency measured is that of its second "
        "message (a known conversation); results go to end_to_end_known_leads.json",
    )
    parser.add_argument(
        "--inline-send",
        default="on",
        help="LUMINAI_INLINE_SEND per setting, e.g. on,off to compare both in one run (processes restarted "
        "for each); results of `off` are keyed worker_poll_ms_<poll>_inline_off",
    )
    args = parser.parse_args()
    set_fake_evolution_nodelay(args.fake_nodelay)
    tag = unique_tag()
    figures: dict[str, Any] = {"settings": {}}
    settings = [
        (int(p), inline == "on") for p in args.poll_ms.split(",") for inline in args.inline_send.split(",")
    ]
    with Bench("e2e", time_limit=120 + 180 * len(settings)) as bench, FakeEvolutionApi() as evolution:
        bench.create_database()
        for n, (poll, inline) in enumerate(settings):
            result = run_setting(
                bench, evolution, poll, args.messages, args.interval_ms / 1000, 100_000 * (n + 1),
                f"{tag}{n}", agent_ready=n > 0, known_leads=args.known_leads, inline_send=inline,
            )  # fmt: skip
            key = f"worker_poll_ms_{poll}" + ("" if inline else "_inline_off")
            figures[key] = result
            lat = result["latency_webhook_start_to_sendtext"]
            print(
                f"poll {poll} ms, inline send {'on' if inline else 'off'}: replies "
                f"{result['replies_received']}/{args.messages}, "
                f"p50 {lat['p50_ms']} p90 {lat['p90_ms']} p99 {lat['p99_ms']} max {lat['max_ms']} ms"
            )
            for stage, s in result["stages"].items():
                print(f"   {stage}: p50 {s['p50_ms']} p99 {s['p99_ms']} ms")
        figures["targets"] = {"p50_ms": 15, "p99_ms": 60}
        figures["targets_met"] = {
            key: {
                "p50": (v["latency_webhook_start_to_sendtext"]["p50_ms"] or 1e9) <= 15,
                "p99": (v["latency_webhook_start_to_sendtext"]["p99_ms"] or 1e9) <= 60,
            }
            for key, v in figures.items()
            if key.startswith("worker_poll_ms_")
        }
        figures["settings"] = {
            "LUMINAI_AI_DEBOUNCE_SECONDS": "0",
            "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
            "brain": "offline (no OPENAI_API_KEY)",
            "worker": "run.py worker --threads 4",
            "broker": "redis db 14",
            "fake_evolution_tcp_nodelay": args.fake_nodelay,
            "leads": "known: each lead's second message is measured"
            if args.known_leads
            else "new: first messages",
        }
        print(json.dumps(figures["targets_met"]))
        name = "end_to_end_fake_nodelay" if args.fake_nodelay else "end_to_end"
        write_results(name + ("_known_leads" if args.known_leads else ""), figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
