"""Admin lifecycle: inactive organizations, tree-flow versions, the audit log, the suppression list

organization.active: an inactive organization's webhooks are answered `200 ignored: organization inactive`
and nothing is sent for it.

tree_flow.version + tree_flow_version: every saved definition of a TreeFlow is kept under its version
number; a talk records the version it started with (`talk.talk_flow.treeFlowVersion`) and keeps it when the
flow is edited. Existing flows become version 1.

audit_log: every change made through the admin API or the console: who (`operator` or `key:<id>`), what,
when, and the before/after documents with secrets masked.

suppressed_number: keyed hashes (HMAC-SHA256) of the numbers of erased contacts who had opted out, so the
agent never writes to them again; service_secret keeps the generated hashing key when
LUMINAI_SUPPRESSION_KEY is not set.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("tree_flow", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "tree_flow_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tree_flow_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tree_flow_id"],
            ["tree_flow.id"],
            name=op.f("fk_tree_flow_version_tree_flow_id_tree_flow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tree_flow_version")),
        sa.UniqueConstraint(
            "tree_flow_id", "version", name=op.f("uq_tree_flow_version_tree_flow_id_version")
        ),
    )
    op.execute(
        "INSERT INTO tree_flow_version (id, tree_flow_id, version, definition, created_at) "
        "SELECT id, id, 1, definition, created_at FROM tree_flow"
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("entity_type", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=True),
        sa.Column("before", JSON, nullable=True),
        sa.Column("after", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_audit_log_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("idx_audit_log_org_created", "audit_log", ["organization_id", "created_at"])
    op.create_table(
        "suppressed_number",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("number_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_suppressed_number_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressed_number")),
        sa.UniqueConstraint(
            "organization_id", "number_hash", name=op.f("uq_suppressed_number_organization_id_number_hash")
        ),
    )
    op.create_table(
        "service_secret",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_secret")),
    )


def downgrade() -> None:
    op.drop_table("service_secret")
    op.drop_table("suppressed_number")
    op.drop_index("idx_audit_log_org_created", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("tree_flow_version")
    with op.batch_alter_table("tree_flow", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_column("active")
