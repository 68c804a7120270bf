"""`persistence.direct`: hot-path statements run on psycopg's cursor past SQLAlchemy's execution machinery
must behave as `Connection.execute` does: the same rows and values, the same exceptions, the same
transaction, the same event listeners; and the hot paths must really take that way (no silent fallback)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    exc,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Uuid
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.persistence import direct
from luminai_actors.persistence.database import create_db_engine
from luminai_actors.persistence.tables import Base, Organization, TalkMessage, UTCDateTime
from luminai_actors.testing import FakeEvolutionApi
from tests.integration.test_pipeline_inprocess import WEBHOOK, wait_for
from tests.integration.test_webhook_events import add_agent, upsert

pytestmark = pytest.mark.integration

_org = cast(Table, Organization.__table__)
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def engine(clean_pg: str) -> Iterator[Engine]:
    engine = create_db_engine(clean_pg)
    yield engine
    engine.dispose()


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements that went through Connection.execute instead of the cursor."""
    seen: list[str] = []
    original = direct._through_sqlalchemy

    def record(connection: Any, statement: Any, params: Any) -> Any:
        seen.append(str(statement).split("\n")[0])
        return original(connection, statement, params)

    monkeypatch.setattr(direct, "_through_sqlalchemy", record)
    return seen


def _new_org(connection: Any, name: str) -> tuple[Any, ...]:
    # id, created_at and updated_at come from the columns' Python-side defaults (uuid7, utcnow)
    return direct.scalar_one(connection, insert(_org).returning(_org.c.id), {"name": name}), name


def test_rows_and_values_are_those_sqlalchemy_returns(engine: Engine, fallbacks: list[str]) -> None:
    values = select(
        bindparam("doc", type_=JSONB).label("doc"),
        bindparam("at", type_=UTCDateTime()).label("at"),
        bindparam("ids", type_=ARRAY(Uuid)).label("ids"),
        bindparam("word", type_=String).label("word"),
    )
    params = {"doc": {"a": [1, "é", None], "b": {"c": True}}, "at": T0, "ids": [uuid.uuid4()], "word": "x"}
    with engine.connect() as connection:
        org_id, _ = _new_org(connection, "Acme")
        by_id = select(_org.c.id, _org.c.name, _org.c.created_at, _org.c.updated_at).where(
            _org.c.id == bindparam("id")
        )
        ours = direct.rows(connection, by_id, {"id": org_id})
        theirs = [tuple(row) for row in connection.execute(by_id, {"id": org_id})]
        assert ours == theirs
        assert len(ours) == 1
        assert isinstance(ours[0][0], uuid.UUID)
        assert ours[0][2].tzinfo is not None

        assert direct.rows(connection, values, params) == [tuple(connection.execute(values, params).one())]
        assert direct.first(connection, values, params) == (
            params["doc"],
            T0,
            params["ids"],
            "x",
        )
        assert direct.first(connection, by_id, {"id": uuid.uuid4()}) is None
    assert fallbacks == []


def test_python_side_defaults_are_evaluated_per_execution(engine: Engine, fallbacks: list[str]) -> None:
    rename = (
        update(_org)
        .where(_org.c.id == bindparam("the_id"))
        .values(name=bindparam("new_name"))
        .returning(_org.c.created_at, _org.c.updated_at)
    )
    with engine.connect() as connection:
        first, _ = _new_org(connection, "A")
        second, _ = _new_org(connection, "B")
        assert first != second  # uuid7 per row, not once per compiled statement
        before = datetime.now(UTC)
        [(created, updated)] = direct.rows(connection, rename, {"the_id": first, "new_name": "A2"})
        assert updated >= before > created - timedelta(seconds=1)  # onupdate=utcnow, evaluated now
        name = connection.execute(select(_org.c.name).where(_org.c.id == first)).scalar_one()
        assert name == "A2"
    assert fallbacks == []


def test_a_scalar_column_default_is_inserted_as_sqlalchemy_inserts_it(
    engine: Engine, fallbacks: list[str]
) -> None:
    counted = Table(
        "direct_scalar_default",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("attempts", Integer, nullable=False, default=7),
    )
    add = insert(counted).returning(counted.c.attempts)
    with engine.connect() as connection:
        counted.create(connection)
        try:
            assert direct.rows(connection, add, {"id": 1}) == [(7,)]  # the default, given no value
            assert direct.rows(connection, add, {"id": 2, "attempts": 3}) == [(3,)]  # a value given wins
            assert connection.execute(add, {"id": 3}).all() == [(7,)]  # as SQLAlchemy does it
        finally:
            connection.rollback()
    assert fallbacks == []


def test_the_connections_transaction_begins_and_ends_as_with_execute(engine: Engine) -> None:
    count = select(text("count(*)")).select_from(_org)
    with engine.connect() as connection:
        assert not connection.in_transaction()
        _new_org(connection, "kept")
        assert connection.in_transaction()  # autobegin, as Connection.execute does
        connection.commit()
        _new_org(connection, "dropped")
        connection.rollback()
    with engine.connect() as other:
        assert other.execute(count).scalar_one() == 1
        assert other.execute(select(_org.c.name)).scalar_one() == "kept"


def test_a_driver_error_is_sqlalchemys_exception(engine: Engine) -> None:
    with engine.connect() as connection:
        org_id, _ = _new_org(connection, "A")
        again = insert(_org).values(id=bindparam("the_id"))
        with pytest.raises(exc.IntegrityError):
            direct.rows(connection, again, {"the_id": org_id, "name": "B"})


def test_a_naive_datetime_is_refused_by_the_columns_bind_processor(engine: Engine) -> None:
    stamp = select(bindparam("at", type_=UTCDateTime()))
    with engine.connect() as connection, pytest.raises(ValueError, match="naive datetime"):
        direct.rows(connection, stamp, {"at": datetime(2030, 1, 1)})


def test_a_lost_connection_is_invalidated_and_the_pool_recovers(engine: Engine, clean_pg: str) -> None:
    admin = create_engine(clean_pg, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            connection.rollback()
            with admin.connect() as killer:
                killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(exc.DBAPIError) as raised:
                direct.rows(connection, select(bindparam("x", type_=String)), {"x": "y"})
            assert raised.value.connection_invalidated
        with engine.connect() as fresh:
            assert direct.first(fresh, select(bindparam("x", type_=String)), {"x": "y"}) == ("y",)
    finally:
        admin.dispose()


def test_cursor_listeners_see_each_statement(engine: Engine) -> None:
    seen: list[tuple[str, str]] = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *a: seen.append(("before", sql)))
    event.listen(engine, "after_cursor_execute", lambda c, cur, sql, *a: seen.append(("after", sql)))
    with engine.connect() as connection:
        direct.rows(connection, select(bindparam("x", type_=String).label("marker")), {"x": "y"})
    assert [(when, "marker" in sql) for when, sql in seen] == [("before", True), ("after", True)]


def test_what_the_cursor_cannot_run_goes_through_sqlalchemy(
    engine: Engine, fallbacks: list[str], tmp_path: Any
) -> None:
    names = (
        select(_org.c.name).where(_org.c.name.in_(bindparam("names", expanding=True))).order_by(_org.c.name)
    )
    with engine.connect() as connection:
        _new_org(connection, "A")
        _new_org(connection, "B")
        assert direct.rows(connection, names, {"names": ["A", "B", "C"]}) == [("A",), ("B",)]
    assert len(fallbacks) == 1  # the expanding IN list

    sqlite = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    Base.metadata.create_all(sqlite, tables=[_org])
    with sqlite.connect() as connection:
        org_id, _ = _new_org(connection, "S")
        assert direct.rows(
            connection, select(_org.c.name).where(_org.c.id == bindparam("i")), {"i": org_id}
        ) == [("S",)]
    sqlite.dispose()
    assert len(fallbacks) == 3


def test_a_new_leads_way_to_its_reply_runs_every_statement_on_the_cursor(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    fallbacks: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []
    original = direct.rows

    def counted(connection: Any, statement: Any, params: Any) -> Any:
        ran.append(type(statement).__name__)
        return original(connection, statement, params)

    monkeypatch.setattr(direct, "rows", counted)
    container, client = make_app()
    add_agent(client, evolution)
    ran.clear()
    assert client.post(WEBHOOK, json=upsert()).status_code == 200
    evolution.wait_for_requests(1, path_prefix="/message/sendText")

    def reply_status() -> str:
        with container.engine.connect() as connection:
            return str(
                connection.execute(
                    select(TalkMessage.send_status).where(TalkMessage.direction == "outbound")
                ).scalar_one()
            )

    wait_for(lambda: reply_status() == "sent")
    # the lead path's three (agent, lookup, store), the turn's claim and finish, the send's claim and record
    assert len(ran) >= 7, ran
    assert fallbacks == []
