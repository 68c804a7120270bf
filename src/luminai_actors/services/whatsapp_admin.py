"""Operator actions on an agent's WhatsApp channel: test the connection, point Evolution's webhook at us.

Both talk to the agent's Evolution server with the agent's key. Testing the connection records the state on
the agent (`whatsapp_status`); configuring the webhook uses Evolution v2's nested body with an explicit
event list and passes the agent's webhook token as the `X-Webhook-Token` header Evolution will send back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from luminai_actors.errors import EvolutionError, EvolutionNotActivated, NotFound, ValidationError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.persistence.tables import WHATSAPP_LICENSE_REQUIRED, Agent
from luminai_actors.persistence.uow import UnitOfWorkFactory
from luminai_actors.services import audit, licence_gate
from luminai_actors.services.admin import new_webhook_token
from luminai_actors.services.channel_events import CONNECTION_STATES

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/webhooks/whatsapp/evolution"


@dataclass(frozen=True, slots=True)
class Channel:
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    instance: str
    server_url: str
    api_key: str
    webhook_token: str | None
    trusted: bool  # the operator set server_url: the outbound address rule does not apply


def find_agent(uow_factory: UnitOfWorkFactory, ref: str) -> Channel:
    """An agent by id or by instance name, with a complete WhatsApp configuration."""
    with uow_factory() as uow:
        agent: Agent | None = None
        try:
            agent = uow.repo.get(Agent, uuid.UUID(ref))
        except ValueError:
            agent = None
        agent = agent or uow.repo.agent_by_instance(ref)
        if agent is None:
            raise NotFound(f"no agent with id or instance {ref!r}")
        if not (agent.whatsapp_instance_name and agent.whatsapp_server_url and agent.whatsapp_api_key):
            raise ValidationError("whatsapp", "the agent has no complete WhatsApp configuration")
        return Channel(
            agent.id,
            agent.organization_id,
            agent.whatsapp_instance_name,
            agent.whatsapp_server_url,
            agent.whatsapp_api_key,
            agent.whatsapp_webhook_token,
            bool(agent.whatsapp_server_url_trusted),
        )


def rotate_webhook_token(uow_factory: UnitOfWorkFactory, ref: str, actor: str) -> str:
    """Give the agent a new webhook secret (the old one stops working at once) and return it; `actor` is
    named in the audit log."""
    channel = find_agent(uow_factory, ref)
    token = new_webhook_token()
    with uow_factory() as uow:
        agent = uow.repo.get_for_update(Agent, channel.agent_id)
        assert agent is not None
        before = {"webhookToken": agent.whatsapp_webhook_token}
        agent.whatsapp_webhook_token = token
        audit.record(
            uow,
            actor,
            agent.organization_id,
            "agent.webhook_token.rotate",
            "agent",
            agent.id,
            before,
            {"webhookToken": token},
        )
        uow.commit()
    return token


def test_connection(uow_factory: UnitOfWorkFactory, client: EvolutionClient, ref: str) -> dict[str, Any]:
    """The instance's `connectionState`, recorded as the agent's `whatsapp_status`, with the server's
    `evolutionVersion` (`GET /`, best effort: a server that does not answer it still has a state). A server
    behind Evolution 2.4's licence gate is recorded as `license_required` (`licence_gate`), not an error."""
    channel = find_agent(uow_factory, ref)
    version = _server_version(client, channel)
    gate: EvolutionNotActivated | None = None
    try:
        state = client.connection_state(
            channel.server_url, channel.api_key, channel.instance, trusted=channel.trusted
        )
        status = CONNECTION_STATES.get(state, state)
    except EvolutionNotActivated as exc:
        gate, state, status = exc, "license_required", WHATSAPP_LICENSE_REQUIRED
    now = datetime.now(UTC)
    with uow_factory() as uow:
        agent = uow.repo.get_for_update(Agent, channel.agent_id)
        assert agent is not None
        metadata = {k: v for k, v in (agent.whatsapp_metadata or {}).items() if k != "evolutionLicense"}
        if version is not None:
            metadata["evolutionVersion"] = version
        agent.whatsapp_metadata = metadata
        agent.whatsapp_status = status
        if gate is not None:
            licence_gate.mark_agent(agent, gate, now)
        if status == "connected":
            agent.whatsapp_last_connected_at = now
        uow.commit()
    result: dict[str, Any] = {
        "agentId": str(channel.agent_id),
        "instance": channel.instance,
        "state": state,
        "status": status,
        "evolutionVersion": version,
    }
    if gate is not None:
        result["message"] = str(gate)
    return result


def _server_version(client: EvolutionClient, channel: Channel) -> str | None:
    try:
        info = client.server_info(channel.server_url, trusted=channel.trusted)
    except EvolutionError:
        return None  # connectionState, next, reports what is wrong (a refused address included)
    version = info.get("version")
    return version[:40] if isinstance(version, str) else None


def probe_gated_agents(uow_factory: UnitOfWorkFactory, client: EvolutionClient) -> list[str]:
    """Test the connection of every agent at Evolution's licence gate (the recovery sweep calls this);
    returns the instances that are connected again, whose waiting replies the caller enqueues."""
    with uow_factory() as uow:
        instances = uow.repo.instances_with_status(WHATSAPP_LICENSE_REQUIRED)
    connected = []
    for instance in instances:
        try:
            if test_connection(uow_factory, client, instance)["status"] == "connected":
                connected.append(instance)
        except EvolutionError as exc:
            log.info("licence probe of %s: %s", instance, exc)
    return connected


def configure_webhook(
    uow_factory: UnitOfWorkFactory,
    client: EvolutionClient,
    ref: str,
    *,
    url: str | None,
    public_url: str | None,
) -> dict[str, Any]:
    channel = find_agent(uow_factory, ref)
    target = url or (public_url.rstrip("/") + WEBHOOK_PATH if public_url else None)
    if not target or not target.startswith(("http://", "https://")):
        raise ValidationError("url", "give the webhook URL (http/https) or set LUMINAI_PUBLIC_URL")
    headers = {"X-Webhook-Token": channel.webhook_token} if channel.webhook_token else {}
    row = client.set_webhook(
        channel.server_url,
        channel.api_key,
        channel.instance,
        target,
        headers=headers,
        trusted=channel.trusted,
    )
    return {"agentId": str(channel.agent_id), "instance": channel.instance, "url": target, "evolution": row}
