"""What each Evolution API version gets (README's "Evolution API versions"), against the local fake playing
2.3.6 and 2.4.0 as their sources say (EvolutionAPI/evolution-api 2.3.6, evolution-foundation/evolution-api
2.3.7 and 2.4.0-rc2; the file of each behaviour is named where the fake implements it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from luminai_actors.errors import EvolutionNotActivated, PayloadError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.evolution.webhook import IgnoredEvent, MessageUpsert, parse_webhook
from luminai_actors.services.send_target import evolution_takes_message_id
from luminai_actors.testing import FakeEvolutionApi, LuminaiHarness
from luminai_actors.testing.http import HttpBase, JsonResponse, RecordedRequest

INSTANCE = "acme"
LEAD = "5511987654321"


def agent_of(luminai: LuminaiHarness, agent_id: str) -> dict[str, Any]:
    agent: dict[str, Any] = luminai.admin.get(f"/api/admin/agents/{agent_id}")
    return agent


def outbound(luminai: LuminaiHarness, org: str) -> list[dict[str, Any]]:
    [talk] = luminai.talks(org)
    return [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]


# --- the licence gate (2.4.0: src/licensing/runtime.ts) -------------------------------------------------


def test_the_client_reads_the_licence_gate_as_its_own_error() -> None:
    with FakeEvolutionApi(version="2.4.0") as evolution:
        evolution.add_instance(INSTANCE, "key")
        evolution.require_licence()
        client = EvolutionClient()
        try:
            with pytest.raises(EvolutionNotActivated, match="not activated") as raised:
                client.connection_state(evolution.url, "key", INSTANCE, trusted=True)
            # `/` stays open behind the gate, and names the version
            assert client.server_info(evolution.url, trusted=True)["version"] == "2.4.0"
        finally:
            client.close()
    assert raised.value.status == 503


def test_behind_the_licence_gate_replies_wait_without_spending_attempts_and_go_out_once_activated() -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version="2.4.0")) as luminai:
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        luminai.evolution.require_licence()
        luminai.say(INSTANCE, "Oi, tenho interesse")
        luminai.drain()
        [waiting] = outbound(luminai, org)
        gated = agent_of(luminai, agent_id)["whatsapp"]
        metrics = luminai.client.get("/metrics").text
        attempts_while_gated = len(luminai.evolution.sendtext_attempts(INSTANCE))

        tested = luminai.admin.post(f"/api/admin/agents/{agent_id}/whatsapp/test-connection", expect=200)

        luminai.evolution.require_licence(False)  # the operator activated the server
        luminai.container.recover_once()  # the periodic probe
        luminai.drain()
        [sent] = outbound(luminai, org)
        after = agent_of(luminai, agent_id)["whatsapp"]

    assert attempts_while_gated == 1
    assert (waiting["sendStatus"], waiting["sendAttempts"]) == ("pending", 0)
    assert gated["status"] == "license_required"
    assert "not activated" in gated["metadata"]["evolutionLicense"]["message"]
    assert "luminai_agents_license_required 1.0" in metrics
    assert (tested["status"], tested["evolutionVersion"]) == ("license_required", "2.4.0")
    assert "not activated" in tested["message"]
    assert (sent["sendStatus"], sent["sendAttempts"]) == ("sent", 1)
    assert luminai.replies(INSTANCE) == [sent["body"]]
    assert after["status"] == "connected"
    assert "evolutionLicense" not in after["metadata"]


# --- version and messageId ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.3.6", "2.3.7", "2.4.0"])
def test_test_connection_records_the_servers_version(version: str) -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version=version)) as luminai:
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        result = luminai.admin.post(f"/api/admin/agents/{agent_id}/whatsapp/test-connection", expect=200)
        agent = agent_of(luminai, agent_id)["whatsapp"]
    assert (result["status"], result["evolutionVersion"]) == ("connected", version)
    assert agent["metadata"]["evolutionVersion"] == version


def test_on_2_4_every_attempt_of_a_reply_carries_its_own_id_and_it_becomes_the_whatsapp_id() -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version="2.4.0")) as luminai:
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        luminai.admin.post(f"/api/admin/agents/{agent_id}/whatsapp/test-connection", expect=200)
        luminai.evolution.fail_next(1)  # the first attempt fails: the retry must carry the same id
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        [reply] = outbound(luminai, org)
        ids = [r.json["messageId"] for r in luminai.evolution.sendtext_attempts(INSTANCE)]

    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert reply["whatsappMessageId"] == ids[0]
    assert reply["sendStatus"] == "sent"


def test_before_2_4_or_before_the_version_is_known_the_body_stays_number_and_text() -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version="2.3.7")) as luminai:
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        luminai.admin.post(f"/api/admin/agents/{agent_id}/whatsapp/test-connection", expect=200)
        luminai.say(INSTANCE, "Maria", message_id="3EB0SECOND")
        luminai.drain()
        bodies = [r.json for r in luminai.evolution.sendtext_attempts(INSTANCE)]
    assert len(bodies) == 2
    assert all(set(body) == {"number", "text"} for body in bodies)


@pytest.mark.parametrize(
    ("version", "takes"),
    [(None, False), ("2.3.6", False), ("2.3.7", False), ("2.4.0", True), ("2.4.0-rc2", True), ("3.0", True)],
)
def test_which_versions_take_a_message_id(version: str | None, takes: bool) -> None:
    assert evolution_takes_message_id(version) is takes


# --- 2.4's webhook headers (src/api/integrations/event/webhook/webhook.controller.ts) -------------------


def test_2_4_webhook_headers_are_accepted_and_a_contradicting_one_is_a_422() -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version="2.4.0")) as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        body = luminai.message(INSTANCE, "Oi")
        body["data"]["instanceId"] = "5f0c3f1e-0000-4000-8000-00000000000a"
        good = {
            **luminai.webhook_headers(INSTANCE),
            "X-Instance-ID": body["data"]["instanceId"],
            "X-Instance-Name": INSTANCE,
            "X-Event-Type": "messages.upsert",
            "X-Timestamp": "1796564831415",
        }
        accepted = luminai.post_webhook(body, headers=good)
        other = luminai.message(INSTANCE, "Oi de novo")
        refused = luminai.post_webhook(other, headers={**good, "X-Instance-Name": "someone-else"})
        luminai.drain()
        [talk] = luminai.talks(org)
        stored = [m["body"] for m in luminai.messages(talk["id"]) if m["direction"] == "inbound"]

    assert accepted.status_code == 200
    assert refused.status_code == 422
    assert "X-Instance-Name" in refused.text
    assert stored == ["Oi"]


class Recorder(HttpBase):
    """Where the fake Evolution delivers its webhooks in the test below."""

    def handle(self, request: RecordedRequest) -> JsonResponse | None:
        return JsonResponse(200, {"success": True})


def test_what_2_4_sends_with_its_headers_is_accepted() -> None:
    with FakeEvolutionApi(version="2.4.0") as evolution, Recorder() as recorder:
        evolution.add_instance(INSTANCE, "key")
        client = EvolutionClient()
        try:
            client.set_webhook(evolution.url, "key", INSTANCE, recorder.url + "/hook", trusted=True)
            client.send_text(evolution.url, "key", INSTANCE, LEAD, "Oi", trusted=True, message_id="3EB0X1")
            [delivered] = recorder.wait_for_requests(1, path_prefix="/hook")
        finally:
            client.close()
        with LuminaiHarness(evolution=evolution) as luminai:
            org = luminai.admin.create_organization("Acme")
            luminai.admin.create_agent(org, INSTANCE, token="secret")
            wanted = ("x-instance-id", "x-instance-name", "x-event-type", "x-timestamp")
            headers = {k: v for k, v in delivered.headers.items() if k in wanted}
            answer = luminai.post_webhook(delivered.json, headers={**headers, "X-Webhook-Token": "secret"})

    assert headers["x-instance-name"] == INSTANCE
    assert headers["x-event-type"] == "send.message"
    assert delivered.json["data"]["key"]["id"] == "3EB0X1"  # 2.4.0 keeps the caller's messageId
    assert answer.status_code == 200


# --- @lid addressing and history (Baileys service of 2.3.7 and 2.4.0-rc2) -------------------------------

LID = "207748159275123@lid"
PN = f"{LEAD}@s.whatsapp.net"


def upsert(key: dict[str, Any], event: str = "messages.upsert") -> dict[str, Any]:
    return {
        "event": event,
        "instance": INSTANCE,
        "data": {
            "key": {**key, "fromMe": False, "id": "3EB0A1"},
            "pushName": "Maria",
            "message": {"conversation": "Oi"},
            "messageType": "conversation",
            "messageTimestamp": 1796564831,
        },
    }


@pytest.mark.parametrize(
    "key",
    [
        # 2.3.6: the key as Baileys built it (`prepareMessage`: "Save key exactly as it comes from Baileys")
        {"remoteJid": LID, "remoteJidAlt": PN, "addressingMode": "lid"},
        # 2.3.7 whatsapp.baileys.service.ts:1478-1480: remoteJid := remoteJidAlt, addressingMode stays lid
        {"remoteJid": PN, "remoteJidAlt": PN, "addressingMode": "lid"},
        # 2.4.0-rc2 :1650-1657: remoteJid and remoteJidAlt swapped, addressingMode := pn
        {"remoteJid": PN, "remoteJidAlt": LID, "addressingMode": "pn"},
    ],
    ids=["2.3.6", "2.3.7", "2.4.0"],
)
def test_one_person_is_one_phone_whichever_version_rewrote_the_key(key: dict[str, Any]) -> None:
    event = parse_webhook(upsert(key))
    assert isinstance(event, MessageUpsert)
    assert (event.phone_jid, event.reply_jid) == (PN, PN)


def test_each_lid_spelling_reaches_one_contact_and_one_talk() -> None:
    keys = [
        {"remoteJid": LID, "remoteJidAlt": PN, "addressingMode": "lid"},
        {"remoteJid": PN, "remoteJidAlt": PN, "addressingMode": "lid"},
        {"remoteJid": PN, "remoteJidAlt": LID, "addressingMode": "pn"},
        {"remoteJid": PN},  # remoteJidAlt can be missing
    ]
    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        for n, key in enumerate(keys):
            body = upsert(key)
            body["data"]["key"]["id"] = f"3EB0LID{n}"
            assert luminai.post_webhook(body).status_code == 200
        luminai.drain()
        contacts, talks = luminai.admin.contacts(org), luminai.talks(org)
    assert len(contacts) == 1
    assert len(talks) == 1
    assert talks[0]["whatsappRemoteJid"] == PN


def test_history_sync_is_never_answered() -> None:
    """`messages.set` (2.3.6 :1025; 2.3.7 :1049 and 2.4.0-rc2 :1206 add isLatest/progress at the top
    level) carries an array of messages; `messaging-history.set` (2.4.0-rc2 :1226) only counts."""
    history = copy.deepcopy(upsert({"remoteJid": PN}, event="messages.set"))
    history["data"] = [history["data"]]
    history.update(isLatest=True, progress=100)
    done = {"event": "messaging-history.set", "instance": INSTANCE, "data": {"messageCount": 1}}
    for payload in (history, done):
        assert isinstance(parse_webhook(payload), IgnoredEvent)
    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        answers = [luminai.post_webhook(p).status_code for p in (history, done)]
        luminai.drain()
        assert luminai.talks(org) == []
        assert luminai.replies() == []
    assert answers == [200, 200]


def test_a_contradicting_event_header_names_itself() -> None:
    from luminai_actors.evolution.headers import header_contradiction

    body = upsert({"remoteJid": PN})
    found = header_contradiction({"X-Event-Type": "send.message"}, body)
    assert isinstance(found, PayloadError)
    assert found.path == "X-Event-Type"
    assert header_contradiction({"X-Event-Type": "MESSAGES_UPSERT"}, body) is None
    assert header_contradiction({"X-Timestamp": "yesterday"}, body) is not None
