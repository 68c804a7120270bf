"""The audit log: every change made through the admin API or the console, recorded in the transaction that
makes it, so a change and its record are committed together or not at all.

`record` is the one way to write an entry; `masked` is the one rule for secrets (an Evolution API key, a
webhook secret, an organization key): an entry says whether a secret is set and whether it changed, never
its value.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from luminai_actors.domain.ids import uuid7
from luminai_actors.persistence.tables import AuditLog
from luminai_actors.persistence.uow import UnitOfWork

OPERATOR = "operator"
SECRET_FIELDS = frozenset(
    {"apiKey", "webhookToken", "key", "keyHash", "token", "whatsapp_api_key", "whatsapp_webhook_token"}
)


def actor_of(key_id: uuid.UUID | None) -> str:
    """Who made a change: the operator (no key), or the organization key by its id."""
    return OPERATOR if key_id is None else f"key:{key_id}"


def _fingerprint(value: str) -> str:
    # Eight hex digits of SHA-256: enough to tell "rotated" from "unchanged" in an entry, useless to guess.
    return "set:" + hashlib.sha256(value.encode()).hexdigest()[:8]


def masked(document: Any) -> Any:
    """`document` with every secret replaced by `set:<fingerprint>` (or None when unset), at any depth."""
    if isinstance(document, dict):
        return {
            key: (
                (_fingerprint(str(value)) if value else None)
                if key in SECRET_FIELDS and not isinstance(value, (dict, list, bool))
                else masked(value)
            )
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [masked(item) for item in document]
    return document


def record(
    uow: UnitOfWork,
    actor: str,
    organization_id: uuid.UUID,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add one entry to `uow`'s transaction (committed with the change it describes)."""
    uow.repo.add(
        AuditLog(
            id=uuid7(),
            organization_id=organization_id,
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=masked(before) if before is not None else None,
            after=masked(after) if after is not None else None,
        )
    )


def entries(session: Session, organization_id: uuid.UUID, limit: int, offset: int) -> list[AuditLog]:
    """The organization's entries, newest first."""
    query = (
        select(AuditLog)
        .where(AuditLog.organization_id == organization_id)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))
