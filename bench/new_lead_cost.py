"""What a new lead's first message costs `serve`, against a known lead's next one, and where it goes.

    .venv/bin/python bench/new_lead_cost.py      # about 1 minute; writes bench/results/new_lead_cost.json

Three measurements on a fresh PostgreSQL database and the Redis broker (db 14), no worker running (the AI
turns wait in Redis), offline brain, debounce 0, send pacing off:

(a) over HTTP: the real `run.py serve`; 300 new leads (each a new contact and talk), then a second message
    from each of them (a known conversation: the group writer's fast path), one at a time with 10 ms between
    them; reports the CPU `serve` used per webhook (from /proc, user + kernel) and the client-side latency.
(b) in process: the service's own container (`bootstrap.build`), `Container.handle_inbound` for 500 new
    leads, one at a time, with every step of the record path timed (thread CPU and wall, per call): the
    three statements of `persistence.lead_path`, the commit, the new rows' values, the AI-turn enqueue.
(c) the three statements of one new lead, each run 300 times (in a transaction rolled back every time):
    as `lead_path` runs them (`persistence.direct`: the compiled statement on psycopg's cursor), through
    SQLAlchemy's `Connection.execute` of the same Core statement, as the compiled SQL string through
    SQLAlchemy (`Connection.exec_driver_sql`), and on a plain psycopg connection. The differences are what
    SQLAlchemy's execution machinery costs per statement, and how much of it `direct` leaves.
"""

from __future__ import annotations

import collections
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _common import (
    INSTANCE,
    REDIS_URL,
    WEBHOOK,
    Bench,
    cpu_seconds,
    create_agent_in_process,
    set_fake_evolution_nodelay,
    summary_ms,
    webhook_body,
    write_results,
)

from luminai_actors import bootstrap
from luminai_actors.config import Settings
from luminai_actors.evolution.webhook import parse_webhook
from luminai_actors.persistence import uow
from luminai_actors.services import inbound, inbound_lead
from luminai_actors.testing import FakeEvolutionApi

#: The lead path's three statements: (function of `persistence.lead_path`, the label of its step).
STATEMENTS = (
    ("inbound_agent", "    1 inbound_agent (BEGIN, agent, dedupe, locks)"),
    ("lead_lookup", "    2 lead_lookup (contacts, open talk, defaults)"),
    ("store_lead_message", "    3 store_lead_message (one statement)"),
)

SERVICE_ENV = {"LUMINAI_AI_DEBOUNCE_SECONDS": "0", "LUMINAI_SEND_RATE_PER_INSTANCE": "0"}


def over_http(bench: Bench, evolution: FakeEvolutionApi, count: int = 300) -> dict[str, Any]:
    url, serve = bench.start_serve(SERVICE_ENV)
    try:
        bench.setup_agent(url, evolution)
        with httpx.Client(base_url=url, timeout=10) as client:

            def post(phone: str, message_id: str) -> float:
                started = time.perf_counter()
                response = client.post(WEBHOOK, json=webhook_body(INSTANCE, phone, "hi", message_id))
                assert response.status_code == 200, response.text
                return time.perf_counter() - started

            for i in range(30):  # warm-up: connections, prepared statements, first-use imports
                post(f"551197{i:07d}", f"W{i}")
            figures: dict[str, Any] = {}
            for kind in ("new", "known"):
                time.sleep(1.0)
                cpu0, latencies = cpu_seconds(serve.pid), []
                for i in range(count):
                    time.sleep(0.01)
                    latencies.append(post(f"551198{i:07d}", f"{kind}{i}"))
                cpu = cpu_seconds(serve.pid) - cpu0
                figures[kind] = {
                    "webhooks": count,
                    "serve_cpu_ms_per_webhook": round(cpu / count * 1000, 3),
                    "latency": summary_ms(latencies),
                }
            cpu0, t0 = cpu_seconds(serve.pid), time.monotonic()
            time.sleep(3.0)
            figures["serve_cpu_ms_per_idle_second"] = round(
                (cpu_seconds(serve.pid) - cpu0) / (time.monotonic() - t0) * 1000, 2
            )
            return figures
    finally:
        bench.stop_process(serve)


class StepTimer:
    """Wraps module attributes so that each call adds its thread CPU and wall time to its step."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.wall: dict[str, float] = collections.defaultdict(float)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, step: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu[step] += time.thread_time() - cpu
                self.wall[step] += time.perf_counter() - wall

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def clear(self) -> None:
        self.cpu.clear()
        self.wall.clear()

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def per_call(self, calls: int) -> dict[str, dict[str, float]]:
        order = sorted(self.cpu, key=lambda step: -self.wall[step])
        return {
            step: {
                "cpu_ms": round(self.cpu[step] / calls * 1000, 3),
                "wall_ms": round(self.wall[step] / calls * 1000, 3),
            }
            for step in order
        }


def in_process(bench: Bench, evolution: FakeEvolutionApi, count: int = 500) -> dict[str, Any]:
    settings = Settings.from_env(
        {
            "LUMINAI_DATABASE_URL": bench.db_url or "",
            "LUMINAI_BROKER_URL": REDIS_URL,
            "LUMINAI_LOG_LEVEL": "WARNING",
            **SERVICE_ENV,
        }
    )
    instance = "bench-new-lead-cost"
    evolution.add_instance(instance, "k")
    container = bootstrap.build(settings)
    bench.cleanups.append(container.close)
    create_agent_in_process(container.uow, instance, evolution.url, "New lead cost")
    timer = StepTimer()
    steps = [
        (bootstrap.Container, "handle_inbound_now", "total (Container.handle_inbound)"),
        (inbound, "_record", "record_inbound's transaction"),
        (inbound, "record_lead", "  the lead hot path"),
        *((inbound_lead.lead_path, name, label) for name, label in STATEMENTS),
        (inbound_lead.identity, "new_contact_row", "    row values: contact"),
        (inbound_lead.identity, "new_whatsapp_talk_row", "    row values: talk"),
        (inbound_lead, "lead_message_row", "    row values: talk_message"),
        (uow.SqlAlchemyUnitOfWork, "commit", "  COMMIT (Session.commit)"),
        (uow.SqlAlchemyUnitOfWork, "__enter__", "  unit of work: open"),
        (uow.SqlAlchemyUnitOfWork, "__exit__", "  unit of work: close"),
        (bootstrap.Container, "_enqueue_turns", "enqueue the AI turn (Redis)"),
    ]
    for owner, name, step in steps:
        timer.wrap(owner, name, step)

    def feed(n: int, tag: str, offset: int) -> None:
        for i in range(n):
            event = parse_webhook(webhook_body(instance, f"551196{offset + i:07d}", "hi", f"{tag}{i:08d}"))
            assert container.handle_inbound_now(event).status == "stored"

    try:
        feed(100, "W", 0)  # warm-up
        timer.clear()
        feed(count, "N", 1_000)
        steps_per_call = timer.per_call(count)
        replay = _replay_statements(container, timer, feed)
    finally:
        timer.restore()
    return {"new_leads": count, "steps_per_call": steps_per_call, "statements_replayed": replay}


def _replay_statements(container: Any, timer: StepTimer, feed: Callable[[int, str, int], None]) -> Any:
    """(c): one more new lead's three statements, captured as sent, each run 300 times three ways."""
    from sqlalchemy import event

    from luminai_actors.persistence import direct

    sent: list[tuple[str, Any]] = []
    core_calls: list[tuple[Any, dict[str, Any]]] = []  # (Core statement, parameters) as lead_path gave them

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    original_rows = direct.rows

    def capture_core(connection: Any, statement: Any, params: Any) -> Any:
        core_calls.append((statement, dict(params)))
        return original_rows(connection, statement, params)

    event.listen(container.engine, "before_cursor_execute", capture)
    direct.rows = capture_core  # type: ignore[assignment]
    try:
        feed(1, "C", 5_000)
    finally:
        direct.rows = original_rows  # type: ignore[assignment]
        event.remove(container.engine, "before_cursor_execute", capture)
    names = [name for name, _ in STATEMENTS]
    assert len(core_calls) == len(names), core_calls
    store_params = sent[2][1]
    with container.engine.begin() as connection:  # the captured lead's rows go: the replays insert them again
        for sql, key in (
            ("DELETE FROM talk_message WHERE id = %(k)s", "m_id"),
            ("DELETE FROM talk_agent WHERE talk_id = %(k)s", "t_id"),
            ("DELETE FROM talk WHERE id = %(k)s", "t_id"),
            ("DELETE FROM contact WHERE id = %(k)s", "c_id"),
        ):
            connection.exec_driver_sql(sql, {"k": store_params[key]})
    results: dict[str, dict[str, Any]] = {name: {} for name in names}

    def measure(way: str, run: Callable[[int], None], rollback: Callable[[], None]) -> None:
        samples: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
        for _ in range(300):
            for index in range(3):
                cpu, wall = time.thread_time(), time.perf_counter()
                run(index)
                samples[index].append((time.thread_time() - cpu, time.perf_counter() - wall))
            rollback()
        for index, name in enumerate(names):
            results[name][way] = {
                "cpu_ms_p50": round(statistics.median(s[0] for s in samples[index]) * 1000, 3),
                "wall_ms_p50": round(statistics.median(s[1] for s in samples[index]) * 1000, 3),
            }

    with container.engine.connect() as connection:

        def through_direct(index: int) -> None:
            direct.rows(connection, *core_calls[index])

        measure("lead_path_direct", through_direct, connection.rollback)

        def core(index: int) -> None:
            result = connection.execute(*core_calls[index])
            if result.returns_rows:
                result.all()

        measure("sqlalchemy_core", core, connection.rollback)

        def driver_sql(index: int) -> None:
            result = connection.exec_driver_sql(*sent[index])
            if result.returns_rows:
                result.all()

        measure("sqlalchemy_exec_driver_sql", driver_sql, connection.rollback)
    import psycopg

    url = (container.engine.url.set(drivername="postgresql")).render_as_string(hide_password=False)
    with psycopg.connect(url) as raw:

        def plain(index: int) -> None:
            cursor = raw.execute(*sent[index])
            if cursor.description is not None:
                cursor.fetchall()

        measure("psycopg_directly", plain, raw.rollback)
    return results


def main() -> int:
    figures: dict[str, Any] = {}
    with Bench("newlead", time_limit=300) as bench:
        bench.create_database()
        bench.flush_redis()
        set_fake_evolution_nodelay(True)
        evolution = FakeEvolutionApi().start()
        bench.cleanups.append(evolution.stop)
        figures["a_over_http"] = over_http(bench, evolution)
        print("(a)", figures["a_over_http"])
        figures["b_c_in_process"] = in_process(bench, evolution)
        for step, value in figures["b_c_in_process"]["steps_per_call"].items():
            print(f"(b) {step:55s} cpu {value['cpu_ms']:6.3f}  wall {value['wall_ms']:6.3f} ms")
        for name, ways in figures["b_c_in_process"]["statements_replayed"].items():
            print("(c)", name, ways)
        write_results("new_lead_cost", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
