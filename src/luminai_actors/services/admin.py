"""Admin use cases: validate and create organizations, tree flows and agents; list an organization's data.

Validation errors name the offending field (`whatsapp.instanceName`, `steps[2].question`) and become 422;
an instance name already used by any organization's agent is a 409 (instance names are global in Evolution).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select

from luminai_actors.domain import treeflow
from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.phone import normalize_phone
from luminai_actors.errors import Conflict, NotFound, ValidationError
from luminai_actors.outbound_address import AddressPolicy, AddressRefused
from luminai_actors.persistence.tables import (
    Agent,
    Contact,
    Organization,
    Talk,
    TalkAgent,
    TalkMessage,
    TreeFlow,
    TreeFlowVersion,
)
from luminai_actors.persistence.uow import UnitOfWorkFactory, session_of
from luminai_actors.services import audit


def _text(body: dict[str, Any], key: str, path: str, *, required: bool, max_len: int = 255) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError(path, "is required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationError(path, "must be a non-empty string" if required else "must be a string")
    if len(value) > max_len:
        raise ValidationError(path, f"must be at most {max_len} characters")
    return value.strip()


def _bool(body: dict[str, Any], key: str, path: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ValidationError(path, "must be true or false")
    return value


def create_organization(
    uow_factory: UnitOfWorkFactory, body: dict[str, Any], *, actor: str = audit.OPERATOR
) -> uuid.UUID:
    name = _text(body, "name", "name", required=True)
    with uow_factory() as uow:
        org = Organization(id=uuid7(), name=name)
        uow.repo.add(org)
        uow.repo.flush()
        audit.record(uow, actor, org.id, "organization.create", "organization", org.id, {"name": name})
        uow.commit()
        return org.id


def _require_org(uow: Any, org_id: uuid.UUID) -> Organization:
    org = uow.repo.get(Organization, org_id)
    if org is None:
        raise NotFound("no such organization")
    return org  # type: ignore[no-any-return]  # repo.get returns the model asked for


def create_tree_flow(
    uow_factory: UnitOfWorkFactory,
    org_id: uuid.UUID,
    body: dict[str, Any],
    *,
    actor: str = audit.OPERATOR,
) -> uuid.UUID:
    """A new TreeFlow at version 1."""
    with uow_factory() as uow:
        _require_org(uow, org_id)
        definition = treeflow.validate_definition(body)
        flow = TreeFlow(id=uuid7(), organization_id=org_id, name=definition["name"], definition={}, version=0)
        uow.repo.add(flow)
        uow.repo.flush()
        new_version(session_of(uow), flow, definition)
        audit.record(uow, actor, org_id, "tree_flow.create", "tree_flow", flow.id, flow.definition)
        uow.commit()
        return flow.id


def stored_definition(flow: TreeFlow) -> dict[str, Any]:
    """The flow's definition as it was given, without the bookkeeping `new_version` adds."""
    return {k: v for k, v in flow.definition.items() if k not in ("version", "treeFlowId")}


def new_version(session: Any, flow: TreeFlow, definition: dict[str, Any]) -> None:
    """Make `definition` (validated) the flow's next version (1 for a new flow), kept in tree_flow_version
    so that talks begun on an earlier version keep following it."""
    flow.version = (flow.version or 0) + 1
    flow.definition = {**definition, "treeFlowId": str(flow.id), "version": flow.version}
    flow.name = definition["name"]
    session.add(
        TreeFlowVersion(id=uuid7(), tree_flow_id=flow.id, version=flow.version, definition=flow.definition)
    )


def _server_url(value: str | None, policy: AddressPolicy | None) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValidationError(
            "whatsapp.serverUrl", "must be an http(s) URL, e.g. https://evolution.example.com"
        )
    if policy is not None:
        try:
            policy.check_url(value)
        except AddressRefused as exc:
            raise ValidationError("whatsapp.serverUrl", exc.reason) from exc
    return value.rstrip("/")


def parse_agent(
    body: dict[str, Any], *, policy: AddressPolicy | None = None, trusted_url: str | None = None
) -> tuple[dict[str, Any], uuid.UUID | None]:
    """The agent columns an admin body asks for (validated, 422 naming the field) and its tree flow id.

    `policy` is the outbound address rule, given when an organization key (not the operator) saves: the
    server URL must pass it, except `trusted_url`, the URL the operator already set on the agent, kept
    as it is. `whatsapp_server_url_trusted` records whether the rule applies at connection time.
    """
    name = _text(body, "name", "name", required=True)
    prompt = _text(body, "prompt", "prompt", required=False, max_len=20_000)
    active = _bool(body, "active", "active", True)
    whatsapp = body.get("whatsapp") or {}
    if not isinstance(whatsapp, dict):
        raise ValidationError("whatsapp", "must be an object")
    instance = _text(whatsapp, "instanceName", "whatsapp.instanceName", required=bool(whatsapp))
    if instance is not None and ("/" in instance or any(ch.isspace() for ch in instance)):
        raise ValidationError("whatsapp.instanceName", "must not contain '/' or spaces")
    raw_phone = _text(whatsapp, "phone", "whatsapp.phone", required=False, max_len=40)
    phone = normalize_phone(raw_phone) if raw_phone else None
    if raw_phone and phone is None:
        raise ValidationError(
            "whatsapp.phone", "is not a phone number with country code, e.g. +5511999999999"
        )
    raw_url = _text(whatsapp, "serverUrl", "whatsapp.serverUrl", required=False, max_len=500)
    kept_trusted = raw_url is not None and trusted_url is not None and raw_url.rstrip("/") == trusted_url
    server_url = _server_url(raw_url, None if kept_trusted else policy)
    api_key = _text(whatsapp, "apiKey", "whatsapp.apiKey", required=False, max_len=4096)
    webhook_token = _text(whatsapp, "webhookToken", "whatsapp.webhookToken", required=False)
    whatsapp_active = _bool(whatsapp, "active", "whatsapp.active", bool(whatsapp))
    metadata = whatsapp.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError("whatsapp.metadata", "must be an object")
    raw_flow = body.get("treeFlowId")
    flow_id: uuid.UUID | None = None
    if raw_flow is not None:
        try:
            flow_id = uuid.UUID(str(raw_flow))
        except ValueError as exc:
            raise ValidationError("treeFlowId", "must be a tree flow id") from exc
    columns = {
        "name": name,
        "prompt": prompt,
        "active": active,
        "whatsapp_instance_name": instance,
        "whatsapp_phone": phone,
        "whatsapp_server_url": server_url,
        "whatsapp_server_url_trusted": policy is None or kept_trusted,
        "whatsapp_api_key": api_key,
        "whatsapp_active": whatsapp_active,
        "whatsapp_webhook_token": webhook_token,
        "whatsapp_metadata": metadata,
    }
    return columns, flow_id


def new_webhook_token() -> str:
    """A webhook secret for an agent: what Evolution must send back (`X-Webhook-Token`, or as `jwt_key`)."""
    return "whk_" + secrets.token_urlsafe(32)


def create_agent(
    uow_factory: UnitOfWorkFactory,
    org_id: uuid.UUID,
    body: dict[str, Any],
    *,
    policy: AddressPolicy | None = None,
) -> uuid.UUID:
    """The new agent's id (see `add_agent`)."""
    return add_agent(uow_factory, org_id, body, policy=policy)[0]


def add_agent(
    uow_factory: UnitOfWorkFactory,
    org_id: uuid.UUID,
    body: dict[str, Any],
    *,
    policy: AddressPolicy | None = None,
    actor: str = audit.OPERATOR,
) -> tuple[uuid.UUID, str | None]:
    """Create an agent: (its id, the webhook secret generated for it when the body gave none, to be shown
    once). `policy`: the outbound address rule when an organization key creates the agent; None for the
    operator, whose agents may point anywhere."""
    columns, flow_id = parse_agent(body, policy=policy)
    generated = None if columns["whatsapp_webhook_token"] else new_webhook_token()
    columns["whatsapp_webhook_token"] = columns["whatsapp_webhook_token"] or generated
    instance = columns["whatsapp_instance_name"]
    with uow_factory() as uow:
        _require_org(uow, org_id)
        if flow_id is not None:
            flow = uow.repo.get(TreeFlow, flow_id)
            if flow is None or flow.organization_id != org_id:
                raise ValidationError("treeFlowId", "no such tree flow in this organization")
        if instance is not None and uow.repo.agent_by_instance(instance) is not None:
            raise Conflict(f"whatsapp.instanceName {instance!r} is already used by another agent")
        agent = Agent(id=uuid7(), organization_id=org_id, tree_flow_id=flow_id, **columns)
        uow.repo.add(agent)
        audit.record(uow, actor, org_id, "agent.create", "agent", agent.id, dict(columns))  # secrets masked
        try:
            uow.commit()
        except Conflict as exc:  # two creations raced for one instance name
            raise Conflict(f"whatsapp.instanceName {instance!r} is already used by another agent") from exc
        return agent.id, generated


def list_contacts(
    uow_factory: UnitOfWorkFactory, org_id: uuid.UUID, limit: int, offset: int
) -> list[Contact]:
    with uow_factory() as uow:
        _require_org(uow, org_id)
        query = (
            select(Contact)
            .where(Contact.organization_id == org_id)
            .order_by(Contact.created_at, Contact.id)
            .limit(limit)
            .offset(offset)
        )
        return list(session_of(uow).scalars(query))


def list_talks(
    uow_factory: UnitOfWorkFactory, org_id: uuid.UUID, limit: int, offset: int
) -> list[tuple[Talk, list[uuid.UUID]]]:
    with uow_factory() as uow:
        _require_org(uow, org_id)
        session = session_of(uow)
        talks = list(
            session.scalars(
                select(Talk)
                .where(Talk.organization_id == org_id)
                .order_by(Talk.created_at, Talk.id)
                .limit(limit)
                .offset(offset)
            )
        )
        return [(talk, uow.repo.talk_agent_ids(talk.id)) for talk in talks]


def get_talk(uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID) -> tuple[Talk, list[uuid.UUID]]:
    with uow_factory() as uow:
        talk = uow.repo.get(Talk, talk_id)
        if talk is None:
            raise NotFound("no such talk")
        return talk, uow.repo.talk_agent_ids(talk_id)


def list_messages(
    uow_factory: UnitOfWorkFactory, talk_id: uuid.UUID, limit: int, offset: int
) -> list[TalkMessage]:
    with uow_factory() as uow:
        if uow.repo.get(Talk, talk_id) is None:
            raise NotFound("no such talk")
        query = (
            select(TalkMessage)
            .where(TalkMessage.talk_id == talk_id)
            .order_by(TalkMessage.created_at, TalkMessage.id)
            .limit(limit)
            .offset(offset)
        )
        return list(session_of(uow).scalars(query))


def now_utc() -> datetime:
    return datetime.now(UTC)


__all__ = ["TalkAgent", "create_agent", "create_organization", "create_tree_flow", "list_contacts"]
