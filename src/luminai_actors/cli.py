"""`python3 run.py <command>`: serve, worker, migrate, test. Every command has --help.

`serve` runs the HTTP service (and, with the memory broker, the Dramatiq worker in the same process).
`worker` runs Dramatiq workers for the Redis broker: N processes of M threads, optionally bound to queues.
`migrate` upgrades the database to the latest revision. `test` runs the linters, the type checker and the
whole test suite against the PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from luminai_actors.config import Settings
from luminai_actors.errors import ConfigError

log = logging.getLogger("luminai_actors")
ROOT = Path(__file__).resolve().parents[2]


#: First threshold of the cyclic garbage collector in `serve` and `worker` (Python's default is 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """For a long-running process, once its modules are loaded: everything alive now (modules, SQLAlchemy's
    metadata, Starlette's routes, phone metadata, ...) leaves the collector's generations for good
    (`gc.freeze`), and young objects are collected every 20,000 allocations instead of 700. Under the
    ingest load the collector was ~8 % of serve's CPU (perf), and its full passes over a heap holding
    hundreds of conversation actors put 100+ ms stalls into the p99 (bench/ingest.py: -c32 p99 143 -> 41 ms).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _configure_logging(settings: Settings) -> None:
    from luminai_actors.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _metrics_mode(settings: Settings) -> None:
    """Multiprocess metrics must be chosen before prometheus-client is first imported."""
    if settings.metrics_dir:
        Path(settings.metrics_dir).mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.metrics_dir


def _check_schema(settings: Settings) -> None:
    """Refuse to serve a database that was never migrated, with the command that fixes it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from luminai_actors.persistence.database import alembic_config, create_db_engine

    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    if current != head:
        raise ConfigError(
            f"database is at revision {current or 'none'}, the code needs {head}: "
            "run `python3 run.py migrate`"
        )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from luminai_actors.persistence.database import upgrade_database

    upgrade_database(settings.database_url)
    print(f"database migrated to the latest revision: {_safe_url(settings.database_url)}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from luminai_actors.persistence.database import upgrade_database
    from luminai_actors.web.app import create_app

    if settings.uses_sqlite:
        upgrade_database(settings.database_url)
    else:
        _check_schema(settings)
    mode = "memory broker, in-process worker" if settings.uses_memory_broker else "redis broker"
    app = create_app(settings)
    tune_gc()
    log.info(
        "serving on http://%s:%d (%s, database %s)",
        args.host,
        args.port,
        mode,
        _safe_url(settings.database_url),
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep our JSON handler; uvicorn's loggers propagate to it
    )
    return 0


def _run_worker_process(settings: Settings, threads: int, queues: list[str] | None) -> None:
    import dramatiq

    from luminai_actors import bootstrap

    _metrics_mode(settings)
    _configure_logging(settings)
    container = bootstrap.build(settings)
    bootstrap.boot_worker_process(container.broker)
    tune_gc()
    worker = dramatiq.Worker(
        container.broker,
        worker_threads=threads,
        worker_timeout=settings.worker_poll_ms,
        queues=set(queues) if queues else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    log.info("worker pid %d: %d threads on queues %s", os.getpid(), threads, queues or "all")
    stop.wait()
    log.info("worker pid %d stopping: finishing running tasks", os.getpid())
    worker.stop(timeout=30_000)
    container.close()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.uses_memory_broker:
        raise ConfigError(
            "LUMINAI_BROKER_URL is memory:// (the default): its worker runs inside `serve`. "
            "Set LUMINAI_BROKER_URL=redis://127.0.0.1:6379/0 to run separate workers."
        )
    _check_schema(settings)
    if args.processes == 1:
        _run_worker_process(settings, args.threads, args.queues)
        return 0
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_run_worker_process, args=(settings, args.threads, args.queues), name=f"worker-{i}"
        )
        for i in range(args.processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


def cmd_whatsapp(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from luminai_actors import bootstrap
    from luminai_actors.errors import EvolutionError, NotFound, ValidationError
    from luminai_actors.services import whatsapp_admin

    _check_schema(settings)
    container = bootstrap.build(settings)
    try:
        if args.action == "status":
            result = whatsapp_admin.test_connection(container.uow, container.evolution, args.agent)
        else:
            result = whatsapp_admin.configure_webhook(
                container.uow, container.evolution, args.agent, url=args.url, public_url=settings.public_url
            )
    except (NotFound, ValidationError, EvolutionError) as exc:
        print(f"run.py whatsapp {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        container.close()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from luminai_actors.errors import ValidationError
    from luminai_actors.persistence.database import create_db_engine, make_session_factory, upgrade_database
    from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
    from luminai_actors.services.importer import import_document, load_document

    if settings.uses_sqlite:
        upgrade_database(settings.database_url)
    else:
        _check_schema(settings)
    engine = create_db_engine(settings.database_url, pool_size=1)
    sessions = make_session_factory(engine)
    try:
        counts = import_document(lambda: SqlAlchemyUnitOfWork(sessions), load_document(Path(args.file)))
    except ValidationError as exc:
        print(f"run.py import: {exc.field}: {exc.message} (nothing was written)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"run.py import: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(json.dumps(counts, indent=2))
    return 0


def cmd_actors(args: argparse.Namespace, settings: Settings) -> int:
    import json

    import httpx

    if not settings.admin_token:
        raise ConfigError("set LUMINAI_ADMIN_TOKEN to the running service's admin token")
    try:
        response = httpx.get(
            args.url.rstrip("/") + "/ops/actors",
            headers={"Authorization": f"Bearer {settings.admin_token}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        print(f"run.py actors: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"run.py actors: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    data = response.json()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    conversations = data["conversations"]
    print(
        f"conversation actors: {conversations['live']} live (max {conversations['max']}), "
        f"idle stop after {conversations['idleSeconds']}s, {conversations['refusedTotal']} refused"
    )
    for actor in conversations["actors"]:
        print(
            f"  {actor['key']:<40} mailbox {actor['mailboxDepth']:>3}  in flight {actor['inFlight']:>3}  "
            f"handled {actor['handled']:>5}  idle {actor['idleSeconds']:>7.1f}s  "
            f"age {actor['ageSeconds']:>7.1f}s"
        )
    print("queues: " + ", ".join(f"{name} {depth}" for name, depth in data["queues"].items()))
    print("concurrency: " + ", ".join(f"{k}={v}" for k, v in data["concurrency"].items()))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from luminai_actors.demo import run_demo

    return run_demo(settings, use_openai=args.openai, out=sys.stdout)


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    python = sys.executable
    steps = [
        [python, "-m", "ruff", "check", "src", "tests", "migrations", "bench", "run.py"],
        [python, "-m", "ruff", "format", "--check", "src", "tests", "migrations", "bench", "run.py"],
        [python, "-m", "mypy", "--strict", "src"],
        [python, "-m", "pytest", *args.pytest_args],
    ]
    for step in steps:
        print("$ " + " ".join(step[2:] if step[0] == python else step), flush=True)
        code = subprocess.call(step, cwd=ROOT)
        if code != 0:
            print(f"run.py test: `{' '.join(step[2:])}` failed with exit code {code}", file=sys.stderr)
            return code
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser(
        "migrate", help="upgrade the database at LUMINAI_DATABASE_URL to the latest revision"
    )
    migrate.set_defaults(func=cmd_migrate)
    serve = sub.add_parser("serve", help="run the HTTP service (with the memory broker, also the worker)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run Dramatiq workers for the Redis broker")
    worker.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    worker.add_argument(
        "--queues", nargs="+", choices=["ai", "send"], help="queues to consume (default: all): ai, send"
    )
    worker.set_defaults(func=cmd_worker)
    whatsapp = sub.add_parser("whatsapp", help="an agent's WhatsApp channel: connection state, webhook setup")
    whatsapp.add_argument("action", choices=["status", "set-webhook"], help="status | set-webhook")
    whatsapp.add_argument("agent", help="the agent's id or its Evolution instance name")
    whatsapp.add_argument(
        "--url", help="webhook URL for set-webhook (default: $LUMINAI_PUBLIC_URL + webhook path)"
    )
    whatsapp.set_defaults(func=cmd_whatsapp)
    demo = sub.add_parser(
        "demo", help="see it work: a simulated Evolution API and a lead, all in one process"
    )
    demo.add_argument("--openai", action="store_true", help="use the OpenAI brain (needs OPENAI_API_KEY)")
    demo.set_defaults(func=cmd_demo)
    importer = sub.add_parser("import", help="create or update organizations, tree flows, agents from a file")
    importer.add_argument(
        "file", help="a JSON (.json) or YAML document; see `luminai_actors.services.importer`"
    )
    importer.set_defaults(func=cmd_import)
    actors = sub.add_parser("actors", help="live conversation actors, task queues and concurrency settings")
    actors.add_argument("--url", default="http://127.0.0.1:8000", help="the running service (default :8000)")
    actors.add_argument("--json", action="store_true", help="print the raw /ops/actors document")
    actors.set_defaults(func=cmd_actors)
    test = sub.add_parser(
        "test",
        help="lint, type-check and run the whole test suite (needs PostgreSQL, Redis)",
        usage="%(prog)s [-h] [pytest_args ...]",
        description="Any further arguments are passed to pytest, e.g. `run.py test -m 'not e2e' -x`.",
    )
    test.set_defaults(func=cmd_test)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "test":
        args.pytest_args = extra
    try:
        settings = Settings.from_env()
        _metrics_mode(settings)
        _configure_logging(settings)
        code: int = args.func(args, settings)
    except ConfigError as exc:
        print(f"run.py {args.command}: {exc}", file=sys.stderr)
        return 2
    return code
