"""Per-organization LLM: organization.ai_base_url, ai_base_url_trusted, ai_model, ai_api_key

An organization may bring its own OpenAI-compatible server, model and key (`PATCH
/api/admin/organizations/{orgId}` with `"ai"`); all null means the deployment's LLM
(`luminai_actors.services.organization_llm`). ai_base_url_trusted records whether the operator set the URL:
one set by an organization key obeys the outbound address rule at every connection. The key is stored to be
sent to that server and is never returned by the API.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ai_base_url", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("ai_base_url_trusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("ai_model", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("ai_api_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_column("ai_api_key")
        batch_op.drop_column("ai_model")
        batch_op.drop_column("ai_base_url_trusted")
        batch_op.drop_column("ai_base_url")
