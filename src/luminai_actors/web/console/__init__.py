"""The operator console at `/console`: server-rendered pages (Jinja2) with a little JavaScript, served by
the same Starlette app as the webhook and the admin API.

Sign in with the operator token or an organization key (the admin API's rules: a key sees only its
organization, anything else is 404); see `session` for the cookie and CSRF, `pages` / `actions` / `api` for
the endpoints, `present` for what a row looks like on screen.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from luminai_actors.web.console import actions, api, manage, pages
from luminai_actors.web.console.render import STATIC

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    """Every console route, to be mounted at the application's root (paths start with `/console`)."""
    get, post = ["GET"], ["POST"]
    org = "/orgs/{org_id}"
    inner: list[BaseRoute] = [
        Route("/", pages.home, methods=get),
        Route("/sign-in", pages.sign_in_form, methods=get),
        Route("/sign-in", actions.sign_in_submit, methods=post),
        Route("/sign-out", actions.sign_out, methods=post),
        Route("/orgs", pages.organizations, methods=get),
        Route(org, manage.update_organization, methods=post),
        Route(org + "/agents", pages.agents, methods=get),
        Route(org + "/tree-flows", manage.tree_flows, methods=get),
        Route(org + "/tree-flows/{flow_id}", manage.update_tree_flow, methods=post),
        Route(org + "/tree-flows/{flow_id}/delete", manage.delete_tree_flow, methods=post),
        Route(org + "/audit", manage.audit_log, methods=get),
        Route(org + "/talks", pages.talks, methods=get),
        Route(org + "/analytics", pages.analytics, methods=get),
        Route("/agents/{agent_id}", pages.agent, methods=get),
        Route("/agents/{agent_id}/test-connection", actions.test_connection, methods=post),
        Route("/agents/{agent_id}/webhook", actions.configure_webhook, methods=post),
        Route("/agents/{agent_id}/connect", actions.connect, methods=post),
        Route("/agents/{agent_id}/settings", actions.save_settings, methods=post),
        Route("/agents/{agent_id}/webhook-token", manage.rotate_webhook_token, methods=post),
        Route("/agents/{agent_id}/delete", manage.delete_agent, methods=post),
        Route("/talks/{talk_id}", pages.talk, methods=get),
        Route("/talks/{talk_id}/pause", actions.pause, methods=post),
        Route("/talks/{talk_id}/resume", actions.resume, methods=post),
        Route("/talks/{talk_id}/messages", actions.send, methods=post),
        Route("/messages/{message_id}/retry", actions.retry, methods=post),
        Route("/api" + org + "/agents", api.agents, methods=get),
        Route("/api" + org + "/talks", api.talks, methods=get),
        Route("/api" + org + "/analytics", api.analytics, methods=get),
        Route("/api/agents/{agent_id}", api.agent, methods=get),
        Route("/api/talks/{talk_id}", api.talk, methods=get),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="console-static"),
    ]
    return [Mount("/console", routes=inner)]
