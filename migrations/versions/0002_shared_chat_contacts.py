"""contact.whatsapp_jid: groups, broadcast lists and newsletters as contacts keyed by their JID

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("whatsapp_jid", sa.String(length=128), nullable=True))
        batch_op.create_index(
            "idx_contact_jid_org",
            ["whatsapp_jid", "organization_id"],
            unique=True,
            postgresql_where=sa.text("whatsapp_jid IS NOT NULL"),
            sqlite_where=sa.text("whatsapp_jid IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("idx_contact_jid_org", postgresql_where=sa.text("whatsapp_jid IS NOT NULL"))
        batch_op.drop_column("whatsapp_jid")
