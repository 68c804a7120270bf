"""Admin API (`/api/admin/...`): organizations, tree flows, agents and keys in; contacts, talks, messages out.

JSON with camelCase fields as in the seed. `Authorization: Bearer <token>`: the operator's
`LUMINAI_ADMIN_TOKEN` sees every organization; an organization's API key (`lmk_...`, made with
`POST /api/admin/organizations/{orgId}/api-keys`) sees and changes only that organization, and anything of
another organization is 404 to it, never visible. With no operator token configured every call is refused.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from luminai_actors.bootstrap import Container
from luminai_actors.errors import NotFound, PayloadError
from luminai_actors.services import admin as admin_service
from luminai_actors.services import api_keys, audit, privacy, whatsapp_admin
from luminai_actors.services import talks as talks_service
from luminai_actors.services.api_keys import OPERATOR, Principal, ensure_visible
from luminai_actors.web.bodies import MAX_ADMIN_BODY_BYTES, is_count, read_body
from luminai_actors.web.errors import error_response
from luminai_actors.web.serialize import contact_json, message_json, talk_json

Endpoint = Callable[[Request], Awaitable[Response]]


async def authenticate(request: Request) -> Principal | Response:
    container: Container = request.app.state.container
    token = container.settings.admin_token
    if not token:
        return error_response(401, "admin API disabled: set LUMINAI_ADMIN_TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return error_response(401, "missing bearer token")
    if hmac.compare_digest(given.encode(), token.encode()):
        return OPERATOR
    principal = await run_in_threadpool(api_keys.resolve, container.uow, given)
    return principal if principal is not None else error_response(401, "wrong bearer token")


def _guard(inner: Endpoint, *, operator_only: bool) -> Endpoint:
    @wraps(inner)
    async def guarded(request: Request) -> Response:
        principal = await authenticate(request)
        if isinstance(principal, Response):
            return principal
        if operator_only and not principal.is_operator:
            return error_response(403, "this needs the operator token, not an organization key")
        request.state.principal = principal
        return await inner(request)

    return guarded


def require_admin(endpoint: Endpoint) -> Endpoint:
    """The operator or an organization key; `request.state.principal` says which."""
    return _guard(endpoint, operator_only=False)


def require_operator(endpoint: Endpoint) -> Endpoint:
    """The operator token only (organization keys get 403)."""
    return _guard(endpoint, operator_only=True)


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _actor(request: Request) -> str:
    """Who the audit log names for this request's changes."""
    return audit.actor_of(_principal(request).key_id)


def _visible(request: Request, organization_id: uuid.UUID, what: str) -> None:
    ensure_visible(_principal(request), organization_id, what)


def _org(request: Request) -> uuid.UUID:
    org_id = _uuid(request, "org_id")
    _visible(request, org_id, "organization")
    return org_id


def _uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(request.path_params[name]))
    except ValueError as exc:
        raise NotFound(f"no such {name.removesuffix('_id')}") from exc


async def _json_object(request: Request) -> dict[str, Any]:
    return _object_of(await read_body(request, MAX_ADMIN_BODY_BYTES))


async def _optional_json_object(request: Request) -> dict[str, Any]:
    """The JSON object of a body that may be empty ({} then)."""
    raw = await read_body(request, MAX_ADMIN_BODY_BYTES)
    return _object_of(raw) if raw.strip() else {}


def _object_of(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise PayloadError("body is not valid JSON", status=400) from exc
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object", status=422)
    return body


def _paging(request: Request) -> tuple[int, int]:
    def read(name: str, default: int, maximum: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not is_count(raw):
            raise PayloadError(f"{name} must be a non-negative integer", status=422, path=name)
        return min(int(raw), maximum)

    return read("limit", 100, 1000), read("offset", 0, 10**9)


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


@require_operator
async def create_organization(request: Request) -> Response:
    body = await _json_object(request)
    org_id = await run_in_threadpool(
        lambda: admin_service.create_organization(_container(request).uow, body, actor=_actor(request))
    )
    return JSONResponse({"id": str(org_id)}, status_code=201)


@require_admin
async def create_tree_flow(request: Request) -> Response:
    body = await _json_object(request)
    org_id, actor = _org(request), _actor(request)
    flow_id = await run_in_threadpool(
        lambda: admin_service.create_tree_flow(_container(request).uow, org_id, body, actor=actor)
    )
    return JSONResponse({"id": str(flow_id)}, status_code=201)


@require_admin
async def create_agent(request: Request) -> Response:
    body = await _json_object(request)
    container = _container(request)
    org_id = _org(request)
    policy = None if _principal(request).is_operator else container.settings.address_policy
    actor = _actor(request)
    agent_id, generated = await run_in_threadpool(
        lambda: admin_service.add_agent(container.uow, org_id, body, policy=policy, actor=actor)
    )
    container.directory.forget()  # an instance cached as unknown now has an owner
    created: dict[str, Any] = {"id": str(agent_id)}
    if generated is not None:  # shown this once; `whatsapp set-webhook` installs it on the instance
        created["webhookToken"] = generated
    return JSONResponse(created, status_code=201)


@require_admin
async def rotate_webhook_token(request: Request) -> Response:
    """A new webhook secret for the agent, shown once; run set-webhook so Evolution sends it."""
    container = _container(request)
    ref = await _agent_ref(request)
    token = await run_in_threadpool(whatsapp_admin.rotate_webhook_token, container.uow, ref, _actor(request))
    container.directory.forget()
    return JSONResponse({"webhookToken": token}, status_code=201)


@require_admin
async def list_contacts(request: Request) -> Response:
    limit, offset = _paging(request)
    rows = await run_in_threadpool(
        admin_service.list_contacts, _container(request).uow, _org(request), limit, offset
    )
    return JSONResponse([contact_json(row) for row in rows])


@require_admin
async def list_talks(request: Request) -> Response:
    limit, offset = _paging(request)
    rows = await run_in_threadpool(
        admin_service.list_talks, _container(request).uow, _org(request), limit, offset
    )
    return JSONResponse([talk_json(talk, agents) for talk, agents in rows])


async def _talk_id(request: Request) -> uuid.UUID:
    talk_id = _uuid(request, "talk_id")
    talk, _ = await run_in_threadpool(admin_service.get_talk, _container(request).uow, talk_id)
    _visible(request, talk.organization_id, "talk")
    return talk_id


@require_admin
async def get_talk(request: Request) -> Response:
    talk_id = await _talk_id(request)
    talk, agents = await run_in_threadpool(admin_service.get_talk, _container(request).uow, talk_id)
    return JSONResponse(talk_json(talk, agents))


@require_admin
async def list_messages(request: Request) -> Response:
    limit, offset = _paging(request)
    talk_id = await _talk_id(request)
    rows = await run_in_threadpool(
        admin_service.list_messages, _container(request).uow, talk_id, limit, offset
    )
    return JSONResponse([message_json(row) for row in rows])


async def _agent_ref(request: Request) -> str:
    ref = str(request.path_params["agent_id"])
    channel = await run_in_threadpool(whatsapp_admin.find_agent, _container(request).uow, ref)
    _visible(request, channel.organization_id, "agent")
    return ref


@require_admin
async def test_connection(request: Request) -> Response:
    container = _container(request)
    await _agent_ref(request)
    result = await run_in_threadpool(
        whatsapp_admin.test_connection,
        container.uow,
        container.evolution,
        str(request.path_params["agent_id"]),
    )
    container.directory.forget(result["instance"])
    if result["status"] == "connected":
        await run_in_threadpool(container.resume_agent_sends, result["instance"])
    return JSONResponse(result)


@require_admin
async def configure_webhook(request: Request) -> Response:
    container = _container(request)
    body = await _optional_json_object(request)
    await _agent_ref(request)
    url = body.get("url")
    if url is not None and not isinstance(url, str):
        raise PayloadError("url must be a string", status=422, path="url")
    result = await run_in_threadpool(
        lambda: whatsapp_admin.configure_webhook(
            container.uow,
            container.evolution,
            str(request.path_params["agent_id"]),
            url=url,
            public_url=container.settings.public_url,
        )
    )
    return JSONResponse(result)


@require_admin
async def pause_talk(request: Request) -> Response:
    container = _container(request)
    talk_id = await _talk_id(request)
    talk = await run_in_threadpool(
        lambda: talks_service.pause_talk(container.uow, talk_id, actor=_actor(request))
    )
    return JSONResponse({"id": str(talk.id), "paused": talk.paused})


@require_admin
async def resume_talk(request: Request) -> Response:
    container = _container(request)
    talk_id = await _talk_id(request)
    talk, waiting = await run_in_threadpool(
        lambda: talks_service.resume_talk(container.uow, talk_id, actor=_actor(request))
    )
    if waiting:  # messages the lead sent meanwhile, which no person answered, get their turn now
        await run_in_threadpool(container.dispatcher.request_ai_turn, talk_id)
    return JSONResponse({"id": str(talk.id), "paused": talk.paused, "answering": waiting})


@require_admin
async def list_api_keys(request: Request) -> Response:
    rows = await run_in_threadpool(api_keys.list_api_keys, _container(request).uow, _org(request))
    return JSONResponse(rows)


@require_admin
async def revoke_api_key(request: Request) -> Response:
    """204; from then on the key gets 401 everywhere and console sessions signed in with it end."""
    org_id = _org(request)
    key_id = _uuid(request, "key_id")
    await run_in_threadpool(api_keys.revoke_api_key, _container(request).uow, org_id, key_id, _actor(request))
    return Response(status_code=204)


@require_admin
async def create_api_key(request: Request) -> Response:
    org_id = _org(request)
    body = await _optional_json_object(request)
    created = await run_in_threadpool(
        api_keys.create_api_key, _container(request).uow, org_id, body.get("name"), _actor(request)
    )
    return JSONResponse(created, status_code=201)


@require_admin
async def export_contact(request: Request) -> Response:
    """Everything held about one person (LGPD art. 18 / GDPR art. 15, 20) as one JSON document."""
    contact_id = _uuid(request, "contact_id")
    found = await run_in_threadpool(
        privacy.export_contact, _container(request).uow, _principal(request), contact_id
    )
    messages: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for message in found.messages:
        messages.setdefault(message.talk_id, []).append(message_json(message))
    own = {talk.id for talk, _ in found.talks}
    return JSONResponse(
        {
            "contact": contact_json(found.contact),
            "talks": [
                {**talk_json(talk, agents), "messages": messages.get(talk.id, [])}
                for talk, agents in found.talks
            ],
            "messagesInSharedChats": [message_json(m) for m in found.messages if m.talk_id not in own],
        }
    )


@require_admin
async def erase_contact(request: Request) -> Response:
    """204: the person's rows are gone (see `services.privacy`); this process forgets what it cached."""
    container = _container(request)
    contact_id = _uuid(request, "contact_id")
    assert container.suppression is not None  # `bootstrap.build` sets it
    erased = await run_in_threadpool(
        privacy.erase_contact, container.uow, container.suppression, _principal(request), contact_id
    )
    container.forget_erased(erased)
    return Response(status_code=204)
