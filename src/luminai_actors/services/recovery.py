"""find_stalled_work: AI turns and sends that should have run but did not (lost enqueue, crash, restart).

Messages are durable in the database before any task is enqueued, so a lost task (Redis down at enqueue
time, an in-memory broker restarted, a worker killed) is found here by its state and enqueued again. The
actors are idempotent, so finding something that is merely slow costs one no-op task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from luminai_actors.persistence.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class StalledWork:
    talks_awaiting_ai: list[uuid.UUID]
    messages_awaiting_send: list[uuid.UUID]


def find_stalled_work(
    uow_factory: UnitOfWorkFactory,
    *,
    older_than_seconds: float,
    now: datetime | None = None,
    limit: int = 500,
) -> StalledWork:
    at = now or datetime.now(UTC)
    before = at - timedelta(seconds=older_than_seconds)
    with uow_factory() as uow:
        return StalledWork(
            uow.repo.talks_awaiting_ai(before, at, limit),
            uow.repo.messages_awaiting_send(before, at, limit),
        )


def delivery_counts(uow_factory: UnitOfWorkFactory) -> dict[str, int]:
    """Outbound replies by delivery state, from the database, so every worker process is counted:
    `retrying` have failed at least once and wait for their next attempt."""
    from sqlalchemy import case, func, select

    from luminai_actors.persistence.tables import SEND_PENDING, TalkMessage
    from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork

    with uow_factory() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        assert uow.session is not None
        state = case(
            ((TalkMessage.send_status == SEND_PENDING) & (TalkMessage.send_attempts > 0), "retrying"),
            else_=TalkMessage.send_status,
        )
        rows = uow.session.execute(
            select(state, func.count())
            .where(TalkMessage.direction == "outbound", TalkMessage.send_status.is_not(None))
            .group_by(state)
        ).all()
    counts = {"pending": 0, "retrying": 0, "sending": 0, "sent": 0, "failed": 0}
    counts.update({str(name): int(total) for name, total in rows})
    return counts
