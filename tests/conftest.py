"""Shared fixtures: a fresh PostgreSQL database per test session (migrated, dropped at the end) and Redis.

The services are the ones on 127.0.0.1 (override with LUMINAI_TEST_PG_URL / LUMINAI_TEST_REDIS_URL). A test
that needs one and cannot reach it fails with the command that starts it; it never skips.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from luminai_actors.persistence.database import normalize_database_url, upgrade_database
from luminai_actors.persistence.tables import Base

pytest_plugins = ["luminai_actors.testing.pytest_plugin"]

PG_URL = normalize_database_url(
    os.environ.get("LUMINAI_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
)
REDIS_URL = os.environ.get("LUMINAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TERMINATE_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()
"""
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database created for this session, at the latest migration."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"luminai_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} ({exc}); start it: {PG_START}")
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(TERMINATE_SQL),
                {"n": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    """The session database emptied of rows before the test."""
    engine = create_engine(pg_url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
    return pg_url


@pytest.fixture
def redis_url() -> str:
    """A Redis database emptied before the test (db 15 unless LUMINAI_TEST_REDIS_URL says otherwise)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it: {REDIS_START}")
    client.close()
    return REDIS_URL
