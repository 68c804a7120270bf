"""Read side of the operator console: organizations, agents, conversations (most recent first) and one
conversation with its transcript and TreeFlow, plus the look-ups its sign-in needs (SQLAlchemy 2.0 style).

Everything is scoped by the caller's `Principal`: lists take an organization it must see, and a single row
of another organization is `NotFound`, as in the admin API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from luminai_actors.domain import talkflow
from luminai_actors.errors import NotFound
from luminai_actors.persistence.tables import (
    SEND_FAILED,
    Agent,
    Contact,
    Organization,
    Talk,
    TalkMessage,
    TreeFlow,
)
from luminai_actors.persistence.uow import UnitOfWorkFactory, session_of
from luminai_actors.services.api_keys import Principal, ensure_visible

TRANSCRIPT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class TalkSummary:
    """One row of the conversations list."""

    talk: Talk
    contact_name: str
    contact_phone: str | None
    agent_name: str | None
    last_body: str | None
    last_direction: str | None
    failed_sends: int

    @property
    def last_at(self) -> datetime:
        return self.talk.date_last_message or self.talk.created_at


@dataclass(frozen=True, slots=True)
class TalkDetail:
    """A conversation with what the console shows beside it."""

    talk: Talk
    contact: Contact | None
    agent: Agent | None
    messages: list[TalkMessage]
    definition: dict[str, Any] | None  # the TreeFlow the talk follows, when it still exists


def list_organizations(uow_factory: UnitOfWorkFactory, principal: Principal) -> list[Organization]:
    with uow_factory() as uow:
        query = select(Organization).order_by(Organization.name, Organization.id)
        if principal.organization_id is not None:
            query = query.where(Organization.id == principal.organization_id)
        return list(session_of(uow).scalars(query))


def get_organization(uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID) -> Organization:
    ensure_visible(principal, org_id, "organization")
    with uow_factory() as uow:
        org = uow.repo.get(Organization, org_id)
        if org is None:
            raise NotFound("no such organization")
        return org


def list_agents(uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID) -> list[Agent]:
    ensure_visible(principal, org_id, "organization")
    with uow_factory() as uow:
        query = select(Agent).where(Agent.organization_id == org_id).order_by(Agent.name, Agent.id)
        return list(session_of(uow).scalars(query))


def get_agent(uow_factory: UnitOfWorkFactory, principal: Principal, agent_id: uuid.UUID) -> Agent:
    with uow_factory() as uow:
        agent = uow.repo.get(Agent, agent_id)
        if agent is None:
            raise NotFound("no such agent")
        ensure_visible(principal, agent.organization_id, "agent")
        return agent


def get_talk(uow_factory: UnitOfWorkFactory, principal: Principal, talk_id: uuid.UUID) -> Talk:
    with uow_factory() as uow:
        talk = uow.repo.get(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        ensure_visible(principal, talk.organization_id, "talk")
        return talk


def list_talks(
    uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID, limit: int, offset: int
) -> list[TalkSummary]:
    """The organization's conversations, the one with the latest message first."""
    ensure_visible(principal, org_id, "organization")
    last = (
        select(TalkMessage.body, TalkMessage.direction)
        .where(TalkMessage.talk_id == Talk.id)
        .order_by(TalkMessage.created_at.desc(), TalkMessage.id.desc())
        .limit(1)
        .correlate(Talk)
    )
    failed = (
        select(func.count(TalkMessage.id))
        .where(TalkMessage.talk_id == Talk.id, TalkMessage.send_status == SEND_FAILED)
        .correlate(Talk)
        .scalar_subquery()
    )
    recency = func.coalesce(Talk.date_last_message, Talk.created_at)
    query = (
        select(
            Talk,
            Contact.name,
            func.coalesce(Contact.mobile_phone, Contact.phone),
            Agent.name,
            last.with_only_columns(TalkMessage.body).scalar_subquery(),
            last.with_only_columns(TalkMessage.direction).scalar_subquery(),
            failed,
        )
        .join(Contact, Contact.id == Talk.contact_id)
        .outerjoin(Agent, Agent.id == Talk.agent_id)
        .where(Talk.organization_id == org_id)
        .order_by(recency.desc(), Talk.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with uow_factory() as uow:
        return [
            TalkSummary(row[0], row[1], row[2], row[3], row[4], row[5], int(row[6] or 0))
            for row in session_of(uow).execute(query)
        ]


def talk_detail(uow_factory: UnitOfWorkFactory, principal: Principal, talk_id: uuid.UUID) -> TalkDetail:
    """The talk, its contact and agent, its latest messages (oldest first) and the TreeFlow definition it
    follows (the version it started with, as the AI turn does)."""
    with uow_factory() as uow:
        talk = uow.repo.get(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        ensure_visible(principal, talk.organization_id, "talk")
        session = session_of(uow)
        rows = session.scalars(
            select(TalkMessage)
            .where(TalkMessage.talk_id == talk_id)
            .order_by(TalkMessage.created_at.desc(), TalkMessage.id.desc())
            .limit(TRANSCRIPT_LIMIT)
        ).all()
        agent = session.get(Agent, talk.agent_id) if talk.agent_id is not None else None
        flow_id = (talk.talk_flow or {}).get("treeFlowId")
        if flow_id is None and agent is not None:
            flow_id = agent.tree_flow_id
        flow = None
        try:
            flow = session.get(TreeFlow, uuid.UUID(str(flow_id))) if flow_id is not None else None
        except ValueError:
            flow = None
        own = flow is not None and flow.organization_id == talk.organization_id
        definition = flow.definition if flow is not None and own else None
        pin = talkflow.pinned_version(talk.talk_flow)
        if flow is not None and own and pin is not None and pin[1] != flow.version:
            pinned = uow.repo.tree_flow_version(flow.id, pin[1])  # the version this talk follows
            definition = pinned.definition if pinned is not None else definition
        contact = session.get(Contact, talk.contact_id)
        return TalkDetail(talk, contact, agent, list(reversed(rows)), definition)
