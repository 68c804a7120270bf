"""Engines and migrations: builds the SQLAlchemy engine for PostgreSQL (psycopg 3) or SQLite, runs Alembic.

SQLite is the embedded default: every transaction starts with BEGIN IMMEDIATE so concurrent writers queue on
the busy timeout instead of failing with "database is locked" when a reader upgrades to a writer; WAL lets
readers proceed meanwhile. PostgreSQL gets a pool that pings a connection idle for more than
`PING_AFTER_IDLE_SECONDS` before handing it out, so a restarted server costs one failed checkout, not a
stream of errors; a connection used moments ago is handed out without that round trip (a busy worker checks
out three or four per reply). If the server went away in that moment, the first statement fails as a
disconnect, which invalidates the whole pool, and the caller's retry gets fresh connections.

The PostgreSQL pool is fixed (`pool_size`, no overflow): when more threads want a connection than it holds,
they wait for one (at most `pool_timeout`) instead of opening a connection that is closed again on return.
Under load that open/close churn started a PostgreSQL backend per message: bench/budget.py's known
conversations went from 493 to 733 webhooks/s (pool of 10, 32 concurrent conversations) with the overflow
removed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
PING_AFTER_IDLE_SECONDS = 1.0


def normalize_database_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as psycopg 3 URLs (the default driver would be psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(
    url: str, *, pool_size: int = 10, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS
) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )
    _ping_idle_connections(engine, ping_after_idle_seconds)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's pre-ping, but only for a connection that sat in the pool longer than `idle_seconds`."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")  # None: made just now (info lives with the connection)
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("idle connection failed its ping")


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
