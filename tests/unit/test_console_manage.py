"""The console's twin of the admin lifecycle (issue 17: "same rules in the console"): organizations renamed
and (by the operator only) deactivated, tree flows edited into new versions or refused while in use, agents
deleted only when unused, webhook secrets rotated and shown once, and every console change in the audit log
under the signed-in principal."""

from __future__ import annotations

import json
import re

from luminai_actors.testing import LuminaiHarness
from tests.unit.console_client import Console


def _audit(luminai: LuminaiHarness, org: str) -> list[dict[str, object]]:
    return list(luminai.admin.get(f"/api/admin/organizations/{org}/audit"))


def test_the_operator_renames_and_deactivates_an_organization_and_a_key_may_only_rename(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    action = f"/console/orgs/{acme['org']}"
    response = operator.post(action, "/console/orgs", name="Acme Brasil")
    assert response.headers["location"] == "/console/orgs?notice=org"
    assert luminai.admin.get(action.replace("/console/orgs", "/api/admin/organizations"))["active"] is False
    assert "inactive: its webhooks are ignored" in operator.client.get("/console/orgs").text
    assert luminai.say("acme", "still there?").json()["ignored"] == "organization inactive"
    operator.post(action, "/console/orgs", name="Acme Brasil", active="on")
    org = luminai.admin.get(f"/api/admin/organizations/{acme['org']}")
    assert (org["name"], org["active"]) == ("Acme Brasil", True)

    keyed = Console(luminai)
    keyed.sign_in(acme["key"])
    page = f"/console/orgs/{acme['org']}/talks"
    assert keyed.post(action, page, name="Acme SA", active="").status_code == 303  # no switch in its form
    assert luminai.admin.get(f"/api/admin/organizations/{acme['org']}")["active"] is True
    other = luminai.admin.create_organization("Globex")
    assert keyed.post(f"/console/orgs/{other}", page, name="Mine now").status_code == 404
    assert luminai.admin.get(f"/api/admin/organizations/{other}")["name"] == "Globex"

    updates = [e for e in _audit(luminai, acme["org"]) if e["action"] == "organization.update"]
    assert [e["actor"] for e in updates][:3] == [f"key:{keyed_key_id(luminai, acme)}", "operator", "operator"]


def keyed_key_id(luminai: LuminaiHarness, acme: dict[str, str]) -> str:
    (key,) = luminai.admin.get(f"/api/admin/organizations/{acme['org']}/api-keys")
    return str(key["id"])


def test_a_tree_flow_edited_in_the_console_is_a_new_version_for_new_talks_only(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/orgs/{acme['org']}/tree-flows"
    html = operator.client.get(page).text
    assert "Qualification" in html
    found = re.search(r'<textarea id="f-definition-[^"]+" name="definition"[^>]*>([^<]*)</textarea>', html)
    assert found
    definition = json.loads(found.group(1).replace("&#34;", '"').replace("&quot;", '"'))
    definition["steps"][0]["question"] = "Qual é o seu maior desafio hoje?"
    definition["steps"][0]["name"] = "Desafio"

    bad = operator.post(f"{page}/{acme['flow']}", page, definition="{not json", active="on")
    assert bad.status_code == 422
    assert "definition: is not JSON" in bad.text
    assert "{not json" in bad.text  # the draft is kept for correction
    invalid = operator.post(f"{page}/{acme['flow']}", page, definition=json.dumps({"steps": []}), active="on")
    assert invalid.status_code == 422

    saved = operator.post(f"{page}/{acme['flow']}", page, definition=json.dumps(definition), active="on")
    assert saved.headers["location"] == f"{page}?notice=flow-saved"
    flow = luminai.admin.get(f"/api/admin/tree-flows/{acme['flow']}")
    assert flow["version"] == 2
    assert flow["steps"][0]["question"] == "Qual é o seu maior desafio hoje?"
    # the talk under way keeps version 1: its next question is still the old wording
    assert luminai.admin.talk(acme["talk"])["talkFlow"]["treeFlowVersion"] == 1
    shown = operator.client.get(f"/console/api/talks/{acme['talk']}").json()["talk"]["flow"]
    assert shown["currentStep"] == "Need"  # the console shows the version the talk follows

    refused = operator.post(f"{page}/{acme['flow']}/delete", page)
    assert refused.status_code == 409
    assert "used by 1 agent" in refused.text
    (entry, *_) = [e for e in _audit(luminai, acme["org"]) if e["action"] == "tree_flow.update"]
    assert entry["actor"] == "operator"


def test_an_agent_is_deleted_from_the_console_only_when_it_never_talked(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/agents/{acme['agent']}"
    busy = operator.post(f"{page}/delete", page)
    assert busy.status_code == 409
    assert "deactivate it instead" in busy.text
    spare = luminai.admin.create_agent(acme["org"], "spare", name="Spare")
    response = operator.post(f"/console/agents/{spare}/delete", f"/console/agents/{spare}")
    assert response.headers["location"] == f"/console/orgs/{acme['org']}/agents?notice=agent-deleted"
    assert luminai.admin.request("GET", f"/api/admin/agents/{spare}").status_code == 404
    assert any(e["action"] == "agent.delete" for e in _audit(luminai, acme["org"]))


def test_a_webhook_secret_rotated_in_the_console_is_shown_once_and_the_old_one_stops_working(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/agents/{acme['agent']}"
    rotated = operator.post(f"{page}/webhook-token", page)
    assert rotated.status_code == 200
    found = re.search(r'<code id="new-webhook-token">([^<]+)</code>', rotated.text)
    assert found
    token = found.group(1)
    assert token not in operator.client.get(page).text  # never shown again
    assert luminai.say("acme", "com o segredo antigo").status_code == 401
    fresh = luminai.post_webhook(luminai.message("acme", "com o novo"), headers={"X-Webhook-Token": token})
    assert fresh.status_code == 200
    (entry,) = [e for e in _audit(luminai, acme["org"]) if e["action"] == "agent.webhook_token.rotate"]
    assert token not in json.dumps(entry)
    assert str(entry["after"]).startswith("{'webhookToken': 'set:")


def test_console_changes_are_audited_under_the_signed_in_key_and_shown_on_the_audit_page(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    keyed = Console(luminai)
    keyed.sign_in(acme["key"])
    talk = f"/console/talks/{acme['talk']}"
    keyed.post(f"{talk}/pause", talk)
    keyed.post(f"{talk}/resume", talk)
    keyed.post(f"{talk}/messages", talk, text="Oi, aqui é a Ana")
    actor = f"key:{keyed_key_id(luminai, acme)}"
    mine = [e["action"] for e in _audit(luminai, acme["org"]) if e["actor"] == actor]
    assert mine[:3] == ["message.send", "talk.resume", "talk.pause"]  # newest first
    html = keyed.client.get(f"/console/orgs/{acme['org']}/audit").text
    assert "talk.pause" in html
    assert "paused: false → true" in html
    assert actor in html
    assert "Oi, aqui é a Ana" not in html


def test_keys_created_and_revoked_through_the_api_are_audited(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    keys = f"/api/admin/organizations/{acme['org']}/api-keys"
    made = luminai.admin.post(keys, {"name": "zapier"})
    assert luminai.admin.request("DELETE", f"{keys}/{made['id']}").status_code == 204
    entries = [e for e in _audit(luminai, acme["org"]) if e["entityId"] == made["id"]]
    assert [e["action"] for e in entries] == ["api_key.revoke", "api_key.create"]
    assert made["key"] not in json.dumps(entries)


def test_a_pause_and_resume_through_the_admin_api_are_audited(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    luminai.admin.post(f"/api/admin/talks/{acme['talk']}/pause", expect=200)
    luminai.admin.post(f"/api/admin/talks/{acme['talk']}/resume", expect=200)
    entries = [e for e in _audit(luminai, acme["org"]) if e["entityId"] == acme["talk"]]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("talk.resume", "operator"),
        ("talk.pause", "operator"),
    ]
