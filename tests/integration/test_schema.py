"""The migrated schema on PostgreSQL (and SQLite): the seed's tables, columns and indexes, and no drift."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text

from luminai_actors.persistence.database import create_db_engine, make_session_factory, upgrade_database
from luminai_actors.persistence.repository import SqlAlchemyRepository
from luminai_actors.persistence.tables import Base

pytestmark = pytest.mark.integration

SEED_COLUMNS = {
    "agent": {
        "id",
        "organization_id",
        "tree_flow_id",
        "name",
        "prompt",
        "active",
        "whatsapp_instance_name",
        "whatsapp_phone",
        "whatsapp_server_url",
        "whatsapp_api_key",
        "whatsapp_active",
        "whatsapp_status",
        "whatsapp_webhook_token",
        "whatsapp_last_connected_at",
        "whatsapp_metadata",
    },
    "contact": {
        "id",
        "organization_id",
        "company_id",
        "name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "mobile_phone",
        "lead_source",
        "origin",
    },
    "talk": {"id", "organization_id", "contact_id", "channel", "status", "talk_flow", "paused", "subject"},
    "talk_message": {
        "id",
        "talk_id",
        "from_contact_id",
        "from_agent_id",
        "direction",
        "channel",
        "body",
        "metadata",
        "sent_at",
        "delivered_at",
        "message_type",
    },
    "talk_agent": {"talk_id", "agent_id"},
    "organization": {"id", "name"},
    "user": {"id", "organization_id"},
    "company": {"id", "organization_id", "name"},
    "tree_flow": {"id", "organization_id", "name"},
    "talk_type": {"id", "organization_id", "name"},
}


def test_every_seed_table_and_column_exists(pg_url: str) -> None:
    engine = create_engine(pg_url)
    inspector = inspect(engine)
    for table, columns in SEED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        assert columns <= present, f"{table} lacks {columns - present}"
    email = next(c for c in inspector.get_columns("contact") if c["name"] == "email")
    assert email["nullable"] is True
    channel = {c["name"]: c for c in inspector.get_columns("talk")}["channel"]
    assert str(channel["type"]).upper() == "INTEGER"
    engine.dispose()


def test_seed_indexes_and_the_message_id_constraint(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        )
        defs = {row[0]: row[1] for row in rows}
    engine.dispose()
    assert "UNIQUE" in defs["idx_agent_whatsapp_instance"]
    assert "(whatsapp_instance_name)" in defs["idx_agent_whatsapp_instance"]
    assert "IS NOT NULL" in defs["idx_agent_whatsapp_instance"]
    assert "UNIQUE" not in defs["idx_agent_whatsapp_active"]
    assert "(whatsapp_active, whatsapp_status)" in defs["idx_agent_whatsapp_active"]
    assert "whatsapp_active = true" in defs["idx_agent_whatsapp_active"]
    assert "UNIQUE" in defs["idx_contact_phone_org"]
    assert "(phone, organization_id)" in defs["idx_contact_phone_org"]
    assert "UNIQUE" in defs["idx_contact_mobile_org"]
    assert "(mobile_phone, organization_id)" in defs["idx_contact_mobile_org"]
    constraint = defs["uq_talk_message_agent_id_whatsapp_message_id"]
    assert "UNIQUE" in constraint
    assert "(agent_id, whatsapp_message_id)" in constraint


def test_the_reads_of_unsettled_sends_use_their_partial_index_even_as_generic_plans(pg_url: str) -> None:
    """The recovery sweep, an agent's waiting replies and the in-flight check read only unsettled replies.

    Told to avoid sequential scans (on a table this small PostgreSQL would scan anyway) and to plan them as a
    prepared statement run often would be (a generic plan, no parameter values), PostgreSQL must still
    answer each from `idx_talk_message_send_unsettled`: their WHERE spells out the index's predicate."""
    engine = create_db_engine(pg_url)
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM talk_message" in statement:
            sent.append((statement, parameters))

    now = datetime.now(UTC)
    with make_session_factory(engine)() as session:
        repo = SqlAlchemyRepository(session)
        repo.messages_awaiting_send(now, now, 10)
        repo.unsettled_outbound_of_agent(uuid.uuid4(), 10)
        repo.sends_in_flight(uuid.uuid4())
    event.remove(engine, "before_cursor_execute", record)
    assert len(sent) == 3
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        for statement, parameters in sent:
            connection.exec_driver_sql("PREPARE unsettled_read AS " + _numbered(statement, parameters))
            plan = "\n".join(
                row[0]
                for row in connection.exec_driver_sql(
                    "EXPLAIN EXECUTE unsettled_read (" + ", ".join(["NULL"] * len(parameters)) + ")"
                )
            )
            connection.exec_driver_sql("DEALLOCATE unsettled_read")
            assert "idx_talk_message_send_unsettled" in plan, f"{statement}\n{plan}"
    engine.dispose()


def _numbered(statement: str, parameters: dict[str, Any]) -> str:
    """psycopg's `%(name)s` placeholders as PREPARE's `$1, $2, …`, for a generic plan."""
    for number, name in enumerate(parameters, start=1):
        statement = statement.replace(f"%({name})s", f"${number}")
    return statement


def test_models_and_migrations_do_not_drift_on_postgresql(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_the_same_history_runs_on_sqlite_without_drift(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade_database(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        indexes = {
            row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))
        }
    engine.dispose()
    assert diff == []
    assert {
        "idx_agent_whatsapp_instance",
        "idx_contact_phone_org",
        "idx_contact_mobile_org",
        "idx_talk_message_send_unsettled",
    } <= indexes
