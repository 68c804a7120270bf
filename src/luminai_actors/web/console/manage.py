"""The console's twin of the admin API's lifecycle: rename or (operator) deactivate an organization, edit,
deactivate or delete tree flows, delete an agent, rotate an agent's webhook secret, and read the audit log.

Every change goes through `services.lifecycle` (or `whatsapp_admin` for the secret), the functions the admin
API calls, so the console follows the same rules (validation, 409 while in use, the operator-only switch)
and each change is recorded in the audit log under the signed-in principal.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.errors import Conflict, ValidationError
from luminai_actors.services import audit, lifecycle, whatsapp_admin
from luminai_actors.services import tree_flows as flow_service
from luminai_actors.web.console.guard import console_action, console_page, path_uuid
from luminai_actors.web.console.pages import agent_page, org_context
from luminai_actors.web.console.render import page, redirect
from luminai_actors.web.console.session import ConsoleSession, container_of

AUDIT_PAGE = 100
FLOWS_PAGE = 200
# The definition of a tree flow as its edit form shows it (the admin API's PATCH fields, but `active`).
DEFINITION_FIELDS = ("name", "objective", "closing", "steps", "outcomes")


@console_action
async def update_organization(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    body: dict[str, Any] = {"name": form.get("name", "")}
    if session.principal.is_operator:  # only the operator's form has the switch (a key gets 403 for it)
        body["active"] = form.get("active") == "on"
    await run_in_threadpool(lifecycle.update_organization, container.uow, session.principal, org_id, body)
    container.directory.forget()  # cached instances of this organization carry its active flag
    return redirect(
        "/console/orgs" if session.principal.is_operator else f"/console/orgs/{org_id}/talks", "org"
    )


def _definition_text(flow: dict[str, Any]) -> str:
    return json.dumps({k: flow[k] for k in DEFINITION_FIELDS if k in flow}, ensure_ascii=False, indent=2)


async def tree_flows_page(
    request: Request,
    session: ConsoleSession,
    *,
    editing: str | None = None,
    draft: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    context = await org_context(container, session, org_id)
    flows = await run_in_threadpool(
        flow_service.list_tree_flows, container.uow, session.principal, org_id, FLOWS_PAGE, 0
    )
    views = [
        {**flow, "definition": draft if flow["id"] == editing else _definition_text(flow)} for flow in flows
    ]
    context.update(title="Tree flows", nav="flows", flows=views, editing=editing, error=error)
    return page(request, "tree_flows.html", context, session=session, status_code=status_code)


@console_page
async def tree_flows(request: Request, session: ConsoleSession) -> Response:
    return await tree_flows_page(request, session)


@console_action
async def update_tree_flow(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    flow_id = path_uuid(request, "flow_id")
    draft = form.get("definition", "")
    try:
        try:
            definition = json.loads(draft)
        except ValueError as exc:
            raise ValidationError("definition", f"is not JSON: {exc}") from exc
        if not isinstance(definition, dict):
            raise ValidationError("definition", "must be a JSON object")
        body = {**definition, "active": form.get("active") == "on"}
        flow = await run_in_threadpool(
            flow_service.update_tree_flow, container.uow, session.principal, flow_id, body
        )
    except ValidationError as exc:
        error = f"{exc.field}: {exc.message}"
        return await tree_flows_page(
            request, session, editing=str(flow_id), draft=draft, error=error, status_code=422
        )
    return redirect(f"/console/orgs/{flow['organizationId']}/tree-flows", "flow-saved")


@console_action
async def delete_tree_flow(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    flow_id = path_uuid(request, "flow_id")
    try:
        await run_in_threadpool(flow_service.delete_tree_flow, container.uow, session.principal, flow_id)
    except Conflict as exc:
        return await tree_flows_page(request, session, error=str(exc), status_code=409)
    return redirect(f"/console/orgs/{org_id}/tree-flows", "flow-deleted")


@console_action
async def delete_agent(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    agent = await run_in_threadpool(lifecycle.get_agent, container.uow, session.principal, agent_id)
    try:
        instance = await run_in_threadpool(lifecycle.delete_agent, container.uow, session.principal, agent_id)
    except Conflict as exc:
        return await agent_page(request, session, agent_id, error=str(exc), status_code=409)
    container.directory.forget(instance)
    return redirect(f"/console/orgs/{agent['organizationId']}/agents", "agent-deleted")


@console_action
async def rotate_webhook_token(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    """A new webhook secret, shown on this one page (never again); "Configure webhook" installs it."""
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    await run_in_threadpool(
        lifecycle.get_agent, container.uow, session.principal, agent_id
    )  # 404 if not theirs
    actor = audit.actor_of(session.principal.key_id)
    token = await run_in_threadpool(whatsapp_admin.rotate_webhook_token, container.uow, str(agent_id), actor)
    container.directory.forget()
    return await agent_page(request, session, agent_id, secret=token)


def _changes(before: Any, after: Any, prefix: str = "") -> list[str]:
    """`field: old → new` for each value that differs, nested objects flattened to `a.b` (secrets are
    already masked by the audit log)."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines: list[str] = []
        for key in sorted(set(before) | set(after)):
            if key in ("updatedAt", "createdAt"):
                continue
            lines += _changes(before.get(key), after.get(key), f"{prefix}{key}.")
        return lines
    if before == after:
        return []
    field = prefix.removesuffix(".")

    def short(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False) if value is not None else "—"
        return text if len(text) <= 80 else text[:77] + "…"

    return [f"{field}: {short(before)} → {short(after)}"]


@console_page
async def audit_log(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    context = await org_context(container, session, org_id)
    entries = await run_in_threadpool(
        lifecycle.audit_entries, container.uow, session.principal, org_id, AUDIT_PAGE, 0
    )
    rows = [
        {
            **entry,
            "changes": _changes(entry["before"] or {}, entry["after"] or {})
            if entry["before"] and entry["after"]
            else [],
        }
        for entry in entries
    ]
    context.update(title="Audit log", nav="audit", entries=rows)
    return page(request, "audit.html", context, session=session)
