"""`services.organization_llm.OrganizationBrains`: which brain an organization's setting gets, and that a
base URL set with an organization key is held to the outbound address rule at connection time. Names are
resolved by an injected resolver; the only connections made go to a FakeOpenAI on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest

from luminai_actors.ai.brain import ExtractionRequest, OfflineBrain
from luminai_actors.config import Settings
from luminai_actors.errors import BrainError
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.services.organization_llm import OrganizationBrains, OrganizationLlm
from luminai_actors.testing import FakeOpenAI

ASK = ExtractionRequest(
    fields=[{"name": "email", "type": "email"}], messages=["ana@tiny.io"], asked_field="email", region=None
)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-org", model="org-model") as fake:
        fake.script({"email": "ana@tiny.io", "optOut": False})
        yield fake


def _to_loopback(host: str, port: int) -> list[str]:
    """A DNS answer that changed after the URL was saved: the name now points at this machine."""
    return {"llm.example.com": ["127.0.0.1"]}[host]


def test_nothing_set_or_a_model_alone_on_an_offline_deployment_is_the_deployments_brain() -> None:
    default = OfflineBrain()
    with closing(OrganizationBrains(Settings(), default)) as brains:
        assert brains.for_llm(OrganizationLlm()) is default
        assert brains.for_llm(OrganizationLlm(model="gpt-x")) is default  # no LLM of the deployment to change


def test_one_brain_per_setting_is_kept_so_what_it_learnt_of_the_server_is_remembered() -> None:
    with closing(OrganizationBrains(Settings(openai_api_key="sk-deployment"), OfflineBrain())) as brains:
        first = brains.for_llm(OrganizationLlm("http://llm.example.com/v1", "m", "k1", trusted=True))
        assert brains.for_llm(OrganizationLlm("http://llm.example.com/v1", "m", "k1", trusted=True)) is first
        assert (
            brains.for_llm(OrganizationLlm("http://llm.example.com/v1", "m", "k2", trusted=True)) is not first
        )
        assert brains.for_llm(OrganizationLlm(model="gpt-x")).name == "openai"  # the deployment's URL and key


def test_a_name_an_organization_set_is_refused_when_it_resolves_to_this_machine(server: FakeOpenAI) -> None:
    url = f"http://llm.example.com:{server.port}/v1"
    with closing(
        OrganizationBrains(Settings(), OfflineBrain(), AddressPolicy(resolver=_to_loopback))
    ) as brains:
        brain = brains.for_llm(OrganizationLlm(url, "org-model", "sk-org", trusted=False))
        with pytest.raises(BrainError):
            brain.extract(ASK)
    assert server.requests == []  # refused before connecting


def test_the_operators_exception_lets_an_organization_reach_an_allowed_host(server: FakeOpenAI) -> None:
    policy = AddressPolicy.from_entries(["127.0.0.1"], resolver=_to_loopback)
    url = f"http://llm.example.com:{server.port}/v1"
    with closing(OrganizationBrains(Settings(), OfflineBrain(), policy)) as brains:
        extraction = brains.for_llm(OrganizationLlm(url, "org-model", "sk-org", trusted=False)).extract(ASK)
    assert extraction.values["email"] == "ana@tiny.io"
    assert extraction.model == "org-model"
    [request] = server.chat_requests()
    assert request["model"] == "org-model"
    assert server.requests[0].headers["host"] == f"llm.example.com:{server.port}"  # the name, not the address
