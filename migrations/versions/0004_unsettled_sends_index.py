"""talk_message: a partial index of the replies not settled yet (pending or sending)

The recovery sweep (every 30 s in every process), the replies an agent's reconnect hands back to the sender,
and the check a receipt of an unknown message makes ("is one of the agent's sends being recorded?") each
want only the unsettled replies; without this index they read every message of the table, or every message
of the agent.

On PostgreSQL the index is built CONCURRENTLY (outside a transaction), so inbound messages keep being stored
while it is built on a large table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "idx_talk_message_send_unsettled"
WHERE = "direction = 'outbound' AND send_status IN ('pending', 'sending')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX,
                "talk_message",
                ["agent_id", "created_at"],
                unique=False,
                postgresql_where=sa.text(WHERE),
                postgresql_concurrently=True,
            )
        return
    with op.batch_alter_table("talk_message", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["agent_id", "created_at"], unique=False, sqlite_where=sa.text(WHERE))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="talk_message", postgresql_concurrently=True)
        return
    with op.batch_alter_table("talk_message", schema=None) as batch_op:
        batch_op.drop_index(INDEX, sqlite_where=sa.text(WHERE))
