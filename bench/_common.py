"""Shared plumbing of the benchmarks: machine facts, a throw-away PostgreSQL database, Redis db 14, the real
`run.py serve` / `run.py worker` processes, an agent created through the admin API, results files, cleanup.

Everything a benchmark starts is registered on a `Bench` and torn down by `Bench.close()` (called from a
`finally`, on SIGTERM/SIGINT, and when the hard time limit of the script fires): processes are stopped by
their pid, the database is dropped, Redis db 14 is flushed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PG_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"
ADMIN_TOKEN = "bench-admin-token"
WEBHOOK = "/api/webhooks/whatsapp/evolution"
INSTANCE = "bench-instance"
BENCH_REQUIREMENTS = ("py-spy",)  # installed into .venv by ensure_tools(); never in pyproject.toml


# ---------------------------------------------------------------------------------------------------- facts
def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    pg = _run_text(["psql", "-h", "127.0.0.1", "-U", "root", "-d", "test", "-Atc", "SHOW server_version"])
    redis_v = "unknown"
    info = _run_text(["redis-cli", "-n", "14", "INFO", "server"])
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            redis_v = line.split(":", 1)[1].strip()
    wrk = _run_text(["wrk", "--version"]).splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg.strip() or "unknown",
        "redis": redis_v,
        "wrk": wrk[0].strip() if wrk else "not installed",
        "packages": _versions("starlette", "uvicorn", "sqlalchemy", "psycopg", "pykka", "dramatiq", "httpx"),
    }


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def _run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def write_results(name: str, figures: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {
        "benchmark": name,
        "date": now_iso(),
        "command": command_line(),
        "machine": machine(),
        **(extra or {}),
        "figures": figures,
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print(f"results written to {path.relative_to(ROOT)}")
    return path


def percentile(values: Iterable[float], p: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "n": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p90_ms": ms(percentile(seconds, 90)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def ensure_tools(need_wrk: bool = True, need_pyspy: bool = False) -> None:
    """wrk comes from apt (`apt-get install -y wrk`); py-spy is pip-installed into .venv when missing."""
    if need_wrk and subprocess.run(["which", "wrk"], capture_output=True, check=False).returncode != 0:
        raise SystemExit("wrk is missing: run `apt-get update && apt-get install -y wrk` first")
    if need_pyspy and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        print("installing py-spy into .venv (a benchmark requirement, not a project dependency)")
        subprocess.check_call([PYTHON, "-m", "pip", "install", "--quiet", *BENCH_REQUIREMENTS])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of_command(name: str) -> float:
    """CPU seconds of every process whose comm is `name` (e.g. postgres, redis-server), read from /proc."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != name:
                        continue
            except OSError:
                continue
            total += cpu_seconds(int(entry))
    return total


class CpuMeter:
    """CPU seconds spent by named pids and by PostgreSQL / Redis between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {label: cpu_seconds(pid) for label, pid in self.pids.items()}
        sample["postgres"] = cpu_of_command("postgres")
        sample["redis"] = cpu_of_command("redis-server")
        sample["children (wrk/loadgen)"] = _children_cpu()
        return sample

    def start(self) -> None:
        self._before, self._t0 = self._sample(), time.monotonic()

    def stop(self) -> dict[str, Any]:
        after, wall = self._sample(), time.monotonic() - self._t0
        used = {k: after[k] - self._before.get(k, 0.0) for k in after}
        return {
            "wall_s": round(wall, 2),
            "cpu_s": {k: round(v, 2) for k, v in used.items()},
            "cores_busy": {k: round(v / wall, 2) for k, v in used.items()} if wall else {},
        }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def webhook_body(instance: str, phone: str, text: str, message_id: str) -> dict[str, Any]:
    """A `messages.upsert` webhook shaped like Evolution 2.3's (the same shape tests/e2e/conftest.py posts)."""
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {"remoteJid": f"{phone}@s.whatsapp.net", "fromMe": False, "id": message_id},
            "pushName": "Bench Lead",
            "status": "DELIVERY_ACK",
            "message": {"conversation": text},
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


# ---------------------------------------------------------------------------------------------- the harness
class Bench:
    """Owns everything one benchmark run starts; `close()` undoes all of it (idempotent)."""

    def __init__(self, name: str, time_limit: int = 300) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"luminai-bench-{name}-"))
        self.db_name = f"bench_{name}_{os.getpid()}_{secrets.token_hex(3)}"
        self.db_url: str | None = None
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[str, Path] = {}
        self.cleanups: list[Callable[[], None]] = []
        self._closed = False
        self.started = time.monotonic()
        self._install_signals(time_limit)

    # -- signals and the hard limit: turn them into exceptions so every `finally` runs
    def _install_signals(self, time_limit: int) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        def on_alarm(signum: int, frame: Any) -> None:
            raise TimeoutError(f"benchmark {self.name} exceeded its {time_limit}s limit")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(time_limit)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- PostgreSQL and Redis
    def create_database(self) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        self.db_url = make_url(PG_ADMIN_URL).set(database=self.db_name).render_as_string(hide_password=False)
        env = self.service_env({})
        subprocess.run(
            [PYTHON, str(ROOT / "run.py"), "migrate"], env=env, cwd=self.tmp, check=True, capture_output=True
        )
        return self.db_url

    def drop_database(self) -> None:
        if self.db_url is None:
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": self.db_name},
                )
                connection.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}"'))
        finally:
            admin.dispose()
        self.db_url = None

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.flushdb()
        finally:
            client.close()

    def redis_queue_backlog(self) -> int:
        """Dramatiq messages not yet acked on the ai and send queues (ready, delayed or running)."""
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            return sum(
                int(client.hlen(f"dramatiq:{q}.msgs")) for q in ("ai", "ai.DQ", "send", "send.DQ")
            )
        finally:
            client.close()

    def sql(self, query: str, **params: Any) -> list[dict[str, Any]]:
        from sqlalchemy import create_engine, text

        assert self.db_url is not None
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(text(query), params)]
        finally:
            engine.dispose()

    # -- processes
    def service_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMINAI_", "OPENAI_"))}
        env.update(
            {
                "LUMINAI_NO_VENV": "1",
                "LUMINAI_DATABASE_URL": self.db_url or "",
                "LUMINAI_BROKER_URL": REDIS_URL,
                "LUMINAI_ADMIN_TOKEN": ADMIN_TOKEN,
            }
        )
        env.update(extra)
        return env

    def spawn(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{label}.log"
        self.logs[label] = log
        with log.open("ab") as sink:
            process = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=sink, stderr=subprocess.STDOUT)
        self.processes.append((label, process))
        return process

    def start_serve(self, extra_env: dict[str, str], label: str = "serve") -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        env = self.service_env(extra_env)
        process = self.spawn(label, [PYTHON, str(ROOT / "run.py"), "serve", "--port", str(port)], env)
        url = f"http://127.0.0.1:{port}"
        self.wait_ready(url, process, "/readyz")
        return url, process

    def start_worker(self, extra_env: dict[str, str], threads: int = 4, label: str = "worker") -> subprocess.Popen[bytes]:
        env = self.service_env(extra_env)
        return self.spawn(label, [PYTHON, str(ROOT / "run.py"), "worker", "--threads", str(threads)], env)

    def wait_ready(self, url: str, process: subprocess.Popen[bytes], path: str, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"process exited early ({process.returncode}); see {self.log_of(process)}")
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{url}{path} not ready within {timeout}s")

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        for label, p in self.processes:
            if p is process:
                return str(self.logs.get(label))
        return "?"

    def stop_process(self, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(5)

    def stop_all(self) -> None:
        for _label, process in reversed(self.processes):
            try:
                self.stop_process(process)
            except Exception as exc:
                print(f"cleanup: could not stop pid {process.pid}: {exc}", file=sys.stderr)

    # -- the agent
    def setup_agent(self, url: str, evolution: Any, instance: str = INSTANCE) -> dict[str, str]:
        """Organization, tree flow and agent on `instance` of the fake Evolution, through the admin API."""
        import httpx

        api_key = f"key-{instance}"
        evolution.add_instance(instance, api_key)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as c:

            def post(path: str, body: dict[str, Any]) -> str:
                r = c.post(path, json=body)
                if r.status_code != 201:
                    raise RuntimeError(f"admin {path}: {r.status_code} {r.text}")
                return str(r.json()["id"])

            org = post("/api/admin/organizations", {"name": f"Bench {self.name}"})
            flow = post(
                f"/api/admin/organizations/{org}/tree-flows",
                {
                    "name": "Qualification",
                    "steps": [
                        {"id": "need", "question": "What are you looking for?"},
                        {"id": "budget", "question": "What budget do you have in mind?"},
                    ],
                },
            )
            agent = post(
                f"/api/admin/organizations/{org}/agents",
                {
                    "name": "Sofia",
                    "prompt": "You are Sofia, a friendly SDR.",
                    "treeFlowId": flow,
                    "active": True,
                    "whatsapp": {
                        "instanceName": instance,
                        "phone": "+5511912345678",
                        "serverUrl": evolution.url,
                        "apiKey": api_key,
                        "active": True,
                    },
                },
            )
        return {"organization_id": org, "agent_id": agent, "instance": instance}

    def ops_actors(self, url: str) -> dict[str, Any]:
        import httpx

        r = httpx.get(url + "/ops/actors", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    # -- teardown
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        signal.alarm(0)
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:
                print(f"cleanup step failed: {exc}", file=sys.stderr)
        self.stop_all()
        for step in (self.drop_database, self.flush_redis):
            try:
                step()
            except Exception as exc:
                print(f"cleanup step {step.__name__} failed: {exc}", file=sys.stderr)
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"logs kept in {self.tmp}")
        print(f"cleanup done: processes stopped, database {self.db_name} dropped, redis db 14 flushed")

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unique_tag() -> str:
    return uuid.uuid4().hex[:6].upper()
