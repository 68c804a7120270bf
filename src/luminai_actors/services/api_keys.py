"""Per-organization API keys: made once (the plaintext is shown only then), stored as SHA-256, resolved to
the organization they belong to, listed (never the key) and revoked. The operator's LUMINAI_ADMIN_TOKEN
is not a key: it sees everything.

`resolve` is the one place a presented key is checked, for the admin API and the console's sign-in alike;
a revoked key resolves to nothing from the moment it is revoked, and console sessions signed in with it
end at their next request (`key_still_valid`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from luminai_actors.domain.ids import uuid7
from luminai_actors.errors import NotFound, ValidationError
from luminai_actors.persistence.repository import M
from luminai_actors.persistence.tables import Organization, OrganizationApiKey
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork, UnitOfWork, UnitOfWorkFactory
from luminai_actors.services import audit

KEY_PREFIX = "lmk_"
LAST_USED_PRECISION = timedelta(seconds=60)
"""last_used_at is written at most once a minute per key: a key in use does not cost a write per call."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls the admin API: the operator (every organization) or one organization's key."""

    organization_id: uuid.UUID | None
    key_id: uuid.UUID | None = None  # the organization key used; None for the operator (the audit's "who")

    @property
    def is_operator(self) -> bool:
        return self.organization_id is None

    def sees(self, organization_id: uuid.UUID) -> bool:
        return self.organization_id is None or self.organization_id == organization_id


OPERATOR = Principal(None)


def ensure_visible(principal: Principal, organization_id: uuid.UUID, what: str) -> None:
    """The one visibility rule: `NotFound` for anything of an organization the caller may not see (its
    existence is not revealed)."""
    if not principal.sees(organization_id):
        raise NotFound(f"no such {what}")


def visible_row(
    uow: UnitOfWork, principal: Principal, model: type[M], ident: uuid.UUID, what: str, *, lock: bool = False
) -> M:
    """The row of an organization-owned table (agent, tree flow, contact, ...) if the caller may see it,
    locked for update when `lock`; `NotFound` otherwise, as `ensure_visible`."""
    row = uow.repo.get_for_update(model, ident) if lock else uow.repo.get(model, ident)
    if row is None:
        raise NotFound(f"no such {what}")
    ensure_visible(principal, getattr(row, "organization_id"), what)  # noqa: B009 (every such table has it)
    return row


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    uow_factory: UnitOfWorkFactory, organization_id: uuid.UUID, name: str | None, actor: str
) -> dict[str, str]:
    """A new key for the organization (shown this once; only its hash is kept); `actor` is named in the
    audit log."""
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
        audit.record(uow, actor, organization_id, "api_key.create", "api_key", row.id, None, key_json(row))
        uow.commit()
        return {
            "id": str(row.id),
            "key": key,
            "prefix": row.key_prefix,
            "organizationId": str(organization_id),
        }


def resolve(uow_factory: UnitOfWorkFactory, key: str) -> Principal | None:
    """The organization (and key id) a key belongs to, or None for an unknown or revoked key."""
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
        now = datetime.now(UTC)
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
            row.last_used_at = now
            uow.commit()
        return Principal(row.organization_id, row.id)


def key_still_valid(uow_factory: UnitOfWorkFactory, key_id: uuid.UUID, organization_id: uuid.UUID) -> bool:
    """Whether the key of a console session still exists, unrevoked, for that organization."""
    with uow_factory() as uow:
        row = uow.repo.get(OrganizationApiKey, key_id)
        return row is not None and row.revoked_at is None and row.organization_id == organization_id


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def key_json(row: OrganizationApiKey) -> dict[str, Any]:
    """A key as the API shows it: never the key nor its hash."""
    return {
        "id": str(row.id),
        "organizationId": str(row.organization_id),
        "name": row.name,
        "prefix": row.key_prefix,
        "createdAt": _iso(row.created_at),
        "lastUsedAt": _iso(row.last_used_at),
        "revokedAt": _iso(row.revoked_at),
    }


def list_api_keys(uow_factory: UnitOfWorkFactory, organization_id: uuid.UUID) -> list[dict[str, Any]]:
    with uow_factory() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        assert uow.session is not None
        if uow.repo.get(Organization, organization_id) is None:
            raise NotFound("no such organization")
        rows = uow.session.scalars(
            select(OrganizationApiKey)
            .where(OrganizationApiKey.organization_id == organization_id)
            .order_by(OrganizationApiKey.created_at, OrganizationApiKey.id)
        )
        return [key_json(row) for row in rows]


def revoke_api_key(
    uow_factory: UnitOfWorkFactory, organization_id: uuid.UUID, key_id: uuid.UUID, actor: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Revoke a key of the organization (again: no change); (before, after) as `key_json`. `actor` is
    named in the audit log."""
    with uow_factory() as uow:
        row = uow.repo.get_for_update(OrganizationApiKey, key_id)
        if row is None or row.organization_id != organization_id:
            raise NotFound("no such api key")
        before = key_json(row)
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            audit.record(
                uow, actor, organization_id, "api_key.revoke", "api_key", row.id, before, key_json(row)
            )
            uow.commit()
        return before, key_json(row)
