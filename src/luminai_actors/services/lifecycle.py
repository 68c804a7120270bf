"""Read, edit and delete what the admin API creates: organizations and agents (tree flows: `tree_flows`).

Every edit and deletion is recorded in the audit log (`services.audit`) in the same transaction. An edit is
a partial document in the creation's shape, merged over what is stored and validated as a creation is
(`services.admin.parse_agent`, `domain.treeflow.validate_definition`), so one rule validates both.

- An inactive organization's webhooks are ignored and nothing is sent for it; only the operator may
  (de)activate one.
- Secrets (an agent's Evolution `apiKey`, its `webhookToken`) are written, never read back: documents say
  only whether they are set. A secret is rotated by PATCHing a new value; the webhook secret stays set.
- A tree flow edit that changes the definition stores it as the next version: talks keep the version they
  started with (`domain.talkflow.pinned_version`), new talks take the new one.
- An agent or tree flow still in use cannot be deleted (409 naming what uses it): deactivate it instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import func, select

from luminai_actors.errors import Conflict, Forbidden, NotFound, ValidationError
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.ports import M
from luminai_actors.persistence.tables import (
    Agent,
    Organization,
    Talk,
    TalkAgent,
    TalkMessage,
    TreeFlow,
)
from luminai_actors.persistence.uow import UnitOfWorkFactory, session_of
from luminai_actors.services import audit
from luminai_actors.services.admin import parse_agent
from luminai_actors.services.api_keys import Principal, ensure_visible, visible_row
from luminai_actors.services.organization_llm import apply_llm, llm_json

AGENT_FIELDS = frozenset({"name", "prompt", "treeFlowId", "active", "whatsapp"})
WHATSAPP_FIELDS = frozenset(
    {"instanceName", "phone", "serverUrl", "apiKey", "active", "webhookToken", "metadata"}
)
# Keys of whatsapp.metadata written by webhooks (`qrcode.updated`), not by an edit.
MANAGED_METADATA = frozenset({"qrcode"})


def only_fields(body: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(f"{prefix}{key}", "is not a field that can be changed")


# --- organizations ------------------------------------------------------------------------------------------


def organization_json(org: Organization) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "active": org.active,
        "ai": llm_json(org),
        "createdAt": org.created_at.isoformat(),
        "updatedAt": org.updated_at.isoformat(),
    }


def list_organizations(
    uow_factory: UnitOfWorkFactory, principal: Principal, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Every organization for the operator; an organization key's own only."""
    with uow_factory() as uow:
        query = select(Organization).order_by(Organization.created_at, Organization.id)
        if principal.organization_id is not None:
            query = query.where(Organization.id == principal.organization_id)
        rows = session_of(uow).scalars(query.limit(limit).offset(offset))
        return [organization_json(org) for org in rows]


def get_organization(
    uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID
) -> dict[str, Any]:
    ensure_visible(principal, org_id, "organization")
    with uow_factory() as uow:
        org = uow.repo.get(Organization, org_id)
        if org is None:
            raise NotFound("no such organization")
        return organization_json(org)


def update_organization(
    uow_factory: UnitOfWorkFactory,
    principal: Principal,
    org_id: uuid.UUID,
    body: dict[str, Any],
    *,
    policy: AddressPolicy | None = None,
) -> dict[str, Any]:
    """PATCH `{"name"?, "active"?, "ai"?}`; `active` is the operator's to change (403 for a key); `ai` is the
    organization's own LLM (`organization_llm.apply_llm`; `policy`, the outbound address rule with the
    operator's exceptions, applies to a key's base URL)."""
    ensure_visible(principal, org_id, "organization")
    only_fields(body, frozenset({"name", "active", "ai"}))
    name = body.get("name", ...)
    if name is not ... and (not isinstance(name, str) or not name.strip() or len(name) > 255):
        raise ValidationError("name", "must be a non-empty string of at most 255 characters")
    active = body.get("active", ...)
    if active is not ... and not isinstance(active, bool):
        raise ValidationError("active", "must be true or false")
    if active is not ... and not principal.is_operator:
        raise Forbidden("only the operator can activate or deactivate an organization")
    with uow_factory() as uow:
        org = uow.repo.get_for_update(Organization, org_id)
        if org is None:
            raise NotFound("no such organization")
        before = organization_json(org)
        if isinstance(name, str):
            org.name = name.strip()
        if isinstance(active, bool):
            org.active = active
        if "ai" in body:
            apply_llm(org, body["ai"], policy or AddressPolicy(), trusted=principal.is_operator)
        session_of(uow).flush()
        after = organization_json(org)
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            org_id,
            "organization.update",
            "organization",
            org_id,
            before,
            after,
        )
        uow.commit()
        return after


# --- agents -------------------------------------------------------------------------------------------------


def agent_json(agent: Agent) -> dict[str, Any]:
    """The agent as the admin API shows it: every field, secrets only as whether they are set."""
    return {
        "id": str(agent.id),
        "organizationId": str(agent.organization_id),
        "name": agent.name,
        "prompt": agent.prompt,
        "active": agent.active,
        "treeFlowId": str(agent.tree_flow_id) if agent.tree_flow_id else None,
        "whatsapp": {
            "instanceName": agent.whatsapp_instance_name,
            "phone": agent.whatsapp_phone,
            "serverUrl": agent.whatsapp_server_url,
            "active": agent.whatsapp_active,
            "status": agent.whatsapp_status,
            "metadata": agent.whatsapp_metadata,
            "apiKeySet": bool(agent.whatsapp_api_key),
            "webhookTokenSet": bool(agent.whatsapp_webhook_token),
            "lastConnectedAt": (
                agent.whatsapp_last_connected_at.isoformat() if agent.whatsapp_last_connected_at else None
            ),
        },
        "createdAt": agent.created_at.isoformat(),
        "updatedAt": agent.updated_at.isoformat(),
    }


def _audited_agent(agent: Agent) -> dict[str, Any]:
    """What the audit log keeps of an agent: its document, with the secrets themselves (masked there)."""
    document = agent_json(agent)
    document["whatsapp"]["apiKey"] = agent.whatsapp_api_key
    document["whatsapp"]["webhookToken"] = agent.whatsapp_webhook_token
    return document


def _stored_body(agent: Agent) -> dict[str, Any]:
    """The stored agent in the creation's shape, for an edit to be merged over."""
    body: dict[str, Any] = {
        "name": agent.name,
        "prompt": agent.prompt,
        "active": agent.active,
        "treeFlowId": str(agent.tree_flow_id) if agent.tree_flow_id else None,
    }
    if agent.whatsapp_instance_name is not None:
        body["whatsapp"] = {
            "instanceName": agent.whatsapp_instance_name,
            "phone": agent.whatsapp_phone,
            "serverUrl": agent.whatsapp_server_url,
            "apiKey": agent.whatsapp_api_key,
            "active": agent.whatsapp_active,
            "webhookToken": agent.whatsapp_webhook_token,
            "metadata": agent.whatsapp_metadata,
        }
    return body


def list_of_organization(
    uow_factory: UnitOfWorkFactory,
    principal: Principal,
    model: type[M],
    org_id: uuid.UUID,
    limit: int,
    offset: int,
    document: Callable[[M], dict[str, Any]],
) -> list[dict[str, Any]]:
    """A page of an organization's rows of `model` (oldest first), each as `document` makes it."""
    ensure_visible(principal, org_id, "organization")
    with uow_factory() as uow:
        columns = cast(Any, model)  # an organization's table: organization_id, created_at, id
        query = (
            select(model)
            .where(columns.organization_id == org_id)
            .order_by(columns.created_at, columns.id)
            .limit(limit)
            .offset(offset)
        )
        return [document(row) for row in session_of(uow).scalars(query)]


def list_agents(
    uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID, limit: int, offset: int
) -> list[dict[str, Any]]:
    return list_of_organization(uow_factory, principal, Agent, org_id, limit, offset, agent_json)


def get_agent(uow_factory: UnitOfWorkFactory, principal: Principal, agent_id: uuid.UUID) -> dict[str, Any]:
    with uow_factory() as uow:
        return agent_json(visible_row(uow, principal, Agent, agent_id, "agent"))


def update_agent(
    uow_factory: UnitOfWorkFactory,
    principal: Principal,
    agent_id: uuid.UUID,
    body: dict[str, Any],
    *,
    policy: AddressPolicy | None = None,
) -> tuple[dict[str, Any], str | None]:
    """PATCH an agent: any field of the creation's body; `whatsapp` fields merge into the stored ones.
    Returns (the agent's document, its previous instance name). An organization key's `serverUrl` must pass
    the outbound address rule unless it is the operator's URL, unchanged."""
    only_fields(body, AGENT_FIELDS)
    patch_whatsapp = body.get("whatsapp", {})
    if not isinstance(patch_whatsapp, dict):
        raise ValidationError("whatsapp", "must be an object")
    only_fields(patch_whatsapp, WHATSAPP_FIELDS, "whatsapp.")
    if "webhookToken" in patch_whatsapp and not patch_whatsapp["webhookToken"]:
        raise ValidationError("whatsapp.webhookToken", "cannot be removed; give a new one to rotate it")
    with uow_factory() as uow:
        agent = visible_row(uow, principal, Agent, agent_id, "agent", lock=True)
        before = _audited_agent(agent)
        stored = _stored_body(agent)
        merged = {**stored, **{k: v for k, v in body.items() if k != "whatsapp"}}
        if patch_whatsapp or "whatsapp" in stored:
            merged["whatsapp"] = {**stored.get("whatsapp", {}), **patch_whatsapp}
        columns, flow_id = parse_agent(
            merged,
            policy=None if principal.is_operator else policy or AddressPolicy(),
            trusted_url=agent.whatsapp_server_url if agent.whatsapp_server_url_trusted else None,
        )
        if flow_id is not None and flow_id != agent.tree_flow_id:
            flow = uow.repo.get(TreeFlow, flow_id)
            if flow is None or flow.organization_id != agent.organization_id:
                raise ValidationError("treeFlowId", "no such tree flow in this organization")
        # Keys the webhooks write (the latest QR code) come from the locked row, never from the edit, so
        # an edit based on an older read cannot put back a stale QR code.
        managed = {k: v for k, v in (agent.whatsapp_metadata or {}).items() if k in MANAGED_METADATA}
        edited = {k: v for k, v in (columns["whatsapp_metadata"] or {}).items() if k not in MANAGED_METADATA}
        columns["whatsapp_metadata"] = {**edited, **managed} or None
        if columns["whatsapp_instance_name"] and not columns["whatsapp_webhook_token"]:
            columns["whatsapp_webhook_token"] = agent.whatsapp_webhook_token
        instance, previous = columns["whatsapp_instance_name"], agent.whatsapp_instance_name
        if instance is not None and instance != previous:
            other = uow.repo.agent_by_instance(instance)
            if other is not None and other.id != agent.id:
                raise Conflict(f"whatsapp.instanceName {instance!r} is already used by another agent")
            agent.whatsapp_status = None  # another instance: its state is unknown until tested
        for column, value in columns.items():
            setattr(agent, column, value)
        agent.tree_flow_id = flow_id
        session_of(uow).flush()
        after = _audited_agent(agent)
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            agent.organization_id,
            "agent.update",
            "agent",
            agent.id,
            before,
            after,
        )
        try:
            uow.commit()
        except Conflict as exc:  # another agent took the instance name meanwhile
            raise Conflict(f"whatsapp.instanceName {instance!r} is already used by another agent") from exc
        return agent_json(agent), previous


def delete_agent(uow_factory: UnitOfWorkFactory, principal: Principal, agent_id: uuid.UUID) -> str | None:
    """Delete an agent that never talked to anyone (its instance name, to forget); 409 otherwise."""
    with uow_factory() as uow:
        agent = visible_row(uow, principal, Agent, agent_id, "agent", lock=True)
        session = session_of(uow)
        talks = session.scalar(
            select(func.count()).select_from(Talk).where(Talk.agent_id == agent_id)
        ) or session.scalar(select(func.count()).select_from(TalkAgent).where(TalkAgent.agent_id == agent_id))
        messages = session.scalar(
            select(func.count())
            .select_from(TalkMessage)
            .where((TalkMessage.agent_id == agent_id) | (TalkMessage.from_agent_id == agent_id))
        )
        if talks or messages:
            raise Conflict(
                'agent is in use by its conversations; deactivate it instead (PATCH {"active": false}), '
                "or erase those contacts first"
            )
        before = _audited_agent(agent)
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            agent.organization_id,
            "agent.delete",
            "agent",
            agent.id,
            before,
            None,
        )
        instance = agent.whatsapp_instance_name
        session.delete(agent)
        uow.commit()
        return instance


def audit_entries(
    uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID, limit: int, offset: int
) -> list[dict[str, Any]]:
    ensure_visible(principal, org_id, "organization")
    with uow_factory() as uow:
        if uow.repo.get(Organization, org_id) is None:
            raise NotFound("no such organization")
        return [
            {
                "id": str(entry.id),
                "organizationId": str(entry.organization_id),
                "actor": entry.actor,
                "action": entry.action,
                "entityType": entry.entity_type,
                "entityId": str(entry.entity_id) if entry.entity_id else None,
                "before": entry.before,
                "after": entry.after,
                "createdAt": entry.created_at.isoformat(),
            }
            for entry in audit.entries(session_of(uow), org_id, limit, offset)
        ]
