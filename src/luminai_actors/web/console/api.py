"""The console's small JSON reads, polled by its pages every few seconds: an organization's agents and
conversations, one conversation (transcript with delivery marks and TalkFlow state) and the analytics.

Each answer carries a `version`; a page re-renders its live parts only when the version changes.
"""

from __future__ import annotations

from dataclasses import asdict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.services import console_analytics, console_queries
from luminai_actors.web.bodies import is_count
from luminai_actors.web.console.guard import console_api, path_uuid
from luminai_actors.web.console.pages import PAGE_SIZE, analytics_days
from luminai_actors.web.console.present import agent_view, summary_view, talk_view
from luminai_actors.web.console.render import versioned
from luminai_actors.web.console.session import ConsoleSession, container_of


@console_api
async def agents(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    rows = await run_in_threadpool(console_queries.list_agents, container.uow, session.principal, org_id)
    return versioned({"agents": [agent_view(a) for a in rows]})


@console_api
async def agent(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    row = await run_in_threadpool(console_queries.get_agent, container.uow, session.principal, agent_id)
    return versioned({"agent": agent_view(row)})


@console_api
async def talks(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    raw = request.query_params.get("offset", "0")
    offset = min(int(raw), 10**6) if is_count(raw) else 0
    rows = await run_in_threadpool(
        console_queries.list_talks, container.uow, session.principal, org_id, PAGE_SIZE, offset
    )
    return versioned({"talks": [summary_view(r) for r in rows]})


@console_api
async def talk(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    talk_id = path_uuid(request, "talk_id")
    detail = await run_in_threadpool(console_queries.talk_detail, container.uow, session.principal, talk_id)
    return versioned({"talk": talk_view(detail)})


@console_api
async def analytics(request: Request, session: ConsoleSession) -> Response:
    container = container_of(request)
    org_id = path_uuid(request, "org_id")
    data = await run_in_threadpool(
        console_analytics.organization_analytics,
        container.uow,
        session.principal,
        org_id,
        analytics_days(request),
    )
    return versioned(
        {
            "days": data.days,
            "since": data.since.isoformat(),
            "messagesPerDay": [
                {"day": d.day.isoformat(), "inbound": d.inbound, "outbound": d.outbound}
                for d in data.messages_per_day
            ],
            "firstResponse": {
                "talks": len(data.first_response_seconds),
                "medianSeconds": data.response_median,
                "p90Seconds": data.response_p90,
            },
            "steps": [asdict(flow) for flow in data.flows],
            "outcomes": data.outcomes,
        }
    )
