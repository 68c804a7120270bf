"""`services.lifecycle.update_agent`, the one edit of an agent behind both the admin API's PATCH and the
console's settings form, on the harness's SQLite database: partial WhatsApp edits keep secrets and the QR
code, the outbound address rule for organization keys, the admin API's validation, organization scoping."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from luminai_actors.errors import Conflict, NotFound, ValidationError
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.tables import Agent, AuditLog
from luminai_actors.services import lifecycle
from luminai_actors.services.api_keys import OPERATOR, Principal
from luminai_actors.testing import LuminaiHarness

PUBLIC_DNS = AddressPolicy(resolver=lambda host, port: {"evo.example.com": ["93.184.215.14"]}[host])


@pytest.fixture
def world(luminai: LuminaiHarness) -> tuple[LuminaiHarness, Principal, uuid.UUID]:
    org = luminai.admin.create_organization("Acme")
    agent = luminai.admin.create_agent(org, "acme", metadata={"custom": 1})
    with luminai.container.session_factory() as session:
        row = session.get(Agent, uuid.UUID(agent))
        assert row is not None
        row.whatsapp_metadata = {**(row.whatsapp_metadata or {}), "qrcode": {"code": "2@abc"}}
        row.whatsapp_status = "connected"
        session.commit()
    return luminai, Principal(uuid.UUID(org), uuid.uuid4()), uuid.UUID(agent)


def _row(luminai: LuminaiHarness, agent_id: uuid.UUID) -> Agent:
    with luminai.container.session_factory() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        return row


def _edit(luminai: LuminaiHarness, who: Principal, agent_id: uuid.UUID, whatsapp: dict[str, Any]) -> None:
    lifecycle.update_agent(luminai.container.uow, who, agent_id, {"whatsapp": whatsapp}, policy=PUBLIC_DNS)


def test_a_partial_edit_keeps_the_secrets_and_the_qr_code_and_is_audited_under_the_key(
    world: tuple[LuminaiHarness, Principal, uuid.UUID],
) -> None:
    luminai, own, agent_id = world
    before = _row(luminai, agent_id)
    _edit(
        luminai,
        own,
        agent_id,
        {
            "instanceName": "acme-2",
            "phone": "+55 11 91234-5678",
            "serverUrl": "https://evo.example.com/",
            "active": False,
            "metadata": {"custom": 1, "qrcode": {"code": "stale"}},
        },
    )
    agent = _row(luminai, agent_id)
    assert agent.whatsapp_instance_name == "acme-2"
    assert agent.whatsapp_server_url_trusted is False  # set by an organization: the rule applies
    assert agent.whatsapp_phone == "+5511912345678"
    assert agent.whatsapp_server_url == "https://evo.example.com"
    assert agent.whatsapp_active is False
    assert (agent.whatsapp_api_key, agent.whatsapp_webhook_token) == (
        before.whatsapp_api_key,
        before.whatsapp_webhook_token,
    )
    assert agent.whatsapp_metadata is not None
    assert agent.whatsapp_metadata["qrcode"] == {"code": "2@abc"}
    assert agent.whatsapp_metadata["custom"] == 1
    assert agent.whatsapp_status is None  # another instance: unknown until tested
    with luminai.container.session_factory() as session:
        entry = session.scalars(select(AuditLog).where(AuditLog.action == "agent.update")).one()
    assert entry.actor == f"key:{own.key_id}"
    assert entry.after is not None
    assert entry.after["whatsapp"]["instanceName"] == "acme-2"


def test_an_organization_cannot_point_its_agent_at_an_internal_address(
    world: tuple[LuminaiHarness, Principal, uuid.UUID],
) -> None:
    luminai, own, agent_id = world
    for url in ("http://127.0.0.1:6379", "http://2130706433/", "http://169.254.169.254/"):
        with pytest.raises(ValidationError) as caught:
            _edit(luminai, own, agent_id, {"serverUrl": url})
        assert caught.value.field == "whatsapp.serverUrl"
        assert "only public addresses are allowed" in caught.value.message
    assert _row(luminai, agent_id).whatsapp_server_url == luminai.evolution.url


def test_the_operator_may_point_anywhere_and_an_organization_may_keep_that_url(
    world: tuple[LuminaiHarness, Principal, uuid.UUID],
) -> None:
    luminai, own, agent_id = world
    _edit(luminai, OPERATOR, agent_id, {"serverUrl": "http://10.0.0.5:8080"})
    agent = _row(luminai, agent_id)
    assert (agent.whatsapp_server_url, agent.whatsapp_server_url_trusted) == ("http://10.0.0.5:8080", True)
    _edit(luminai, own, agent_id, {"phone": "+5511912345678"})
    assert _row(luminai, agent_id).whatsapp_server_url_trusted is True  # the operator's URL, kept
    with pytest.raises(ValidationError):
        _edit(luminai, own, agent_id, {"serverUrl": "http://10.0.0.6:8080"})


@pytest.mark.parametrize(
    ("whatsapp", "field"),
    [
        ({"instanceName": ""}, "whatsapp.instanceName"),
        ({"instanceName": "has space"}, "whatsapp.instanceName"),
        ({"serverUrl": "ftp://x"}, "whatsapp.serverUrl"),
        ({"phone": "12"}, "whatsapp.phone"),
        ({"active": "yes"}, "whatsapp.active"),
        ({"metadata": []}, "whatsapp.metadata"),
        ({"webhookToken": None}, "whatsapp.webhookToken"),
    ],
)
def test_an_edit_is_validated_like_a_creation(
    world: tuple[LuminaiHarness, Principal, uuid.UUID], whatsapp: dict[str, Any], field: str
) -> None:
    luminai, own, agent_id = world
    with pytest.raises(ValidationError) as caught:
        _edit(luminai, own, agent_id, whatsapp)
    assert caught.value.field == field
    assert _row(luminai, agent_id).whatsapp_instance_name == "acme"


def test_an_instance_name_of_another_agent_is_a_conflict_and_another_organizations_agent_is_not_found(
    world: tuple[LuminaiHarness, Principal, uuid.UUID],
) -> None:
    luminai, own, agent_id = world
    other_org = luminai.admin.create_organization("Globex")
    luminai.admin.create_agent(other_org, "taken")
    with pytest.raises(Conflict, match="taken"):
        _edit(luminai, own, agent_id, {"instanceName": "taken"})
    with pytest.raises(NotFound):
        _edit(luminai, Principal(uuid.UUID(other_org), uuid.uuid4()), agent_id, {"instanceName": "x"})
    assert _row(luminai, agent_id).whatsapp_instance_name == "acme"
