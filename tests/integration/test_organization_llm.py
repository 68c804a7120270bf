"""An organization's own LLM (`services.organization_llm`) through the admin API and a lead's turns, on
PostgreSQL with the real openai client against two FakeOpenAI servers on loopback: the deployment's and the
organization's."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from luminai_actors.bootstrap import Container
from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI
from tests.integration.test_conversation_ai import openai_settings, replies, say, setup
from tests.integration.test_pipeline_inprocess import AUTH


@pytest.fixture
def org_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-org-secret", model="org-model") as fake:
        yield fake


def _patch(client: TestClient, org: str, ai: dict[str, object], headers: dict[str, str] = AUTH) -> dict:  # type: ignore[type-arg]
    response = client.patch(f"/api/admin/organizations/{org}", json={"ai": ai}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_organizations_turns_use_its_own_server_model_and_key_and_fall_back_when_cleared(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
    org_server: FakeOpenAI,
) -> None:
    _container, client = make_app(**openai_settings(openai_server))
    org = setup(client, evolution)
    shown = _patch(
        client, org, {"baseUrl": org_server.url + "/v1", "model": "org-model", "apiKey": "sk-org-secret"}
    )
    assert shown["ai"] == {"baseUrl": org_server.url + "/v1", "model": "org-model", "apiKeySet": True}
    got = client.get(f"/api/admin/organizations/{org}", headers=AUTH)
    assert got.json()["ai"]["apiKeySet"] is True
    assert "sk-org-secret" not in got.text
    audit = client.get(f"/api/admin/organizations/{org}/audit", headers=AUTH)
    assert audit.status_code == 200
    assert "sk-org-secret" not in audit.text

    say(client, "Oi, tudo bem?")
    replies(evolution, 1)
    asked = org_server.chat_requests()
    assert asked
    assert {r["model"] for r in asked} == {"org-model"}
    assert openai_server.chat_requests() == []  # the deployment's LLM was not asked
    assert {r.headers["authorization"] for r in org_server.requests} == {"Bearer sk-org-secret"}

    _patch(client, org, {"baseUrl": None, "model": None, "apiKey": None})
    say(client, "Sou a Maria Souza")
    replies(evolution, 2)
    assert openai_server.chat_requests(), "cleared: the deployment's LLM answers again"
    assert len(org_server.chat_requests()) == len(asked)


def test_the_deployments_key_never_goes_to_an_organizations_server(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    with FakeOpenAI(api_key="none", model="fake-gpt") as keyless:  # a local server that needs no key
        _container, client = make_app(**openai_settings(openai_server))
        org = setup(client, evolution)
        assert _patch(client, org, {"baseUrl": keyless.url + "/v1"})["ai"]["apiKeySet"] is False
        say(client, "Oi")
        replies(evolution, 1)
        assert keyless.chat_requests()
        assert {r.headers["authorization"] for r in keyless.requests} == {"Bearer none"}
        assert openai_server.requests == []


def test_an_organization_key_cannot_point_its_llm_at_the_services_network_and_bad_values_are_422(
    make_app: Callable[..., tuple[Container, TestClient]],
    evolution: FakeEvolutionApi,
    openai_server: FakeOpenAI,
) -> None:
    _container, client = make_app(**openai_settings(openai_server))
    org = setup(client, evolution)
    key = client.post(f"/api/admin/organizations/{org}/api-keys", json={"name": "crm"}, headers=AUTH)
    as_org = {"Authorization": f"Bearer {key.json()['key']}"}
    for url, reason in [
        (openai_server.url + "/v1", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://10.1.2.3:8000/v1", "private"),
        ("ftp://llm.example.com/v1", "http(s)"),
    ]:
        response = client.patch(
            f"/api/admin/organizations/{org}", json={"ai": {"baseUrl": url}}, headers=as_org
        )
        assert response.status_code == 422, (url, response.text)
        assert "ai.baseUrl" in response.text, response.text
        assert reason in response.text, response.text
    for ai, field in [({"temperature": 1}, "ai.temperature"), ({"model": ""}, "ai.model"), ("x", "ai")]:
        response = client.patch(f"/api/admin/organizations/{org}", json={"ai": ai}, headers=as_org)
        assert response.status_code == 422, response.text
        assert field in response.text, response.text
    got = client.get(f"/api/admin/organizations/{org}", headers=AUTH).json()
    assert got["ai"] == {"baseUrl": None, "model": None, "apiKeySet": False}  # nothing refused was kept
    # the operator is trusted: a server on the service's own network is theirs to choose
    assert (
        _patch(client, org, {"baseUrl": openai_server.url + "/v1"})["ai"]["baseUrl"]
        == openai_server.url + "/v1"
    )
