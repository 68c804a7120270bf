"""The console's form POSTs: sign in and out, agent actions (test connection, configure webhook, QR code,
WhatsApp settings) and conversation actions (pause, resume, send as a human, retry a failed reply).

Each answers 303 to the page it came from (post/redirect/get), or re-renders the page with the error beside
the field that caused it (422 / 409). Services are called with the signed-in principal, so another
organization's agent, talk or message is a 404 page.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from luminai_actors.errors import BrokerUnavailable, Conflict, ValidationError
from luminai_actors.services import audit, console, console_queries, lifecycle, whatsapp_admin
from luminai_actors.services import talks as talks_service
from luminai_actors.web.console.guard import console_action, path_uuid
from luminai_actors.web.console.pages import agent_page, talk_page
from luminai_actors.web.console.render import error_page, page, read_form, redirect, safe_next
from luminai_actors.web.console.session import (
    ConsoleSession,
    clear_cookie,
    container_of,
    same_origin,
    set_cookie,
    sign_in,
)

log = logging.getLogger(__name__)


async def sign_in_submit(request: Request) -> Response:
    if not same_origin(request):
        return error_page(request, None, 403, "sign in from the console's own page")
    form = await read_form(request)
    session = await sign_in(request, form.get("credential", ""))
    if session is None:
        context = {"title": "Sign in", "enabled": bool(container_of(request).settings.admin_token)}
        context["error"] = "That is neither the operator token nor a valid organization key."
        return page(request, "sign_in.html", context, session=None, status_code=401)
    response = redirect("/console/")
    set_cookie(request, response, session)
    return response


@console_action
async def sign_out(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    response = redirect("/console/sign-in", "signed-out")
    clear_cookie(request, response)
    return response


async def _agent_ref(request: Request, session: ConsoleSession) -> str:
    """The agent id, once the principal may see it (404 otherwise)."""
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    await run_in_threadpool(console_queries.get_agent, container.uow, session.principal, agent_id)
    return str(agent_id)


@console_action
async def test_connection(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    ref = await _agent_ref(request, session)
    result = await run_in_threadpool(whatsapp_admin.test_connection, container.uow, container.evolution, ref)
    container.directory.forget(result["instance"])
    if result["status"] == "connected":
        await run_in_threadpool(container.resume_agent_sends, result["instance"])
    return redirect(safe_next(form.get("next"), f"/console/agents/{ref}"), "tested")


@console_action
async def configure_webhook(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    ref = await _agent_ref(request, session)
    public_url = container.settings.public_url or str(request.base_url).rstrip("/")
    await run_in_threadpool(
        lambda: whatsapp_admin.configure_webhook(
            container.uow, container.evolution, ref, url=None, public_url=public_url
        )
    )
    return redirect(safe_next(form.get("next"), f"/console/agents/{ref}"), "webhook")


@console_action
async def connect(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    result = await run_in_threadpool(
        console.request_qrcode, container.uow, container.evolution, session.principal, agent_id
    )
    notice = "qrcode" if result["qrcode"] is not None else "connected"
    if result["status"] == "connected":
        await run_in_threadpool(container.resume_agent_sends, result["instance"])
    container.directory.forget(result["instance"])
    return redirect(f"/console/agents/{agent_id}", notice)


def _whatsapp_from_form(form: dict[str, str], current: dict[str, Any]) -> dict[str, Any]:
    """The admin API's `whatsapp` PATCH from the settings form; metadata keys the form does not show
    (options set through the API) are kept; the QR code is the webhooks' (`lifecycle.MANAGED_METADATA`)."""
    metadata = {k: v for k, v in current.items() if k not in lifecycle.MANAGED_METADATA}
    metadata["pauseOnHumanReply"] = form.get("pauseOnHumanReply") == "on"
    metadata["splitMessages"] = form.get("splitMessages") == "on"
    per_char = form.get("timePerCharMs", "").strip()
    if per_char:
        try:
            value = float(per_char)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1000:
            raise ValidationError("whatsapp.metadata.timePerCharMs", "must be a number from 0 to 1000")
        metadata["timePerCharMs"] = int(value) if value.is_integer() else value
    else:
        metadata.pop("timePerCharMs", None)
    version = form.get("apiVersion", "2")
    if version not in ("1", "2"):
        raise ValidationError("whatsapp.metadata.apiVersion", "must be 1 or 2")
    metadata["apiVersion"] = version
    jids = [line.strip() for line in form.get("ignoreJids", "").splitlines() if line.strip()]
    if jids:
        metadata["ignoreJids"] = jids
    else:
        metadata.pop("ignoreJids", None)
    whatsapp: dict[str, Any] = {
        "instanceName": form.get("instanceName", ""),
        "phone": form.get("phone") or None,
        "serverUrl": form.get("serverUrl") or None,
        "active": form.get("active") == "on",
        "metadata": metadata,
    }
    if form.get("apiKey"):
        whatsapp["apiKey"] = form["apiKey"]
    if form.get("webhookToken"):
        whatsapp["webhookToken"] = form["webhookToken"]
    return whatsapp


@console_action
async def save_settings(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    agent_id = path_uuid(request, "agent_id")
    agent = await run_in_threadpool(console_queries.get_agent, container.uow, session.principal, agent_id)
    secret = ("apiKey", "webhookToken", "csrf_token")  # never echoed back into the page
    values: dict[str, Any] = {k: v for k, v in form.items() if k not in secret}
    for box in ("active", "pauseOnHumanReply", "splitMessages"):
        values[box] = form.get(box) == "on"
    try:
        whatsapp = _whatsapp_from_form(form, agent.whatsapp_metadata or {})
        await run_in_threadpool(
            lambda: lifecycle.update_agent(
                container.uow,
                session.principal,
                agent_id,
                {"whatsapp": whatsapp},
                policy=container.settings.address_policy,
            )
        )
    except ValidationError as exc:
        field = exc.field.removeprefix("whatsapp.").removeprefix("metadata.")
        errors = {field: exc.message}
        return await agent_page(request, session, agent_id, errors=errors, values=values, status_code=422)
    except Conflict as exc:
        errors = {"instanceName": "is already used by another agent"}
        return await agent_page(
            request, session, agent_id, errors=errors, values=values, error=str(exc), status_code=409
        )
    container.directory.forget()  # the instance may have changed hands
    return redirect(f"/console/agents/{agent_id}", "saved")


@console_action
async def pause(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    talk_id = path_uuid(request, "talk_id")
    await run_in_threadpool(console_queries.get_talk, container.uow, session.principal, talk_id)
    actor = audit.actor_of(session.principal.key_id)
    await run_in_threadpool(lambda: talks_service.pause_talk(container.uow, talk_id, actor=actor))
    return redirect(f"/console/talks/{talk_id}", "paused")


@console_action
async def resume(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    talk_id = path_uuid(request, "talk_id")
    await run_in_threadpool(console_queries.get_talk, container.uow, session.principal, talk_id)
    actor = audit.actor_of(session.principal.key_id)
    _, waiting = await run_in_threadpool(
        lambda: talks_service.resume_talk(container.uow, talk_id, actor=actor)
    )
    if waiting:  # messages the lead sent meanwhile, which no person answered, get their turn now
        try:
            await run_in_threadpool(container.dispatcher.request_ai_turn, talk_id)
        except BrokerUnavailable as exc:  # the recovery sweep enqueues it once the broker is back
            log.warning("AI turn for resumed talk %s not enqueued: %s", talk_id, exc)
    return redirect(f"/console/talks/{talk_id}", "resumed-answering" if waiting else "resumed")


@console_action
async def send(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    talk_id = path_uuid(request, "talk_id")
    text = form.get("text", "")
    try:
        await run_in_threadpool(
            console.send_human_message, container.uow, container.dispatcher, session.principal, talk_id, text
        )
    except (ValidationError, Conflict) as exc:
        status = 422 if isinstance(exc, ValidationError) else 409
        message = exc.message if isinstance(exc, ValidationError) else str(exc)
        return await talk_page(request, session, talk_id, send_error=message, draft=text, status_code=status)
    return redirect(f"/console/talks/{talk_id}", "sent")


@console_action
async def retry(request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
    container = container_of(request)
    message_id = path_uuid(request, "message_id")
    message = await run_in_threadpool(
        console.retry_failed_message, container.uow, container.dispatcher, session.principal, message_id
    )
    return redirect(f"/console/talks/{message.talk_id}", "retried")
