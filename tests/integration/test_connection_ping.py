"""The PostgreSQL pool pings only connections that sat idle: a connection used moments ago is handed out as
is, one idle longer is pinged and replaced when the server dropped it, and a connection dropped in the
moment between two uses costs its caller one failed statement, after which the pool hands out fresh ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, exc, text

from luminai_actors.persistence.database import create_db_engine

pytestmark = pytest.mark.integration

IDLE = 0.3  # seconds a connection may sit in the pool before its next checkout pings it


@pytest.fixture
def engine(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[Any]]]:
    engine = create_db_engine(pg_url, pool_size=1, ping_after_idle_seconds=IDLE)
    pings: list[Any] = []
    real_ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return bool(real_ping(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    yield engine, pings
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pg_url: str, pid: int) -> None:
    other = create_db_engine(pg_url, pool_size=1)
    with other.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    other.dispose()
    time.sleep(0.05)  # the backend's exit reaches the client socket


def test_a_connection_used_moments_ago_is_not_pinged(engine: tuple[Engine, list[Any]]) -> None:
    db, pings = engine
    first = backend_pid(db)  # a new connection: nothing to ping
    second = backend_pid(db)
    third = backend_pid(db)

    assert first == second == third  # the same pooled connection each time
    assert pings == []


def test_an_idle_connection_is_pinged_and_replaced_when_the_server_dropped_it(
    engine: tuple[Engine, list[Any]], pg_url: str
) -> None:
    db, pings = engine
    old = backend_pid(db)
    terminate(pg_url, old)
    time.sleep(IDLE + 0.1)

    new = backend_pid(db)  # no error reaches the caller

    assert len(pings) == 1
    assert new != old


def test_a_connection_dropped_between_two_quick_uses_fails_once_then_the_pool_recovers(
    engine: tuple[Engine, list[Any]], pg_url: str
) -> None:
    db, pings = engine
    old = backend_pid(db)
    terminate(pg_url, old)

    with pytest.raises(exc.OperationalError) as failure:
        backend_pid(db)
    assert failure.value.connection_invalidated  # a disconnect: the pool drops its connections

    assert backend_pid(db) != old
    assert pings == []
