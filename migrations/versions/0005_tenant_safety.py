"""Tenant safety: agent.whatsapp_server_url_trusted and organization_api_key.last_used_at

agent.whatsapp_server_url_trusted: whether the operator set the agent's Evolution server URL.

An organization key may only point an agent at public unicast addresses (the outbound address rule,
`luminai_actors.outbound_address`); the operator's token may point it anywhere. The flag records which of the
two set the URL, so every later connection (sendText, test-connection, set-webhook, QR pairing) applies the
rule or not. Rows that exist before this revision were set up by either: they start untrusted, and the
operator re-saves them or lists their hosts in LUMINAI_EVOLUTION_ALLOWED_HOSTS.

organization_api_key.last_used_at: when the key last authenticated (at most a minute stale), so that an
operator can tell a forgotten key from one in use before revoking it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("whatsapp_server_url_trusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("organization_api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organization_api_key", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("whatsapp_server_url_trusted")
