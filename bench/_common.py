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
from collections.abc import Callable, Iterable, Iterator
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
WEBHOOK_TOKEN = "bench-webhook-token"  # the agents' webhook secret, sent as X-Webhook-Token
INSTANCE = "bench-instance"
BENCH_REQUIREMENTS = ("py-spy",)
_RUN_STATE: dict[str, Any] = {}  # installed into .venv by ensure_tools(); never in pyproject.toml


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
    commit = _run_text(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg.strip() or "unknown",
        "redis": redis_v,
        "wrk": wrk[0].strip() if wrk else "not installed",
        "code_commit": commit or "unknown",
        "code_note": "HEAD of the checkout; other engineers' uncommitted edits may have been present",
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
    disturbed = _disturbed_paths(figures)
    extra = {
        "other_processes": {
            "at_start": _RUN_STATE.get("quiet"),
            "phases_disturbed": disturbed,
            "note": "a phase is disturbed when processes that are not this benchmark's used"
            f" > {DISTURBED_CORES} cores during it (other engineers' test runs share this machine)",
        },
        **(extra or {}),
    }
    if disturbed:
        print(f"WARNING: other processes used the CPU during: {disturbed}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{os.environ.get('BENCH_RESULTS_SUFFIX', '')}.json"
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


def _disturbed_paths(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("disturbed_by_other_processes"):
            found.append(path.removesuffix(".cpu") or "/")
        for key, value in node.items():
            found += _disturbed_paths(value, f"{path}.{key}" if path else str(key))
    return found


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


def set_fake_evolution_nodelay(on: bool) -> None:
    """The FakeEvolutionApi (luminai_actors/testing/http.py) writes a response's headers and body in two
    send()s without TCP_NODELAY, so on a keep-alive connection every response waits ~40 ms for the client's
    delayed ACK (Nagle). Setting the stdlib handler's `disable_nagle_algorithm` in THIS process removes that
    artefact of the fake (a real Evolution server answers in one write); the project's files are untouched."""
    import luminai_actors.testing.http as fake_http

    fake_http._Handler.disable_nagle_algorithm = on  # type: ignore[attr-defined]


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


def cpu_seconds(pid: int, part: str = "both") -> float:
    """utime + stime (or only "sys") of one process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[12]) if part == "sys" else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


DISTURBED_CORES = 0.3  # a phase during which other people's processes used more than this is flagged


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat: user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def stall_seconds() -> dict[str, float]:
    """Time since boot during which tasks waited: /proc/pressure (PSI) `some` of cpu and io (at least one
    task stalled), io `full` (all non-idle tasks stalled on I/O), and the CPU time the hypervisor stole
    (/proc/stat); empty where the kernel has no PSI."""
    out: dict[str, float] = {}
    for resource in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{resource}") as f:
                for line in f:
                    kind, *fields = line.split()
                    total = dict(field.split("=") for field in fields)["total"]
                    out[f"{resource}_{kind}"] = int(total) / 1e6
        except (OSError, KeyError, ValueError):
            continue
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    out["cpu_steal"] = (fields + [0] * 8)[7] / os.sysconf("SC_CLK_TCK")
    return out


SHARED_COMMANDS = {"postgres", "redis-server"}  # server processes our load drives too (WAL writer, ...)


def process_table(db_name: str | None = None) -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, start time) -> (owner, CPU seconds) for every process; owner is "own" (this process, its
    descendants, PostgreSQL backends of our database), "shared" (other postgres/redis server processes,
    kernel threads) or "foreign" (anything else: other people's test runs)."""
    stats: dict[int, tuple[int, int, str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            stats[int(entry)] = (
                int(fields[1]),
                int(fields[19]),
                comm,
                (int(fields[11]) + int(fields[12])) / tick,
            )
        except (OSError, ValueError, IndexError):
            continue
    me = os.getpid()
    table: dict[tuple[int, int], tuple[str, float]] = {}
    for pid, (ppid, start, comm, cpu) in stats.items():
        p, depth = ppid, 0
        while p and p != me and p != 1 and depth < 12:
            p, depth = stats[p][0] if p in stats else 0, depth + 1
        owner = "foreign"
        if pid == me or p == me:
            owner = "own"
        elif comm in SHARED_COMMANDS or ppid == 2 or pid == 2:
            owner = "shared"
            if db_name and comm == "postgres":
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if db_name.encode() in f.read():
                            owner = "own"
                except OSError:
                    pass
        table[(pid, start)] = (owner, cpu)
    return table


def cpu_by_owner(
    before: dict[tuple[int, int], tuple[str, float]], after: dict[tuple[int, int], tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per owner between two process tables (processes born in between count from zero;
    ones that started and ended in between are missed)."""
    out = {"own": 0.0, "shared": 0.0, "foreign": 0.0}
    for key, (owner, cpu) in after.items():
        out[owner] += max(0.0, cpu - before.get(key, (owner, 0.0))[1])
    return out


def foreign_load(seconds: float = 2.0, db_name: str | None = None) -> float:
    """Cores used by other people's processes (not ours, not the postgres/redis servers), over `seconds`."""
    t0, before = time.monotonic(), process_table(db_name)
    time.sleep(seconds)
    t1, after = time.monotonic(), process_table(db_name)
    return cpu_by_owner(before, after)["foreign"] / (t1 - t0)


class CpuMeter:
    """CPU seconds spent by named pids, PostgreSQL, Redis, by other people's processes (`others_on_machine`:
    not ours and not the postgres/redis servers), the machine's total (/proc/stat) and the part of it no
    live process accounts for, between start() and stop()."""

    def __init__(self, pids: dict[str, int], db_name: str | None = None) -> None:
        self.pids = pids
        self.db_name = db_name
        self._before: dict[str, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {label: cpu_seconds(pid) for label, pid in self.pids.items()}
        sample |= {f"{label} (kernel part)": cpu_seconds(pid, "sys") for label, pid in self.pids.items()}
        sample["postgres (all live backends)"] = cpu_of_command("postgres")
        sample["redis"] = cpu_of_command("redis-server")
        sample["children (wrk/loadgen)"] = _children_cpu()
        sample["_machine"] = machine_busy_seconds()
        self._table = process_table(self.db_name)
        self._stalls = stall_seconds()
        return sample

    def start(self) -> None:
        self._before, self._t0 = self._sample(), time.monotonic()
        self._table_before = self._table
        self._stalls_before = self._stalls

    def stop(self) -> dict[str, Any]:
        after, wall = self._sample(), time.monotonic() - self._t0
        used = {k: after[k] - self._before.get(k, 0.0) for k in after}
        machine = used.pop("_machine")
        owners = cpu_by_owner(self._table_before, self._table)
        used["others_on_machine"] = owners["foreign"]
        used["machine_total"] = machine
        used["not_attributed_to_any_process"] = max(0.0, machine - sum(owners.values()))
        disturbed = wall > 0 and used["others_on_machine"] / wall > DISTURBED_CORES
        return {
            "disturbed_by_other_processes": disturbed,
            "wall_s": round(wall, 2),
            "cpu_s": {k: round(v, 2) for k, v in used.items()},
            "cores_busy": {k: round(v / wall, 2) for k, v in used.items()} if wall else {},
            # share of the phase during which tasks waited for a core (cpu_some), for I/O (io_some; io_full:
            # every non-idle task did), and stolen CPU in core-seconds per second: the machine's own noise
            "stalls_share_of_wall": {
                k: round((v - self._stalls_before.get(k, 0.0)) / wall, 4) for k, v in self._stalls.items()
            }
            if wall
            else {},
        }


class PgSessions:
    """pg_stat_database.sessions of one database (sessions ever established), read over one kept-open
    connection: the difference over a phase is how many PostgreSQL connections were opened meanwhile."""

    def __init__(self, db_url: str, db_name: str) -> None:
        from sqlalchemy import create_engine

        self.db_name = db_name
        self.engine = create_engine(db_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.connection = self.engine.connect()

    def read(self) -> int:
        from sqlalchemy import text

        row = self.connection.execute(
            text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": self.db_name}
        ).one()
        return int(row[0])

    def close(self) -> None:
        self.connection.close()
        self.engine.dispose()


class PgActivitySampler:
    """Samples pg_stat_activity of one database every `interval` s in a thread: what its backends wait on."""

    def __init__(self, db_url: str, db_name: str, interval: float = 0.1) -> None:
        import threading

        self.db_url, self.db_name, self.interval = db_url, db_name, interval
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def _run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url, pool_size=1)
        query = text(
            "SELECT state, coalesce(wait_event_type, 'CPU/none') AS wt, coalesce(wait_event, '-') AS we "
            "FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
        )
        try:
            with engine.connect() as connection:
                while not self._stop.wait(self.interval):
                    rows = connection.execute(query, {"d": self.db_name}).all()
                    connection.commit()
                    self.samples += 1
                    for state, wt, we in rows:
                        if state == "active" or (state or "").startswith("idle in transaction"):
                            key = f"{state}|{wt}:{we}"
                            self.counts[key] = self.counts.get(key, 0) + 1
        finally:
            engine.dispose()

    def start(self) -> PgActivitySampler:
        self.counts, self.samples = {}, 0
        self._stop.clear()
        import threading

        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "interval_s": self.interval,
            "mean_backends_per_sample": {
                k: round(v / n, 2) for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])
            },
        }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def webhook_body(instance: str, phone: str, text: str, message_id: str) -> dict[str, Any]:
    """A `messages.upsert` webhook shaped like Evolution 2.3's (the shape tests/e2e/conftest.py posts)."""
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


def create_agent_in_process(
    uow_factory: Any, instance: str, server_url: str, org_name: str = "Bench"
) -> tuple[uuid.UUID, uuid.UUID]:
    """(organization, agent): an organization, a one-step tree flow and an active agent on `instance`,
    made through the service's admin functions (for benchmarks that drive the container in process)."""
    from luminai_actors.services import admin

    org = admin.create_organization(uow_factory, {"name": org_name})
    steps = [{"id": "need", "question": "What are you looking for?"}]
    flow = admin.create_tree_flow(uow_factory, org, {"name": "Q", "steps": steps})
    agent = admin.create_agent(
        uow_factory,
        org,
        {
            "name": "Sofia",
            "prompt": "SDR",
            "treeFlowId": str(flow),
            "active": True,
            "whatsapp": {"instanceName": instance, "serverUrl": server_url, "apiKey": "k", "active": True},
        },
    )
    return org, agent


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return done.stdout.rstrip()


def working_tree_state() -> dict[str, Any]:
    """HEAD and the uncommitted changes to tracked files: what a results file says the working tree was."""
    return {
        "head": git("rev-parse", "HEAD"),
        "uncommitted_changes": git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


@contextlib.contextmanager
def revision_worktree(revision: str) -> Iterator[Path]:
    """`revision` checked out in a temporary git worktree that shares this checkout's `.venv` (`run.py` puts
    the worktree's own `src` first); removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="luminai-worktree-"))
    tree = scratch / "tree"
    git("worktree", "add", "--detach", str(tree), revision)
    try:
        (tree / ".venv").symlink_to(ROOT / ".venv")
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the harness
class Bench:
    """Owns everything one benchmark run starts; `close()` undoes all of it (idempotent)."""

    def __init__(self, name: str, time_limit: int = 300) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"luminai-bench-{name}-"))
        self.db_name = f"bench_{name}_{os.getpid()}_{secrets.token_hex(3)}"
        self.db_url: str | None = None
        self._databases: list[str] = []
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[str, Path] = {}
        self.cleanups: list[Callable[[], None]] = []
        self._closed = False
        self.quiet = wait_for_quiet_machine()
        _RUN_STATE["quiet"] = self.quiet
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
    def create_database(self, tree: Path = ROOT, tag: str = "") -> str:
        """A fresh database migrated by `tree`'s `run.py` (a git worktree of another revision, say); its URL.
        Without `tag` it is the run's database (`db_name`, `db_url`); each `tag` makes one more, named
        `<db_name>_<tag>`. `close()` drops them all."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"{self.db_name}_{tag}" if tag else self.db_name
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self._databases.append(name)
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        if not tag:
            self.db_url = url
        env = self.service_env({"LUMINAI_DATABASE_URL": url})
        subprocess.run(
            [PYTHON, str(tree / "run.py"), "migrate"], env=env, cwd=self.tmp, check=True, capture_output=True
        )
        return url

    def drop_database(self) -> None:
        """Drop every database `create_database` made."""
        if not self._databases:
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                while self._databases:
                    name = self._databases.pop()
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :n AND pid <> pg_backend_pid()"
                        ),
                        {"n": name},
                    )
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
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
            return sum(int(client.hlen(f"dramatiq:{q}.msgs")) for q in ("ai", "ai.DQ", "send", "send.DQ"))
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

    def analyze(self) -> None:
        """ANALYZE the database: the statistics autovacuum keeps in a running deployment (it would take up to
        a minute after a burst of inserts into a freshly migrated database, longer than a benchmark phase)."""
        from sqlalchemy import create_engine, text

        assert self.db_url is not None
        engine = create_engine(self.db_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("ANALYZE"))
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

    def spawn(
        self, label: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{label}.log"
        self.logs[label] = log
        with log.open("ab") as sink:
            process = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=sink, stderr=subprocess.STDOUT)
        self.processes.append((label, process))
        return process

    def start_serve(
        self, extra_env: dict[str, str], label: str = "serve"
    ) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        env = self.service_env(extra_env)
        process = self.spawn(label, [PYTHON, str(ROOT / "run.py"), "serve", "--port", str(port)], env)
        url = f"http://127.0.0.1:{port}"
        self.wait_ready(url, process, "/readyz")
        return url, process

    def start_bare(self) -> tuple[str, subprocess.Popen[bytes]]:
        """bench/bare_app.py (the baseline endpoint) on a free port, ready."""
        port = free_port()
        process = self.spawn("bare", [PYTHON, str(BENCH / "bare_app.py"), "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        self.wait_ready(url, process, "/readyz")
        return url, process

    def start_worker(
        self, extra_env: dict[str, str], threads: int = 4, label: str = "worker"
    ) -> subprocess.Popen[bytes]:
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
                        "webhookToken": WEBHOOK_TOKEN,
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


def wait_for_quiet_machine(max_wait: float = 240.0, threshold: float = 0.25) -> dict[str, Any]:
    """Other engineers run test suites on this 2-core box: wait (bounded) until processes that are not ours
    use less than `threshold` cores over two consecutive 2 s windows, and say what we found."""
    t0 = time.monotonic()
    loads: list[float] = []
    quiet_windows = 0
    while time.monotonic() - t0 < max_wait:
        load = foreign_load(2.0)
        loads.append(round(load, 2))
        quiet_windows = quiet_windows + 1 if load < threshold else 0
        if quiet_windows >= 2:
            break
    info = {
        "waited_s": round(time.monotonic() - t0, 1),
        "foreign_cores_busy_last_windows": loads[-3:],
        "quiet_at_start": quiet_windows >= 2,
    }
    print(f"machine check: {info}")
    return info


def unique_tag() -> str:
    return uuid.uuid4().hex[:6].upper()
