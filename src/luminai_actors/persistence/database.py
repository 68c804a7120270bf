"""Engines and migrations: builds the SQLAlchemy engine for PostgreSQL (psycopg 3) or SQLite, runs Alembic.

SQLite is the embedded default: every transaction starts with BEGIN IMMEDIATE so concurrent writers queue on
the busy timeout instead of failing with "database is locked" when a reader upgrades to a writer; WAL lets
readers proceed meanwhile. PostgreSQL gets a pre-pinged pool so a restarted server costs one failed checkout,
not a stream of errors (pinged on checkout once idle for a second, see `_ping_idle_connections`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def normalize_database_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as psycopg 3 URLs (the default driver would be psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )
    _ping_idle_connections(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """A pre-ping on checkout, but only for a connection idle in the pool for PING_AFTER_IDLE_SECONDS or more.

    A connection used a moment ago is almost surely alive, and its ping is a round trip on every
    transaction's critical path (the AI turn and the send each check out twice). One that sat idle is pinged
    and, if the server went away (a restart), replaced before anyone uses it; a failure on a connection used
    within the last second surfaces as DatabaseUnavailable (503 / a retried task), and SQLAlchemy then
    invalidates the pool's older connections.
    """

    idle_seconds = PING_AFTER_IDLE_SECONDS

    @event.listens_for(engine.pool, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["luminai_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["luminai_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("luminai_idle_since")
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            _ping(dbapi_connection)
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def _ping(dbapi_connection: Any) -> None:
    """`SELECT 1` in autocommit, so the ping leaves no transaction open; the caller's mode is restored."""
    autocommit = dbapi_connection.autocommit
    try:
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # a dead connection may refuse even this; it is being discarded anyway
        with contextlib.suppress(Exception):
            dbapi_connection.autocommit = autocommit


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE below is the only BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`; creates the SQLite file's folder when needed."""
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
