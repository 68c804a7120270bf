"""Fixtures of the console tests: an organization with a tree flow, an agent, one answered conversation and
an organization key (`acme`), and a console signed in with the operator token (`operator`)."""

from __future__ import annotations

import pytest

from luminai_actors.testing import LuminaiHarness
from tests.unit.console_client import SCRIPT, Console


@pytest.fixture
def acme(luminai: LuminaiHarness) -> dict[str, str]:
    org = luminai.admin.create_organization("Acme")
    flow = luminai.admin.create_tree_flow(org, SCRIPT)
    agent = luminai.admin.create_agent(org, "acme", tree_flow=flow, name="Sofia")
    assert luminai.say("acme", "Oi, quero agendar").status_code == 200
    luminai.drain()
    talk = luminai.talks(org)[0]["id"]
    key = luminai.admin.post(f"/api/admin/organizations/{org}/api-keys", {"name": "console"})["key"]
    return {"org": org, "agent": agent, "talk": talk, "key": key, "flow": flow}


@pytest.fixture
def operator(luminai: LuminaiHarness) -> Console:
    console = Console(luminai)
    console.sign_in(luminai.settings.admin_token or "")
    return console
