"""The relational schema: one SQLAlchemy 2.0 declarative model per table, names as in the seed's Appendix C.

Tables are singular and snake_case (`organization`, `user`, `company`, `contact`, `agent`, `tree_flow`,
`talk_type`, `talk`, `talk_agent`, `talk_message`); primary keys are UUIDv7 made in Python. The same models
run on PostgreSQL (JSONB, partial indexes) and SQLite (JSON text, partial indexes too). Alembic migrations in
`migrations/` are the source of truth for the live schema; `tests/integration` checks the two agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from luminai_actors.domain.ids import uuid7
from luminai_actors.persistence.column_types import JSONDocument, UTCDateTime

# Talk.channel values (seed, Option A).
CHANNEL_UNKNOWN, CHANNEL_WEB, CHANNEL_WHATSAPP, CHANNEL_EMAIL = 0, 1, 2, 3
# Talk.status values.
TALK_ACTIVE, TALK_CLOSED = 0, 1
# TalkMessage.send_status values (outbound only).
SEND_PENDING, SEND_SENDING, SEND_SENT, SEND_FAILED = "pending", "sending", "sent", "failed"
#: The predicate of `idx_talk_message_send_unsettled` (migration 0004 spells it the same way).
SEND_UNSETTLED_WHERE = "direction = 'outbound' AND send_status IN ('pending', 'sending')"
# Agent.whatsapp_status values under which its replies wait (no attempt spent) instead of being sent; the
# licence one is Evolution 2.4's gate on a server not activated (`services.licence_gate`).
WHATSAPP_LICENSE_REQUIRED = "license_required"
WHATSAPP_WAITING_STATUSES = ("disconnected", "refused", WHATSAPP_LICENSE_REQUIRED)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid7)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, nullable=False, default=utcnow)


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


def _org_fk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, ForeignKey("organization.id", ondelete="CASCADE"), nullable=False, index=True)


class Organization(Base):
    __tablename__ = "organization"
    id: Mapped[uuid.UUID] = _pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    # The organization's own OpenAI-compatible LLM (`services.organization_llm`); all null: the deployment's.
    ai_base_url: Mapped[str | None] = mapped_column(String(500))
    ai_base_url_trusted: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    ai_model: Mapped[str | None] = mapped_column(String(255))
    ai_api_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class OrganizationApiKey(Base):
    """A key for one organization's use of the admin API; only its SHA-256 is stored."""

    __tablename__ = "organization_api_key"
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    key_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class User(Base):
    """A person of the organization; owns talks (the seed's Talk.owner)."""

    __tablename__ = "user"
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str | None] = mapped_column(String(180), nullable=True)
    created_at: Mapped[datetime] = _created()


class Company(Base):
    __tablename__ = "company"
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Contact(Base):
    __tablename__ = "contact"
    __table_args__ = (
        Index(
            "idx_contact_phone_org",
            "phone",
            "organization_id",
            unique=True,
            postgresql_where=text("phone IS NOT NULL"),
            sqlite_where=text("phone IS NOT NULL"),
        ),
        Index(
            "idx_contact_mobile_org",
            "mobile_phone",
            "organization_id",
            unique=True,
            postgresql_where=text("mobile_phone IS NOT NULL"),
            sqlite_where=text("mobile_phone IS NOT NULL"),
        ),
        Index(
            "idx_contact_jid_org",
            "whatsapp_jid",
            "organization_id",
            unique=True,
            postgresql_where=text("whatsapp_jid IS NOT NULL"),
            sqlite_where=text("whatsapp_jid IS NOT NULL"),
        ),
        Index(
            "idx_contact_lid_org",
            "whatsapp_lid",
            "organization_id",
            unique=True,
            postgresql_where=text("whatsapp_lid IS NOT NULL"),
            sqlite_where=text("whatsapp_lid IS NOT NULL"),
        ),
    )
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    company_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("company.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(180), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(25))
    mobile_phone: Mapped[str | None] = mapped_column(String(25))
    whatsapp_lid: Mapped[str | None] = mapped_column(String(64))
    # A shared chat (group, broadcast list, newsletter) is a contact of its own, keyed by its JID.
    whatsapp_jid: Mapped[str | None] = mapped_column(String(128))
    lead_source: Mapped[str | None] = mapped_column(String(100))
    origin: Mapped[str | None] = mapped_column(String(255))
    last_contact_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class TreeFlow(Base):
    """An AI workflow template (the SDR's script); `definition` holds the documented JSON format."""

    __tablename__ = "tree_flow"
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class TreeFlowVersion(Base):
    """Every saved definition of a TreeFlow; a talk keeps the version it started with."""

    __tablename__ = "tree_flow_version"
    __table_args__ = (UniqueConstraint("tree_flow_id", "version"),)
    id: Mapped[uuid.UUID] = _pk()
    tree_flow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tree_flow.id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False)
    created_at: Mapped[datetime] = _created()


class Agent(Base):
    __tablename__ = "agent"
    __table_args__ = (
        Index(
            "idx_agent_whatsapp_instance",
            "whatsapp_instance_name",
            unique=True,
            postgresql_where=text("whatsapp_instance_name IS NOT NULL"),
            sqlite_where=text("whatsapp_instance_name IS NOT NULL"),
        ),
        Index(
            "idx_agent_whatsapp_active",
            "whatsapp_active",
            "whatsapp_status",
            postgresql_where=text("whatsapp_active = true"),
            sqlite_where=text("whatsapp_active = 1"),
        ),
    )
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    tree_flow_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("tree_flow.id"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("user.id"))
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    prompt: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    available: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    whatsapp_instance_name: Mapped[str | None] = mapped_column(String(255))
    whatsapp_phone: Mapped[str | None] = mapped_column(String(25))
    whatsapp_server_url: Mapped[str | None] = mapped_column(String(500))
    # True when the operator set whatsapp_server_url: the outbound address rule does not apply to it.
    whatsapp_server_url_trusted: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    whatsapp_api_key: Mapped[str | None] = mapped_column(Text)
    whatsapp_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    whatsapp_status: Mapped[str | None] = mapped_column(String(50))
    whatsapp_webhook_token: Mapped[str | None] = mapped_column(String(255))
    whatsapp_last_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    whatsapp_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class TalkType(Base):
    __tablename__ = "talk_type"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = _created()


class Talk(Base):
    """A conversation between a contact and agent(s) on one channel; `talk_flow` is its TreeFlow state."""

    __tablename__ = "talk"
    __table_args__ = (
        # At most one open WhatsApp talk per contact and agent, whatever the races between processes.
        Index(
            "idx_talk_open_per_contact_agent",
            "contact_id",
            "agent_id",
            "channel",
            unique=True,
            postgresql_where=text("status = 0 AND archived = false AND closed_at IS NULL"),
            sqlite_where=text("status = 0 AND archived = 0 AND closed_at IS NULL"),
        ),
    )
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    contact_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("contact.id"), nullable=False, index=True)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agent.id"))
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("user.id"), nullable=False)
    talk_type_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("talk_type.id"), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    channel: Mapped[int] = mapped_column(Integer, nullable=False, default=CHANNEL_UNKNOWN)
    status: Mapped[int] = mapped_column(Integer, nullable=False, default=TALK_ACTIVE)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    needs_human: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    whatsapp_remote_jid: Mapped[str | None] = mapped_column(String(128))
    talk_flow: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    ai_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    date_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    date_last_message: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class TalkAgent(Base):
    __tablename__ = "talk_agent"
    talk_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("talk.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = _created()


class TalkMessage(Base):
    __tablename__ = "talk_message"
    __table_args__ = (
        # One WhatsApp message id per agent (instance), race-free: the dedupe of webhook redeliveries.
        UniqueConstraint("agent_id", "whatsapp_message_id"),
        Index("ix_talk_message_talk_created", "talk_id", "created_at"),
        Index(
            "idx_talk_message_ai_pending",
            "talk_id",
            postgresql_where=text("direction = 'inbound' AND processed_at IS NULL"),
            sqlite_where=text("direction = 'inbound' AND processed_at IS NULL"),
        ),
        # Replies not settled yet (pending or sending), a small set: the recovery sweep, an agent's waiting
        # replies and "is one of its sends in flight" (asked by receipts of unknown messages) read it
        # instead of every message.
        Index(
            "idx_talk_message_send_unsettled",
            "agent_id",
            "created_at",
            postgresql_where=text(SEND_UNSETTLED_WHERE),
            sqlite_where=text(SEND_UNSETTLED_WHERE),
        ),
    )
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    talk_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("talk.id", ondelete="CASCADE"), nullable=False
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agent.id"))
    from_contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("contact.id"))
    from_agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agent.id"))
    direction: Mapped[str] = mapped_column(String(20), nullable=False)
    channel: Mapped[str] = mapped_column(String(50), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    message_type: Mapped[str] = mapped_column(String(50), nullable=False, default="text")
    whatsapp_message_id: Mapped[str | None] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument, nullable=False, default=dict)
    send_status: Mapped[str | None] = mapped_column(String(20))
    send_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    send_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = _created()


class AuditLog(Base):
    """One change made through the admin API or the console: who, what, when, before and after (masked)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("idx_audit_log_org_created", "organization_id", "created_at"),)
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organization.id", ondelete="CASCADE"), nullable=False
    )
    actor: Mapped[str] = mapped_column(String(80), nullable=False)  # "operator" or "key:<key id>"
    action: Mapped[str] = mapped_column(String(80), nullable=False)  # e.g. "agent.update"
    entity_type: Mapped[str] = mapped_column(String(40), nullable=False)
    entity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = _created()


class SuppressedNumber(Base):
    """A keyed hash of the number of an erased contact who had opted out: the agent never writes to it."""

    __tablename__ = "suppressed_number"
    __table_args__ = (UniqueConstraint("organization_id", "number_hash"),)
    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organization.id", ondelete="CASCADE"), nullable=False
    )
    number_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _created()


class ServiceSecret(Base):
    """A secret the service generated for itself (e.g. the suppression list's hashing key)."""

    __tablename__ = "service_secret"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
