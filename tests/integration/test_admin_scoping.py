"""Admin API access: the operator sees everything, an organization's key only its organization (others are
404), and the OpenAPI document lists every admin route the app serves."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from luminai_actors import bootstrap
from luminai_actors.bootstrap import Container
from luminai_actors.persistence.tables import Agent
from luminai_actors.testing import FakeEvolutionApi
from luminai_actors.testing.http import HttpBase, JsonResponse, RecordedRequest
from luminai_actors.web.app import create_app
from tests.integration.test_pipeline_inprocess import AUTH, SIGNED, WEBHOOK, WEBHOOK_SECRET, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def app(clean_pg: str) -> Iterator[tuple[Container, TestClient]]:
    container = bootstrap.build(settings_for(clean_pg))
    container.start(recovery=False)
    with TestClient(create_app(container=container), headers=SIGNED) as client:
        yield container, client
    container.close()


def org_with_talk(client: TestClient, evolution: FakeEvolutionApi, name: str) -> tuple[str, str, str]:
    org = client.post("/api/admin/organizations", json={"name": name}, headers=AUTH).json()["id"]
    instance = f"inst-{name}"
    evolution.add_instance(instance, "k")
    agent = client.post(
        f"/api/admin/organizations/{org}/agents",
        json={
            "name": "SDR",
            "whatsapp": {
                "instanceName": instance,
                "serverUrl": evolution.url,
                "apiKey": "k",
                "webhookToken": WEBHOOK_SECRET,
            },
        },
        headers=AUTH,
    ).json()["id"]
    payload = {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {"remoteJid": "5511999990000@s.whatsapp.net", "fromMe": False, "id": f"M-{name}"},
            "message": {"conversation": "hi"},
            "messageTimestamp": 1761057639,
        },
    }
    assert client.post(WEBHOOK, json=payload).status_code == 200
    talk = client.get(f"/api/admin/organizations/{org}/talks", headers=AUTH).json()[0]["id"]
    return org, agent, talk


def test_an_organization_key_sees_only_its_organization(app: tuple[Container, TestClient]) -> None:
    _, client = app
    with FakeEvolutionApi() as evolution:
        org_a, agent_a, talk_a = org_with_talk(client, evolution, "a")
        org_b, agent_b, talk_b = org_with_talk(client, evolution, "b")
        made = client.post(f"/api/admin/organizations/{org_a}/api-keys", json={"name": "crm"}, headers=AUTH)
        assert made.status_code == 201
        key = made.json()["key"]
        assert key.startswith("lmk_")
        assert made.json()["organizationId"] == org_a
        as_a = {"Authorization": f"Bearer {key}"}

        assert client.get(f"/api/admin/organizations/{org_a}/contacts", headers=as_a).status_code == 200
        assert client.get(f"/api/admin/talks/{talk_a}/messages", headers=as_a).status_code == 200
        flow = {"name": "Q", "steps": [{"id": "s", "question": "?"}]}
        assert (
            client.post(f"/api/admin/organizations/{org_a}/tree-flows", json=flow, headers=as_a).status_code
            == 201
        )

        for method, path in [
            ("GET", f"/api/admin/organizations/{org_b}/contacts"),
            ("GET", f"/api/admin/organizations/{org_b}/talks"),
            ("GET", f"/api/admin/talks/{talk_b}"),
            ("GET", f"/api/admin/talks/{talk_b}/messages"),
            ("POST", f"/api/admin/talks/{talk_b}/pause"),
            ("POST", f"/api/admin/organizations/{org_b}/tree-flows"),
            ("POST", f"/api/admin/organizations/{org_b}/api-keys"),
            ("POST", f"/api/admin/agents/{agent_b}/whatsapp/test-connection"),
        ]:
            response = client.request(method, path, json=flow, headers=as_a)
            assert response.status_code == 404, (method, path, response.text)
        assert (
            client.post("/api/admin/talks/" + talk_b + "/pause", headers=AUTH).status_code == 200
        )  # operator
        assert client.post("/api/admin/organizations", json={"name": "x"}, headers=as_a).status_code == 403
        assert client.get("/ops/actors", headers=as_a).status_code == 403
        bogus = {"Authorization": "Bearer lmk_" + uuid.uuid4().hex}
        assert client.get(f"/api/admin/organizations/{org_a}/contacts", headers=bogus).status_code == 401
        assert agent_a


def test_the_openapi_document_covers_every_admin_route(app: tuple[Container, TestClient]) -> None:
    _, client = app
    document = client.get("/api/admin/openapi.json").json()
    assert document["openapi"].startswith("3.")
    served = {
        (
            route.path.replace("{org_id}", "{orgId}")
            .replace("{talk_id}", "{talkId}")
            .replace("{agent_id}", "{agentId}")
            .replace("{key_id}", "{keyId}")
            .replace("{tree_flow_id}", "{treeFlowId}")
            .replace("{contact_id}", "{contactId}"),
            method.lower(),
        )
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        and route.path.startswith("/api/admin")
        and not route.path.endswith("openapi.json")
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


def test_lists_are_paginated(app: tuple[Container, TestClient]) -> None:
    _, client = app
    with FakeEvolutionApi() as evolution:
        org, _, talk = org_with_talk(client, evolution, "p")
    assert len(client.get(f"/api/admin/talks/{talk}/messages?limit=1", headers=AUTH).json()) == 1
    assert client.get(f"/api/admin/talks/{talk}/messages?limit=1&offset=5", headers=AUTH).json() == []
    assert client.get(f"/api/admin/organizations/{org}/talks?limit=x", headers=AUTH).status_code == 422


def _org_key(client: TestClient, name: str) -> tuple[str, dict[str, str]]:
    org = client.post("/api/admin/organizations", json={"name": name}, headers=AUTH).json()["id"]
    key = client.post(f"/api/admin/organizations/{org}/api-keys", json={}, headers=AUTH).json()["key"]
    return org, {"Authorization": f"Bearer {key}"}


def _agent(instance: str, server_url: str) -> dict[str, object]:
    return {"name": "SDR", "whatsapp": {"instanceName": instance, "serverUrl": server_url, "apiKey": "k"}}


def test_an_organization_key_cannot_point_an_agent_at_an_internal_address(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    """The SSRF of issue 17: loopback (the fake Evolution here, Redis, PostgreSQL) refused for a key, with a
    422 naming the field; the operator's own agent on loopback works."""
    _, client = make_app()
    org, as_org = _org_key(client, "tenant")
    evolution.add_instance("op-inst", "k")
    for url in (evolution.url, "http://127.0.0.1:6379", "http://localhost:5432", "http://2130706433:6379"):
        refused = client.post(f"/api/admin/organizations/{org}/agents", json=_agent("t", url), headers=as_org)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "whatsapp.serverUrl"
        assert "only public addresses are allowed" in refused.json()["error"]

    made = client.post(
        f"/api/admin/organizations/{org}/agents", json=_agent("op-inst", evolution.url), headers=AUTH
    )
    assert made.status_code == 201
    tested = client.post(f"/api/admin/agents/{made.json()['id']}/whatsapp/test-connection", headers=as_org)
    assert tested.status_code == 200, tested.text
    assert tested.json()["status"] == "connected"


def test_an_allowed_host_admits_an_organizations_agent_and_errors_carry_only_evolutions_reason(
    make_app: Callable[..., tuple[Container, TestClient]], evolution: FakeEvolutionApi
) -> None:
    container, client = make_app(evolution_allowed_hosts=("127.0.0.1",))
    org, as_org = _org_key(client, "tenant")
    evolution.add_instance("t-inst", "k")
    made = client.post(
        f"/api/admin/organizations/{org}/agents", json=_agent("t-inst", evolution.url), headers=as_org
    )
    assert made.status_code == 201, made.text
    agent = made.json()["id"]
    assert (
        client.post(f"/api/admin/agents/{agent}/whatsapp/test-connection", headers=as_org).status_code == 200
    )

    with NotEvolution() as internal:  # another loopback service, answering with its own error text
        with container.uow() as uow:
            row = uow.repo.get(Agent, uuid.UUID(agent))
            row.whatsapp_server_url = internal.url
            uow.commit()
        failed = client.post(f"/api/admin/agents/{agent}/whatsapp/test-connection", headers=as_org)
    assert failed.status_code == 502
    assert "no reason given" in failed.json()["error"]
    assert "redis_version" not in failed.text
    assert "internal-secret" not in failed.text


class NotEvolution(HttpBase):
    def handle(self, request: RecordedRequest) -> JsonResponse:
        return JsonResponse(404, {"banner": "redis_version:7.0.15", "dump": "internal-secret"})
