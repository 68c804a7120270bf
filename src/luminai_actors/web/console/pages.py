"""The console's pages (GET): sign-in, organization picker, agents, one agent, conversations, one
conversation, analytics. Each reads through `services.console_queries` / `console_analytics` with the
signed-in principal, so another organization's rows are 404 here exactly as in the admin API.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.bootstrap import Container
from luminai_actors.services import console_analytics, console_queries
from luminai_actors.web.bodies import is_count
from luminai_actors.web.console import charts
from luminai_actors.web.console.guard import console_page, path_uuid
from luminai_actors.web.console.present import agent_view, summary_view, talk_view
from luminai_actors.web.console.render import page, redirect, version_of
from luminai_actors.web.console.session import ConsoleSession, container_of, current_session

PAGE_SIZE = 50
ANALYTICS_DAYS = (7, 30, 90)


async def org_context(container: Container, session: ConsoleSession, org_id: uuid.UUID) -> dict[str, Any]:
    org = await run_in_threadpool(console_queries.get_organization, container.uow, session.principal, org_id)
    return {"org": {"id": str(org.id), "name": org.name}}


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    return min(int(raw), 10**6) if is_count(raw) else 0


async def sign_in_form(request: Request) -> Response:
    session = await current_session(request)
    if session is not None:
        return redirect("/console/")
    enabled = bool(container_of(request).settings.admin_token)
    return page(request, "sign_in.html", {"title": "Sign in", "enabled": enabled}, session=None)


@console_page
async def home(request: Request, session: ConsoleSession) -> Response:
    org = session.principal.organization_id
    if org is not None:
        return redirect(f"/console/orgs/{org}/talks")
    return redirect("/console/orgs")


@console_page
async def organizations(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    rows = await run_in_threadpool(console_queries.list_organizations, container.uow, session.principal)
    orgs = [{"id": str(o.id), "name": o.name, "active": o.active} for o in rows]
    return page(request, "organizations.html", {"title": "Organizations", "orgs": orgs}, session=session)


@console_page
async def agents(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    context = await org_context(container, session, org_id)
    rows = await run_in_threadpool(console_queries.list_agents, container.uow, session.principal, org_id)
    views = [agent_view(a) for a in rows]
    context.update(
        title="Agents",
        nav="agents",
        agents=views,
        poll=f"/console/api/orgs/{org_id}/agents",
        version=version_of({"agents": views}),
    )
    return page(request, "agents.html", context, session=session)


async def agent_page(
    request: Request,
    session: ConsoleSession,
    agent_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    error: str | None = None,
    secret: str | None = None,
    status_code: int = 200,
) -> Response:
    """One agent: state, actions, QR code and the settings form (also re-shown with errors after a POST,
    and once with a freshly rotated webhook `secret`)."""
    container = container_of(request)
    agent = await run_in_threadpool(console_queries.get_agent, container.uow, session.principal, agent_id)
    context = await org_context(container, session, agent.organization_id)
    view = agent_view(agent)
    form = {
        "instanceName": view["instance"] or "",
        "phone": view["phone"] or "",
        "serverUrl": view["serverUrl"] or "",
        "active": view["whatsappActive"],
        **view["options"],
    }
    context.update(
        title=f"Agent {agent.name}",
        nav="agents",
        agent=view,
        form={**form, **(values or {})},
        errors=errors or {},
        error=error,
        secret=secret,
        poll=None if secret else f"/console/api/agents/{agent_id}",
        version=version_of({"agent": view}),
    )
    return page(request, "agent.html", context, session=session, status_code=status_code)


@console_page
async def agent(request: Request, session: ConsoleSession) -> Response:
    return await agent_page(request, session, path_uuid(request, "agent_id"))


@console_page
async def talks(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    offset = _offset(request)
    context = await org_context(container, session, org_id)
    rows = await run_in_threadpool(
        console_queries.list_talks, container.uow, session.principal, org_id, PAGE_SIZE + 1, offset
    )
    query = f"?offset={offset}" if offset else ""
    views = [summary_view(r) for r in rows[:PAGE_SIZE]]
    context.update(
        title="Conversations",
        nav="talks",
        talks=views,
        version=version_of({"talks": views}),
        offset=offset,
        newer=max(0, offset - PAGE_SIZE) if offset else None,
        older=offset + PAGE_SIZE if len(rows) > PAGE_SIZE else None,
        poll=f"/console/api/orgs/{org_id}/talks{query}",
    )
    return page(request, "talks.html", context, session=session)


async def talk_page(
    request: Request,
    session: ConsoleSession,
    talk_id: uuid.UUID,
    *,
    send_error: str | None = None,
    draft: str = "",
    status_code: int = 200,
) -> Response:
    """One conversation: transcript, TalkFlow state, pause/resume and the human reply box."""
    container = container_of(request)
    detail = await run_in_threadpool(console_queries.talk_detail, container.uow, session.principal, talk_id)
    context = await org_context(container, session, detail.talk.organization_id)
    view = talk_view(detail)
    context.update(
        title=f"Conversation with {view['contact']}",
        nav="talks",
        talk=view,
        send_error=send_error,
        draft=draft,
        poll=f"/console/api/talks/{talk_id}",
        version=version_of({"talk": view}),
    )
    return page(request, "talk.html", context, session=session, status_code=status_code)


@console_page
async def talk(request: Request, session: ConsoleSession) -> Response:
    return await talk_page(request, session, path_uuid(request, "talk_id"))


def analytics_days(request: Request) -> int:
    raw = request.query_params.get("days", "30")
    return int(raw) if is_count(raw) and int(raw) in ANALYTICS_DAYS else 30


@console_page
async def analytics(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    days = analytics_days(request)
    context = await org_context(container, session, org_id)
    data = await run_in_threadpool(
        console_analytics.organization_analytics, container.uow, session.principal, org_id, days
    )
    context.update(
        title="Analytics",
        nav="analytics",
        days=days,
        choices=ANALYTICS_DAYS,
        data=data,
        per_day=charts.messages_per_day(data.messages_per_day),
        totals={
            "inbound": sum(d.inbound for d in data.messages_per_day),
            "outbound": sum(d.outbound for d in data.messages_per_day),
        },
        flows=[
            (flow, charts.horizontal_bars([(s.name, s.leads) for s in flow.steps], "step"))
            for flow in data.flows
        ],
        outcomes=charts.horizontal_bars(list(data.outcomes.items()), "outcome"),
    )
    return page(request, "analytics.html", context, session=session)
