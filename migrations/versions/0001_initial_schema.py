"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 22:22:23.089547
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
    )
    op.create_table(
        "company",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_company_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_company")),
    )
    with op.batch_alter_table("company", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_company_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "talk_type",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_talk_type_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_talk_type")),
        sa.UniqueConstraint("organization_id", "name", name=op.f("uq_talk_type_organization_id_name")),
    )
    with op.batch_alter_table("talk_type", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_talk_type_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "tree_flow",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_tree_flow_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tree_flow")),
    )
    with op.batch_alter_table("tree_flow", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tree_flow_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=180), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_user_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
    )
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "agent",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("tree_flow_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("whatsapp_instance_name", sa.String(length=255), nullable=True),
        sa.Column("whatsapp_phone", sa.String(length=25), nullable=True),
        sa.Column("whatsapp_server_url", sa.String(length=500), nullable=True),
        sa.Column("whatsapp_api_key", sa.Text(), nullable=True),
        sa.Column("whatsapp_active", sa.Boolean(), nullable=False),
        sa.Column("whatsapp_status", sa.String(length=50), nullable=True),
        sa.Column("whatsapp_webhook_token", sa.String(length=255), nullable=True),
        sa.Column("whatsapp_last_connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "whatsapp_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_agent_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tree_flow_id"], ["tree_flow.id"], name=op.f("fk_agent_tree_flow_id_tree_flow")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_agent_user_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent")),
    )
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.create_index(
            "idx_agent_whatsapp_active",
            ["whatsapp_active", "whatsapp_status"],
            unique=False,
            postgresql_where=sa.text("whatsapp_active = true"),
            sqlite_where=sa.text("whatsapp_active = 1"),
        )
        batch_op.create_index(
            "idx_agent_whatsapp_instance",
            ["whatsapp_instance_name"],
            unique=True,
            postgresql_where=sa.text("whatsapp_instance_name IS NOT NULL"),
            sqlite_where=sa.text("whatsapp_instance_name IS NOT NULL"),
        )
        batch_op.create_index(batch_op.f("ix_agent_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "contact",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=True),
        sa.Column("last_name", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=180), nullable=True),
        sa.Column("phone", sa.String(length=25), nullable=True),
        sa.Column("mobile_phone", sa.String(length=25), nullable=True),
        sa.Column("whatsapp_lid", sa.String(length=64), nullable=True),
        sa.Column("lead_source", sa.String(length=100), nullable=True),
        sa.Column("origin", sa.String(length=255), nullable=True),
        sa.Column("last_contact_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["company.id"], name=op.f("fk_contact_company_id_company")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_contact_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact")),
    )
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(
            "idx_contact_lid_org",
            ["whatsapp_lid", "organization_id"],
            unique=True,
            postgresql_where=sa.text("whatsapp_lid IS NOT NULL"),
            sqlite_where=sa.text("whatsapp_lid IS NOT NULL"),
        )
        batch_op.create_index(
            "idx_contact_mobile_org",
            ["mobile_phone", "organization_id"],
            unique=True,
            postgresql_where=sa.text("mobile_phone IS NOT NULL"),
            sqlite_where=sa.text("mobile_phone IS NOT NULL"),
        )
        batch_op.create_index(
            "idx_contact_phone_org",
            ["phone", "organization_id"],
            unique=True,
            postgresql_where=sa.text("phone IS NOT NULL"),
            sqlite_where=sa.text("phone IS NOT NULL"),
        )
        batch_op.create_index(batch_op.f("ix_contact_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "talk",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=True),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("talk_type_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("needs_human", sa.Boolean(), nullable=False),
        sa.Column("whatsapp_remote_jid", sa.String(length=128), nullable=True),
        sa.Column(
            "talk_flow",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("ai_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("date_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("date_last_message", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_talk_agent_id_agent")),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], name=op.f("fk_talk_contact_id_contact")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_talk_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["owner_id"], ["user.id"], name=op.f("fk_talk_owner_id_user")),
        sa.ForeignKeyConstraint(
            ["talk_type_id"], ["talk_type.id"], name=op.f("fk_talk_talk_type_id_talk_type")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_talk")),
    )
    with op.batch_alter_table("talk", schema=None) as batch_op:
        batch_op.create_index(
            "idx_talk_open_per_contact_agent",
            ["contact_id", "agent_id", "channel"],
            unique=True,
            postgresql_where=sa.text("status = 0 AND archived = false AND closed_at IS NULL"),
            sqlite_where=sa.text("status = 0 AND archived = 0 AND closed_at IS NULL"),
        )
        batch_op.create_index(batch_op.f("ix_talk_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_talk_organization_id"), ["organization_id"], unique=False)

    op.create_table(
        "talk_agent",
        sa.Column("talk_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agent.id"], name=op.f("fk_talk_agent_agent_id_agent"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["talk_id"], ["talk.id"], name=op.f("fk_talk_agent_talk_id_talk"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("talk_id", "agent_id", name=op.f("pk_talk_agent")),
    )
    op.create_table(
        "talk_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("talk_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=True),
        sa.Column("from_contact_id", sa.Uuid(), nullable=True),
        sa.Column("from_agent_id", sa.Uuid(), nullable=True),
        sa.Column("direction", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=50), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("message_type", sa.String(length=50), nullable=False),
        sa.Column("whatsapp_message_id", sa.String(length=128), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("send_status", sa.String(length=20), nullable=True),
        sa.Column("send_attempts", sa.Integer(), nullable=False),
        sa.Column("send_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_talk_message_agent_id_agent")),
        sa.ForeignKeyConstraint(
            ["from_agent_id"], ["agent.id"], name=op.f("fk_talk_message_from_agent_id_agent")
        ),
        sa.ForeignKeyConstraint(
            ["from_contact_id"], ["contact.id"], name=op.f("fk_talk_message_from_contact_id_contact")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_talk_message_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["talk_id"], ["talk.id"], name=op.f("fk_talk_message_talk_id_talk"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_talk_message")),
        sa.UniqueConstraint(
            "agent_id", "whatsapp_message_id", name=op.f("uq_talk_message_agent_id_whatsapp_message_id")
        ),
    )
    with op.batch_alter_table("talk_message", schema=None) as batch_op:
        batch_op.create_index(
            "idx_talk_message_ai_pending",
            ["talk_id"],
            unique=False,
            postgresql_where=sa.text("direction = 'inbound' AND processed_at IS NULL"),
            sqlite_where=sa.text("direction = 'inbound' AND processed_at IS NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_talk_message_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index("ix_talk_message_talk_created", ["talk_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("talk_message", schema=None) as batch_op:
        batch_op.drop_index("ix_talk_message_talk_created")
        batch_op.drop_index(batch_op.f("ix_talk_message_organization_id"))
        batch_op.drop_index(
            "idx_talk_message_ai_pending",
            postgresql_where=sa.text("direction = 'inbound' AND processed_at IS NULL"),
            sqlite_where=sa.text("direction = 'inbound' AND processed_at IS NULL"),
        )

    op.drop_table("talk_message")
    op.drop_table("talk_agent")
    with op.batch_alter_table("talk", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_talk_organization_id"))
        batch_op.drop_index(batch_op.f("ix_talk_contact_id"))
        batch_op.drop_index(
            "idx_talk_open_per_contact_agent",
            postgresql_where=sa.text("status = 0 AND archived = false AND closed_at IS NULL"),
            sqlite_where=sa.text("status = 0 AND archived = 0 AND closed_at IS NULL"),
        )

    op.drop_table("talk")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_organization_id"))
        batch_op.drop_index(
            "idx_contact_phone_org",
            postgresql_where=sa.text("phone IS NOT NULL"),
            sqlite_where=sa.text("phone IS NOT NULL"),
        )
        batch_op.drop_index(
            "idx_contact_mobile_org",
            postgresql_where=sa.text("mobile_phone IS NOT NULL"),
            sqlite_where=sa.text("mobile_phone IS NOT NULL"),
        )
        batch_op.drop_index(
            "idx_contact_lid_org",
            postgresql_where=sa.text("whatsapp_lid IS NOT NULL"),
            sqlite_where=sa.text("whatsapp_lid IS NOT NULL"),
        )

    op.drop_table("contact")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_organization_id"))
        batch_op.drop_index(
            "idx_agent_whatsapp_instance",
            postgresql_where=sa.text("whatsapp_instance_name IS NOT NULL"),
            sqlite_where=sa.text("whatsapp_instance_name IS NOT NULL"),
        )
        batch_op.drop_index(
            "idx_agent_whatsapp_active",
            postgresql_where=sa.text("whatsapp_active = true"),
            sqlite_where=sa.text("whatsapp_active = 1"),
        )

    op.drop_table("agent")
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_organization_id"))

    op.drop_table("user")
    with op.batch_alter_table("tree_flow", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tree_flow_organization_id"))

    op.drop_table("tree_flow")
    with op.batch_alter_table("talk_type", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_talk_type_organization_id"))

    op.drop_table("talk_type")
    with op.batch_alter_table("company", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_company_organization_id"))

    op.drop_table("company")
    op.drop_table("organization")
