"""Per-organization API keys: made once (the plaintext is shown only then), stored as SHA-256, resolved to
the organization they belong to. The operator's LUMINAI_ADMIN_TOKEN is not a key: it sees everything.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from luminai_actors.domain.ids import uuid7
from luminai_actors.errors import NotFound, ValidationError
from luminai_actors.persistence.tables import Organization, OrganizationApiKey
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork, UnitOfWorkFactory

KEY_PREFIX = "lmk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls the admin API: the operator (every organization) or one organization's key."""

    organization_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        return self.organization_id is None

    def sees(self, organization_id: uuid.UUID) -> bool:
        return self.organization_id is None or self.organization_id == organization_id


OPERATOR = Principal(None)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    uow_factory: UnitOfWorkFactory, organization_id: uuid.UUID, name: str | None
) -> dict[str, str]:
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise ValidationError("name", "must be a string of at most 255 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with uow_factory() as uow:
        if uow.repo.get(Organization, organization_id) is None:
            raise NotFound("no such organization")
        row = OrganizationApiKey(
            id=uuid7(),
            organization_id=organization_id,
            name=name or "api key",
            key_prefix=key[:12],
            key_hash=_digest(key),
            created_at=datetime.now(UTC),
        )
        uow.repo.add(row)
        uow.commit()
        return {
            "id": str(row.id),
            "key": key,
            "prefix": row.key_prefix,
            "organizationId": str(organization_id),
        }


def resolve(uow_factory: UnitOfWorkFactory, key: str) -> Principal | None:
    """The organization a key belongs to, or None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX):
        return None
    with uow_factory() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        assert uow.session is not None
        row = uow.session.scalar(
            select(OrganizationApiKey).where(OrganizationApiKey.key_hash == _digest(key))
        )
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.organization_id)
