"""Issue 17's admin lifecycle on PostgreSQL: read and edit organizations, agents and tree flows; deletion
refused while in use; an inactive organization is ignored; tree-flow versions pin talks; the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.testing import FakeEvolutionApi
from tests.integration.test_pipeline_inprocess import AUTH, WEBHOOK, setup_agent, wait_for, webhook

pytestmark = pytest.mark.integration


def _agent(client: TestClient, org: str) -> dict[str, Any]:
    [agent] = client.get(f"/api/admin/organizations/{org}/agents", headers=AUTH).json()
    return dict(agent)


def test_agents_are_read_without_secrets_and_patched_field_by_field_with_an_audit_entry(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _, client = make_app()
    org = setup_agent(client, evolution, "acme")
    agent = _agent(client, org)
    assert agent["whatsapp"]["apiKeySet"] is True
    assert agent["whatsapp"]["webhookTokenSet"] is True
    assert "apiKey" not in agent["whatsapp"]
    assert "webhookToken" not in agent["whatsapp"]

    changed = client.patch(
        f"/api/admin/agents/{agent['id']}",
        json={"prompt": "Be warm.", "whatsapp": {"apiKey": "k2"}},
        headers=AUTH,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["prompt"] == "Be warm."
    assert changed.json()["whatsapp"]["instanceName"] == "acme"  # untouched fields are kept
    assert client.patch(
        f"/api/admin/agents/{agent['id']}", json={"whatsapp": {"nope": 1}}, headers=AUTH
    ).json()["field"] == ("whatsapp.nope")
    refused = client.patch(
        f"/api/admin/agents/{agent['id']}", json={"whatsapp": {"webhookToken": None}}, headers=AUTH
    )
    assert (refused.status_code, refused.json()["field"]) == (422, "whatsapp.webhookToken")

    entries = client.get(f"/api/admin/organizations/{org}/audit", headers=AUTH).json()
    update = next(e for e in entries if e["action"] == "agent.update")
    assert update["actor"] == "operator"
    assert update["before"]["prompt"] == "Be brief."
    assert update["after"]["prompt"] == "Be warm."
    before_key, after_key = update["before"]["whatsapp"]["apiKey"], update["after"]["whatsapp"]["apiKey"]
    assert before_key.startswith("set:")
    assert after_key.startswith("set:")
    assert before_key != after_key
    assert "k2" not in str(entries)
    assert "k1" not in str(entries)
    assert {e["action"] for e in entries} >= {"organization.create", "tree_flow.create", "agent.create"}


def test_an_organization_key_edits_its_own_and_is_named_in_the_audit_but_cannot_deactivate(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _, client = make_app()
    org = setup_agent(client, evolution, "acme")
    other = client.post("/api/admin/organizations", json={"name": "Other"}, headers=AUTH).json()["id"]
    made = client.post(f"/api/admin/organizations/{org}/api-keys", json={}, headers=AUTH).json()
    key = {"Authorization": f"Bearer {made['key']}"}
    assert [o["id"] for o in client.get("/api/admin/organizations", headers=key).json()] == [org]
    assert client.get(f"/api/admin/organizations/{other}", headers=key).status_code == 404
    assert (
        client.patch(f"/api/admin/organizations/{other}", json={"name": "x"}, headers=key).status_code == 404
    )
    assert (
        client.patch(f"/api/admin/organizations/{org}", json={"active": False}, headers=key).status_code
        == 403
    )
    renamed = client.patch(f"/api/admin/organizations/{org}", json={"name": "Acme Ltda"}, headers=key)
    assert renamed.json()["name"] == "Acme Ltda"
    [entry] = [
        e
        for e in client.get(f"/api/admin/organizations/{org}/audit", headers=key).json()
        if e["action"] == "organization.update"
    ]
    assert entry["actor"] == f"key:{made['id']}"
    assert (entry["before"]["name"], entry["after"]["name"]) == ("Acme", "Acme Ltda")


def test_an_inactive_organizations_webhooks_are_ignored_and_nothing_is_sent(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _, client = make_app()
    org = setup_agent(client, evolution, "acme")
    assert (
        client.patch(f"/api/admin/organizations/{org}", json={"active": False}, headers=AUTH).json()["active"]
        is False
    )
    answer = client.post(WEBHOOK, json=webhook("acme"))
    assert (answer.status_code, answer.json().get("ignored")) == (200, "organization inactive")
    assert client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json() == []
    client.patch(f"/api/admin/organizations/{org}", json={"active": True}, headers=AUTH)
    assert "ignored" not in client.post(WEBHOOK, json=webhook("acme")).json()
    evolution.wait_for_requests(1, path_prefix="/message/sendText")


def test_deletion_is_refused_while_in_use_and_allowed_after(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _, client = make_app()
    org = setup_agent(client, evolution, "acme")
    agent = _agent(client, org)
    flow = agent["treeFlowId"]
    assert client.delete(f"/api/admin/tree-flows/{flow}", headers=AUTH).status_code == 409  # an agent uses it
    assert client.post(WEBHOOK, json=webhook("acme")).status_code == 200
    assert client.delete(f"/api/admin/agents/{agent['id']}", headers=AUTH).status_code == 409  # it talked
    spare = client.post(
        f"/api/admin/organizations/{org}/tree-flows",
        json={"name": "Spare", "steps": [{"id": "a", "question": "?"}]},
        headers=AUTH,
    ).json()["id"]
    assert client.delete(f"/api/admin/tree-flows/{spare}", headers=AUTH).status_code == 204
    assert client.get(f"/api/admin/tree-flows/{spare}", headers=AUTH).status_code == 404
    actions = [e["action"] for e in client.get(f"/api/admin/organizations/{org}/audit", headers=AUTH).json()]
    assert "tree_flow.delete" in actions


def test_a_talk_keeps_the_tree_flow_version_it_started_with(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    _, client = make_app()
    org = setup_agent(client, evolution, "acme")
    flow = _agent(client, org)["treeFlowId"]
    client.post(WEBHOOK, json=webhook("acme", text="Oi"))
    first = wait_for(lambda: evolution.sent_messages())
    assert "What do you need?" in first[0]["text"]

    edited = client.patch(
        f"/api/admin/tree-flows/{flow}",
        json={"steps": [{"id": "size", "question": "How big is your team?"}]},
        headers=AUTH,
    )
    assert edited.json()["version"] == 2
    client.post(WEBHOOK, json=webhook("acme", text="quero um CRM"))
    wait_for(lambda: len(evolution.sent_messages()) >= 2)
    [talk] = client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json()
    assert talk["talkFlow"]["treeFlowVersion"] == 1  # still the version it started with
    assert "need" in talk["talkFlow"]["collected"] or talk["talkFlow"]["currentStepId"] == "need"
    assert all("How big is your team?" not in m["text"] for m in evolution.sent_messages())
    same = client.patch(f"/api/admin/tree-flows/{flow}", json={"name": edited.json()["name"]}, headers=AUTH)
    assert same.json()["version"] == 2  # nothing changed: no new version
