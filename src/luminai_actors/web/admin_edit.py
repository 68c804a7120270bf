"""Admin API reads, edits and deletions of organizations, agents and tree flows, and the audit log.

The use cases are in `services.lifecycle` (validation, the audit record, the 409 of a deletion still in
use); these handlers authenticate, parse and answer. Who may see what is the admin API's rule: the operator
every organization, an organization key only its own (anything else is 404).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from luminai_actors.services import lifecycle, tree_flows
from luminai_actors.web.admin import (
    _container,
    _json_object,
    _paging,
    _principal,
    _uuid,
    require_admin,
)


@require_admin
async def list_organizations(request: Request) -> Response:
    limit, offset = _paging(request)
    rows = await run_in_threadpool(
        lifecycle.list_organizations, _container(request).uow, _principal(request), limit, offset
    )
    return JSONResponse(rows)


@require_admin
async def get_organization(request: Request) -> Response:
    org_id = _uuid(request, "org_id")
    row = await run_in_threadpool(
        lifecycle.get_organization, _container(request).uow, _principal(request), org_id
    )
    return JSONResponse(row)


@require_admin
async def update_organization(request: Request) -> Response:
    """`{"name"?, "active"?, "ai"?}`; an inactive organization's webhooks are ignored and nothing is sent;
    `ai` is the organization's own LLM (`services.organization_llm`)."""
    org_id = _uuid(request, "org_id")
    body = await _json_object(request)
    container = _container(request)
    policy = container.settings.address_policy  # for a base URL set with an organization key
    row = await run_in_threadpool(
        lambda: lifecycle.update_organization(container.uow, _principal(request), org_id, body, policy=policy)
    )
    container.directory.forget()  # cached instances of this organization carry its active flag
    return JSONResponse(row)


@require_admin
async def list_agents(request: Request) -> Response:
    limit, offset = _paging(request)
    org_id = _uuid(request, "org_id")
    rows = await run_in_threadpool(
        lifecycle.list_agents, _container(request).uow, _principal(request), org_id, limit, offset
    )
    return JSONResponse(rows)


@require_admin
async def get_agent(request: Request) -> Response:
    agent_id = _uuid(request, "agent_id")
    row = await run_in_threadpool(lifecycle.get_agent, _container(request).uow, _principal(request), agent_id)
    return JSONResponse(row)


@require_admin
async def update_agent(request: Request) -> Response:
    """Any field of the creation's body; `whatsapp` fields are merged. Secrets are never returned."""
    agent_id = _uuid(request, "agent_id")
    body = await _json_object(request)
    container = _container(request)
    principal = _principal(request)
    policy = None if principal.is_operator else container.settings.address_policy
    row, _ = await run_in_threadpool(
        lambda: lifecycle.update_agent(container.uow, principal, agent_id, body, policy=policy)
    )
    container.directory.forget()  # the old and the new instance name, its secret, its active flag
    return JSONResponse(row)


@require_admin
async def delete_agent(request: Request) -> Response:
    """204 for an agent with no conversations; 409 otherwise (deactivate it instead)."""
    agent_id = _uuid(request, "agent_id")
    container = _container(request)
    await run_in_threadpool(lifecycle.delete_agent, container.uow, _principal(request), agent_id)
    container.directory.forget()
    return Response(status_code=204)


@require_admin
async def list_tree_flows(request: Request) -> Response:
    limit, offset = _paging(request)
    org_id = _uuid(request, "org_id")
    rows = await run_in_threadpool(
        tree_flows.list_tree_flows, _container(request).uow, _principal(request), org_id, limit, offset
    )
    return JSONResponse(rows)


@require_admin
async def get_tree_flow(request: Request) -> Response:
    flow_id = _uuid(request, "tree_flow_id")
    row = await run_in_threadpool(
        tree_flows.get_tree_flow, _container(request).uow, _principal(request), flow_id
    )
    return JSONResponse(row)


@require_admin
async def update_tree_flow(request: Request) -> Response:
    """Definition fields replace the stored ones (the next version); talks under way keep theirs."""
    flow_id = _uuid(request, "tree_flow_id")
    body = await _json_object(request)
    row = await run_in_threadpool(
        tree_flows.update_tree_flow, _container(request).uow, _principal(request), flow_id, body
    )
    return JSONResponse(row)


@require_admin
async def delete_tree_flow(request: Request) -> Response:
    """204 for a flow no agent uses and no open talk follows; 409 otherwise."""
    flow_id = _uuid(request, "tree_flow_id")
    await run_in_threadpool(
        tree_flows.delete_tree_flow, _container(request).uow, _principal(request), flow_id
    )
    return Response(status_code=204)


@require_admin
async def audit_log(request: Request) -> Response:
    """The organization's changes, newest first: who, what, when, before and after (secrets masked)."""
    limit, offset = _paging(request)
    org_id = _uuid(request, "org_id")
    rows = await run_in_threadpool(
        lifecycle.audit_entries, _container(request).uow, _principal(request), org_id, limit, offset
    )
    return JSONResponse(rows)
