"""The Starlette application: routes, error mapping, and a lifespan that owns the container's resources."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from luminai_actors import bootstrap
from luminai_actors.bootstrap import Container
from luminai_actors.config import Settings
from luminai_actors.errors import LuminaiError
from luminai_actors.web import admin, admin_edit, console, ops, webhook
from luminai_actors.web.errors import handle_error
from luminai_actors.web.openapi import openapi_document
from luminai_actors.web.ratelimit import RateLimiter

WEBHOOK_PATH = "/api/webhooks/whatsapp/evolution"


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


def routes() -> list[BaseRoute]:
    org = "/api/admin/organizations/{org_id}"
    return [
        Route(WEBHOOK_PATH, webhook.evolution_webhook, methods=["POST"]),
        Route(WEBHOOK_PATH + "/{event_slug}", webhook.evolution_webhook, methods=["POST"]),
        Route("/api/admin/organizations", admin.create_organization, methods=["POST"]),
        Route("/api/admin/organizations", admin_edit.list_organizations, methods=["GET"]),
        Route(org, admin_edit.get_organization, methods=["GET"]),
        Route(org, admin_edit.update_organization, methods=["PATCH"]),
        Route(org + "/audit", admin_edit.audit_log, methods=["GET"]),
        Route(org + "/tree-flows", admin.create_tree_flow, methods=["POST"]),
        Route(org + "/tree-flows", admin_edit.list_tree_flows, methods=["GET"]),
        Route("/api/admin/tree-flows/{tree_flow_id}", admin_edit.get_tree_flow, methods=["GET"]),
        Route("/api/admin/tree-flows/{tree_flow_id}", admin_edit.update_tree_flow, methods=["PATCH"]),
        Route("/api/admin/tree-flows/{tree_flow_id}", admin_edit.delete_tree_flow, methods=["DELETE"]),
        Route(org + "/agents", admin.create_agent, methods=["POST"]),
        Route(org + "/agents", admin_edit.list_agents, methods=["GET"]),
        Route("/api/admin/agents/{agent_id}", admin_edit.get_agent, methods=["GET"]),
        Route("/api/admin/agents/{agent_id}", admin_edit.update_agent, methods=["PATCH"]),
        Route("/api/admin/agents/{agent_id}", admin_edit.delete_agent, methods=["DELETE"]),
        Route(org + "/api-keys", admin.create_api_key, methods=["POST"]),
        Route(org + "/api-keys", admin.list_api_keys, methods=["GET"]),
        Route(org + "/api-keys/{key_id}", admin.revoke_api_key, methods=["DELETE"]),
        Route(org + "/contacts", admin.list_contacts, methods=["GET"]),
        Route(org + "/talks", admin.list_talks, methods=["GET"]),
        Route("/api/admin/contacts/{contact_id}", admin.erase_contact, methods=["DELETE"]),
        Route("/api/admin/contacts/{contact_id}/export", admin.export_contact, methods=["GET"]),
        Route("/api/admin/talks/{talk_id}", admin.get_talk, methods=["GET"]),
        Route("/api/admin/talks/{talk_id}/messages", admin.list_messages, methods=["GET"]),
        Route("/api/admin/talks/{talk_id}/pause", admin.pause_talk, methods=["POST"]),
        Route("/api/admin/talks/{talk_id}/resume", admin.resume_talk, methods=["POST"]),
        Route(
            "/api/admin/agents/{agent_id}/whatsapp/test-connection", admin.test_connection, methods=["POST"]
        ),
        Route("/api/admin/agents/{agent_id}/whatsapp/webhook", admin.configure_webhook, methods=["POST"]),
        Route(
            "/api/admin/agents/{agent_id}/whatsapp/webhook-token",
            admin.rotate_webhook_token,
            methods=["POST"],
        ),
        Route("/api/admin/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/ops/actors", ops.actors, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        *console.routes(),  # the operator console at /console
    ]


def create_app(
    settings: Settings | None = None, *, container: Container | None = None, start_background: bool = True
) -> Starlette:
    """The app; builds its own container from `settings` in the lifespan unless one is given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = container is None
        built = container or bootstrap.build(settings or Settings.from_env())
        app.state.container = built
        per_instance, per_ip = built.settings.rate_limit_per_instance, built.settings.rate_limit_per_ip
        app.state.instance_limiter = RateLimiter(per_instance, per_instance * 4)
        app.state.ip_limiter = RateLimiter(per_ip, per_ip * 4)
        if owned and start_background:
            built.start()
        try:
            yield
        finally:
            if owned:
                built.close()

    return Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={LuminaiError: handle_error, Exception: handle_error},
    )
