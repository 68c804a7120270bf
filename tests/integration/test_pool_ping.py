"""The pool pings a connection on checkout only after it sat idle (PING_AFTER_IDLE_SECONDS): a server-side
disconnect of idle connections costs nobody an error, and a connection used a moment ago is not pinged."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from luminai_actors.persistence import database

pytestmark = pytest.mark.integration


def _terminate_other_backends(url: str) -> int:
    engine = database.create_db_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        return len(rows)
    finally:
        engine.dispose()


def test_an_idle_connection_killed_by_the_server_is_replaced_on_checkout(
    clean_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout counts as idle
    pings: list[Any] = []
    real_ping = database._ping
    monkeypatch.setattr(database, "_ping", lambda conn: (pings.append(conn), real_ping(conn)))
    engine = database.create_db_engine(clean_pg, pool_size=2)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        assert _terminate_other_backends(clean_pg) >= 1  # our pooled connection is gone server-side
        with engine.connect() as connection:  # pinged, found dead, replaced: no error
            assert connection.execute(text("SELECT 2")).scalar() == 2
        assert len(pings) >= 2  # both checkouts were pinged; the second ping failed and was replaced
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(clean_pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    pings: list[Any] = []
    real_ping = database._ping
    monkeypatch.setattr(database, "_ping", lambda conn: (pings.append(conn), real_ping(conn)))
    engine = database.create_db_engine(clean_pg, pool_size=2)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 41"))
        with engine.connect() as connection:
            connection.execute(text("SELECT 42"))
        assert pings == []  # reused within the idle limit: no round trip spent on a ping
        # and a connection killed right after use then fails on its next use instead (the documented price)
        assert _terminate_other_backends(clean_pg) >= 1
        with pytest.raises(Exception), engine.connect() as connection:  # noqa: B017, PT011
            connection.execute(text("SELECT 43"))
        with engine.connect() as connection:  # the pool was invalidated: a fresh connection works
            assert connection.execute(text("SELECT 44")).scalar() == 44
    finally:
        engine.dispose()
