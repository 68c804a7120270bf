"""The inbound hot path alone, in one thread, with no HTTP and no other threads: what one message costs.

    .venv/bin/python bench/profile_hotpath.py     # about 30 s; writes bench/results/profile_hotpath.json

Builds the service's own container (`bootstrap.build`) on a fresh PostgreSQL database and the Redis broker
(db 14), creates an agent, then feeds `Container.handle_inbound` (exactly what a conversation actor runs for a
webhook: record_inbound in one transaction, then enqueue the AI turn on Redis) 500 first messages (new
contacts and talks) and then 2,000 messages from those 500 known leads, sequentially. It reports per message:
wall time, CPU time of the thread, SQL statements sent (SQLAlchemy `before_cursor_execute`), and a cProfile
(stdlib) of the steady-state part (bench/results/profile_hotpath.pstats.txt); 500 more new leads run under
cProfile too (bench/results/profile_hotpath_new_leads.pstats.txt). This splits the serve
process's CPU per webhook (bench/ingest.py) into "the actor's work" and "everything around it".

The worker side (300 AI turns of new talks, then the 300 sends) is measured the same way, once plainly and
once more on 300 other talks under cProfile (bench/results/profile_hotpath_worker.pstats.txt). With
`--worker-only` only that part runs (about 10 s; results go to profile_hotpath_worker.json) — for iterating.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REDIS_URL,
    RESULTS,
    Bench,
    CpuMeter,
    create_agent_in_process,
    set_fake_evolution_nodelay,
    summary_ms,
    webhook_body,
    write_results,
)

from luminai_actors import bootstrap
from luminai_actors.config import Settings
from luminai_actors.evolution.webhook import parse_webhook
from luminai_actors.testing import FakeEvolutionApi

INSTANCE = "bench-hotpath"


def main() -> int:
    worker_only = "--worker-only" in sys.argv[1:]
    figures: dict[str, Any] = {}
    with Bench("hotpath", time_limit=240) as bench:
        bench.create_database()
        bench.flush_redis()
        settings = Settings.from_env(
            {
                "LUMINAI_DATABASE_URL": bench.db_url or "",
                "LUMINAI_BROKER_URL": REDIS_URL,
                "LUMINAI_AI_DEBOUNCE_SECONDS": "0",
                "LUMINAI_LOG_LEVEL": "WARNING",
                "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
                "LUMINAI_INLINE_SEND": "false",  # the AI turn and the send measured one by one
            }
        )
        global _EVOLUTION
        set_fake_evolution_nodelay(True)  # measure the service's send, not the fake's delayed-ACK stall
        _EVOLUTION = FakeEvolutionApi().start()
        bench.cleanups.append(_EVOLUTION.stop)
        _EVOLUTION.add_instance(INSTANCE, "k")
        container = bootstrap.build(settings)
        bench.cleanups.append(container.close)
        _setup_agent(container)
        from sqlalchemy import event

        statements: Counter[str] = Counter()

        @event.listens_for(container.engine, "before_cursor_execute")
        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements[statement.split()[0].upper()] += 1

        def feed(
            n: int, tag: str, profile: cProfile.Profile | None = None, offset: int = 0
        ) -> dict[str, Any]:
            walls, cpus = [], []
            statements.clear()
            for i in range(n):
                lead = offset + (i * 31) % 500
                payload = webhook_body(INSTANCE, f"551198{lead:07d}", f"msg {i}", f"H{tag}{i:08d}")
                event_ = parse_webhook(payload)
                container.directory.lookup(event_.instance)  # as the webhook layer does (cached)
                w0, c0 = time.perf_counter(), time.thread_time()
                if profile is not None:
                    profile.enable()
                outcome = container.handle_inbound(event_)
                if profile is not None:
                    profile.disable()
                cpus.append(time.thread_time() - c0)
                walls.append(time.perf_counter() - w0)
                assert outcome.status == "stored", outcome
            return {
                "messages": n,
                "wall": summary_ms(walls),
                "cpu": summary_ms(cpus),
                "cpu_share_of_wall": round(sum(cpus) / sum(walls), 3),
                "sql_statements_per_message": {k: round(v / n, 2) for k, v in statements.most_common()},
                "sql_statements_total_per_message": round(sum(statements.values()) / n, 2),
                "sequential_messages_per_second": round(n / sum(walls), 1),
            }

        meter = CpuMeter({}, bench.db_name)
        meter.start()
        if worker_only:
            figures.update(_worker_side(container, statements, "T"))
            worker_profile = cProfile.Profile()
            figures["under_cprofile"] = _worker_side(container, statements, "U", worker_profile)
            figures["cpu"] = meter.stop()
            _write_worker_profile(worker_profile)
            print(json.dumps(figures, indent=1))
            write_results("profile_hotpath_worker", figures)
            return 0
        figures["first_message_of_500_new_leads"] = feed(500, "N")
        new_profile = cProfile.Profile()
        figures["first_message_of_500_new_leads_under_cprofile"] = feed(500, "Q", new_profile, offset=500)
        _write_profile(new_profile, "profile_hotpath_new_leads.pstats.txt", "500 first messages of new leads")
        figures.update(_worker_side(container, statements, "T"))
        worker_profile = cProfile.Profile()
        figures["worker_side_under_cprofile"] = _worker_side(container, statements, "U", worker_profile)
        _write_worker_profile(worker_profile)
        figures["known_leads_2000_messages"] = feed(2000, "K")
        profile = cProfile.Profile()
        figures["known_leads_1000_messages_under_cprofile"] = feed(1000, "P", profile)
        figures["cpu"] = meter.stop()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "profile_hotpath.pstats.txt").write_text(
            "cProfile of 1000 Container.handle_inbound calls (known leads), sequential, one thread\n"
            + out.getvalue().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
        )
        print(json.dumps(figures, indent=1))
        write_results("profile_hotpath", figures)
    return 0


def _write_profile(profile: cProfile.Profile, name: str, what: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(
        f"cProfile of Container.handle_inbound for {what}, sequential, one thread\n"
        + out.getvalue().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    )


def _write_worker_profile(profile: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_hotpath_worker.pstats.txt").write_text(
        "cProfile of 300 ai_turn calls (new talks) then 300 send_message calls, sequential, one thread\n"
        + out.getvalue().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    )


def _worker_side(
    container: bootstrap.Container,
    statements: Counter[str],
    tag: str,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """300 new leads, then the AI turn of each talk, then the send of each reply: what a worker thread runs,
    called synchronously (Dramatiq actors are plain callables), against a FakeEvolutionApi in this process.
    With `profile`, only the task calls run under it."""
    out: dict[str, Any] = {}
    talks = []
    phone_base = {"T": 0, "U": 300}.get(tag, 0)
    for i in range(300):
        payload = webhook_body(
            INSTANCE, f"551199{phone_base + i:07d}", "Oi, quero saber mais", f"H{tag}{i:08d}"
        )
        talks.append(container.handle_inbound(parse_webhook(payload)).talk_id)
    for label, fn, ids in (
        ("ai_turn_one_new_talk", container.dispatcher.ai_actor, talks),
        ("send_message_one_reply", container.dispatcher.send_actor, None),
    ):
        if ids is None:
            with container.engine.connect() as connection:
                ids = [
                    r[0]
                    for r in connection.exec_driver_sql(
                        "SELECT id FROM talk_message WHERE direction = 'outbound' "
                        "AND send_status IS DISTINCT FROM 'sent'"
                    ).all()
                ]
        statements.clear()
        walls, cpus = [], []
        for ident in ids:
            w0, c0 = time.perf_counter(), time.thread_time()
            if profile is not None:
                profile.enable()
            fn(str(ident))
            if profile is not None:
                profile.disable()
            cpus.append(time.thread_time() - c0)
            walls.append(time.perf_counter() - w0)
        n = max(len(ids), 1)
        out[label] = {
            "calls": len(ids),
            "wall": summary_ms(walls),
            "cpu": summary_ms(cpus),
            "sql_statements_per_call": {k: round(v / n, 2) for k, v in statements.most_common()},
            "sql_statements_total_per_call": round(sum(statements.values()) / n, 2),
        }
    out["fake_evolution_tcp_nodelay"] = True
    out["sendtext_received_by_fake_evolution"] = len(_EVOLUTION.sendtext_attempts()) if _EVOLUTION else 0
    return out


_EVOLUTION: FakeEvolutionApi | None = None


def _setup_agent(container: bootstrap.Container) -> None:
    create_agent_in_process(container.uow, INSTANCE, _EVOLUTION.url if _EVOLUTION else "", "Hot path")


if __name__ == "__main__":
    sys.exit(main())
