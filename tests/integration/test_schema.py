"""The migrated schema on PostgreSQL (and SQLite): the seed's tables, columns and indexes, and no drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from luminai_actors.persistence.database import upgrade_database
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
    assert {"idx_agent_whatsapp_instance", "idx_contact_phone_org", "idx_contact_mobile_org"} <= indexes
