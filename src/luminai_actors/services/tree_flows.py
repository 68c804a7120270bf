"""Read, edit and delete tree flows (the rules of `services.lifecycle` apply: audited, validated as a
creation is, 409 while in use). An edit that changes the definition stores it as the next version: talks
keep the version they started with (`domain.talkflow.pinned_version`), new talks take the new one.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from luminai_actors.domain import treeflow
from luminai_actors.errors import Conflict, ValidationError
from luminai_actors.persistence.tables import TALK_ACTIVE, Agent, Talk, TreeFlow
from luminai_actors.persistence.uow import UnitOfWorkFactory, session_of
from luminai_actors.services import audit
from luminai_actors.services.admin import new_version, stored_definition
from luminai_actors.services.api_keys import Principal, visible_row
from luminai_actors.services.lifecycle import list_of_organization, only_fields

TREE_FLOW_FIELDS = frozenset({"name", "objective", "closing", "steps", "outcomes", "active"})


def tree_flow_json(flow: TreeFlow) -> dict[str, Any]:
    definition = stored_definition(flow)
    return {
        "id": str(flow.id),
        "organizationId": str(flow.organization_id),
        "name": flow.name,
        "active": flow.active,
        "version": flow.version,
        **{k: v for k, v in definition.items() if k not in ("name",)},
        "createdAt": flow.created_at.isoformat(),
        "updatedAt": flow.updated_at.isoformat(),
    }


def list_tree_flows(
    uow_factory: UnitOfWorkFactory, principal: Principal, org_id: uuid.UUID, limit: int, offset: int
) -> list[dict[str, Any]]:
    return list_of_organization(uow_factory, principal, TreeFlow, org_id, limit, offset, tree_flow_json)


def get_tree_flow(uow_factory: UnitOfWorkFactory, principal: Principal, flow_id: uuid.UUID) -> dict[str, Any]:
    with uow_factory() as uow:
        return tree_flow_json(visible_row(uow, principal, TreeFlow, flow_id, "tree flow"))


def update_tree_flow(
    uow_factory: UnitOfWorkFactory, principal: Principal, flow_id: uuid.UUID, body: dict[str, Any]
) -> dict[str, Any]:
    """PATCH a tree flow: definition fields replace the stored ones (a new version when they change it);
    `active` switches the flow on or off."""
    only_fields(body, TREE_FLOW_FIELDS)
    active = body.get("active", ...)
    if active is not ... and not isinstance(active, bool):
        raise ValidationError("active", "must be true or false")
    with uow_factory() as uow:
        flow = visible_row(uow, principal, TreeFlow, flow_id, "tree flow", lock=True)
        before = tree_flow_json(flow)
        current = stored_definition(flow)
        changes = {k: v for k, v in body.items() if k != "active"}
        if changes:
            definition = treeflow.validate_definition({**current, **changes})
            if definition != current:
                new_version(session_of(uow), flow, definition)
        if isinstance(active, bool):
            flow.active = active
        session_of(uow).flush()
        after = tree_flow_json(flow)
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            flow.organization_id,
            "tree_flow.update",
            "tree_flow",
            flow.id,
            before,
            after,
        )
        uow.commit()
        return after


def delete_tree_flow(uow_factory: UnitOfWorkFactory, principal: Principal, flow_id: uuid.UUID) -> None:
    """Delete a flow no agent uses and no open talk follows; 409 otherwise."""
    with uow_factory() as uow:
        flow = visible_row(uow, principal, TreeFlow, flow_id, "tree flow", lock=True)
        session = session_of(uow)
        users = session.scalar(select(func.count()).select_from(Agent).where(Agent.tree_flow_id == flow_id))
        if users:
            raise Conflict(f"tree flow is used by {users} agent(s); point them at another flow first")
        following = sum(
            1
            for state in session.scalars(
                select(Talk.talk_flow).where(
                    Talk.organization_id == flow.organization_id, Talk.status == TALK_ACTIVE
                )
            )
            if isinstance(state, dict) and state.get("treeFlowId") == str(flow_id)
        )
        if following:
            raise Conflict(
                f"tree flow is followed by {following} open talk(s); deactivate it instead "
                '(PATCH {"active": false}) and delete it once they are closed'
            )
        before = tree_flow_json(flow)
        audit.record(
            uow,
            audit.actor_of(principal.key_id),
            flow.organization_id,
            "tree_flow.delete",
            "tree_flow",
            flow.id,
            before,
            None,
        )
        session.delete(flow)
        uow.commit()


# --- the audit log ------------------------------------------------------------------------------------------
