"""organization_api_key: per-organization keys for the admin API (only their SHA-256 is stored)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 23:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization_api_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_organization_api_key_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_organization_api_key_key_hash")),
    )
    with op.batch_alter_table("organization_api_key", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organization_api_key_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("organization_api_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organization_api_key_organization_id"))
    op.drop_table("organization_api_key")
