"""The seed's manual Tests 1-5, automated against the real service and worker on PostgreSQL + Redis.

Evolution API and the LLM are local fake servers speaking their real protocols; the service reaches the
fake OpenAI server through the real openai client (OPENAI_BASE_URL).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

import pytest

from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI
from tests.e2e.conftest import Admin, Db, Service, text_message, wait_until

pytestmark = pytest.mark.e2e

LEAD = "+5511999999999"


def _outbound(db: Db, talk_id: object) -> list[dict[str, object]]:
    return db.rows(
        "SELECT * FROM talk_message WHERE talk_id = :t AND direction = 'outbound' ORDER BY created_at",
        t=talk_id,
    )


def test_new_contact_creates_contact_talk_and_replies_through_sendtext(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, openai_server: FakeOpenAI, db: Db
) -> None:
    openai_server.script({"need": None, "budget": None, "optOut": False}, "Olá John! O que você procura?")
    service = start_service(
        {
            "OPENAI_API_KEY": "sk-e2e",
            "OPENAI_BASE_URL": openai_server.url + "/v1",
            "LUMINAI_AI_MODEL": "fake-gpt",
            "LUMINAI_AI_ONE_CALL": "false",  # the scripted reply is written by a second call
        }
    )
    admin = Admin(service)
    org, agent = admin.setup_agent(evolution, "sdr-agent-1")

    response = service.post_webhook(text_message("sdr-agent-1", LEAD, "I'm interested in your product"))

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Webhook processed"}
    # 200 means committed: the inbound message is already in the database.
    inbound = db.one("SELECT * FROM talk_message WHERE direction = 'inbound'")
    assert inbound["body"] == "I'm interested in your product"
    assert inbound["metadata"]["whatsappMessageId"] == inbound["whatsapp_message_id"]
    assert inbound["metadata"]["instanceName"] == "sdr-agent-1"
    assert inbound["metadata"]["remoteJid"] == "5511999999999@s.whatsapp.net"
    assert inbound["metadata"]["pushName"] == "John Doe"

    [request] = evolution.wait_for_requests(1, timeout=20, path_prefix="/message/sendText")
    assert request.path == "/message/sendText/sdr-agent-1"
    assert request.headers["apikey"] == "key-sdr-agent-1"
    assert request.json == {"number": "5511999999999", "text": "Olá John! O que você procura?"}

    contact = db.one("SELECT * FROM contact WHERE organization_id = :o", o=org)
    assert contact["email"] is None
    assert contact["lead_source"] == "WhatsApp"
    assert contact["origin"] == "WhatsApp - Evolution API"
    assert (contact["phone"], contact["mobile_phone"]) == (LEAD, LEAD)
    assert (contact["name"], contact["first_name"], contact["last_name"]) == ("John Doe", "John", "Doe")
    talk = db.one("SELECT * FROM talk WHERE contact_id = :c", c=contact["id"])
    assert (talk["channel"], talk["status"]) == (2, 0)
    assert (
        db.one("SELECT agent_id FROM talk_agent WHERE talk_id = :t", t=talk["id"])["agent_id"]
        == talk["agent_id"]
    )
    assert talk["talk_flow"]["currentStepId"] == "need"

    outbound = wait_until(lambda: [m for m in _outbound(db, talk["id"]) if m["send_status"] == "sent"])
    [reply] = outbound
    assert str(reply["from_agent_id"]) == agent
    assert reply["channel"] == "whatsapp"
    assert reply["metadata"]["whatsappSent"] is True
    assert reply["metadata"]["whatsappAttempts"] == 1
    sent_id = evolution.sent_messages()[0]
    assert reply["metadata"]["whatsappMessageId"] == reply["whatsapp_message_id"]
    assert reply["metadata"]["whatsappResponse"]["message"]["conversation"] == sent_id["text"]
    assert isinstance(reply["delivered_at"], datetime)
    assert reply["metadata"]["ai"]["model"] == "fake-gpt"
    assert reply["metadata"]["ai"]["usage"]["totalTokens"] > 0

    # The real openai client sent the model, a system prompt with the agent prompt and the step, and history.
    [extraction, chat] = openai_server.chat_requests()
    schema = extraction["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"need", "optOut"}  # the current step's fields only
    assert extraction["messages"][-1] == {"role": "user", "content": "I'm interested in your product"}
    assert chat["model"] == "fake-gpt"
    system = chat["messages"][0]
    assert system["role"] == "system"
    assert "You are Sofia, a friendly SDR for Acme." in system["content"]
    assert "What are you looking for?" in system["content"]
    assert chat["messages"][-1] == {"role": "user", "content": "I'm interested in your product"}
    admin.close()


def test_returning_contact_continues_the_same_contact_and_talk(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    org, _ = admin.setup_agent(evolution, "sdr-agent-1")

    assert service.post_webhook(text_message("sdr-agent-1", LEAD, "Hello")).status_code == 200
    evolution.wait_for_requests(1, timeout=20, path_prefix="/message/sendText")
    assert service.post_webhook(text_message("sdr-agent-1", LEAD, "A CRM for my team")).status_code == 200
    evolution.wait_for_requests(2, timeout=20, path_prefix="/message/sendText")

    assert len(db.rows("SELECT id FROM contact")) == 1
    talk = db.one("SELECT * FROM talk")
    texts = wait_until(
        lambda: (
            [m["text"] for m in evolution.sent_messages()] if len(evolution.sent_messages()) == 2 else None
        )
    )
    assert texts == ["Hi John! I'm Sofia. What are you looking for?", "What budget do you have in mind?"]
    flow = wait_until(lambda: db.one("SELECT talk_flow FROM talk")["talk_flow"]["collected"].get("need"))
    assert flow["value"] == "A CRM for my team"
    messages = admin.get(f"/api/admin/talks/{talk['id']}/messages")
    assert [m["direction"] for m in messages] == ["inbound", "outbound", "inbound", "outbound"]
    assert {m["talkId"] for m in messages} == {str(talk["id"])}
    assert [c["id"] for c in admin.get(f"/api/admin/organizations/{org}/contacts")] == [
        str(talk["contact_id"])
    ]
    admin.close()


def test_two_organizations_with_the_same_phone_share_nothing(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    org_a, _ = admin.setup_agent(evolution, "org-a-sdr", org_name="Org A")
    org_b, _ = admin.setup_agent(evolution, "org-b-sdr", org_name="Org B")

    assert (
        service.post_webhook(text_message("org-a-sdr", LEAD, "Hello A", message_id="SAME1")).status_code
        == 200
    )
    assert (
        service.post_webhook(text_message("org-b-sdr", LEAD, "Hello B", message_id="SAME1")).status_code
        == 200
    )
    evolution.wait_for_requests(2, timeout=20, path_prefix="/message/sendText")

    contacts = db.rows("SELECT id, organization_id, phone FROM contact ORDER BY created_at")
    assert len(contacts) == 2
    assert {str(c["organization_id"]) for c in contacts} == {org_a, org_b}
    assert all(c["phone"] == LEAD for c in contacts)
    talks = db.rows("SELECT organization_id, contact_id FROM talk")
    assert len(talks) == 2
    for talk in talks:  # every talk belongs to its own organization's contact
        owner = next(c for c in contacts if c["id"] == talk["contact_id"])
        assert owner["organization_id"] == talk["organization_id"]
    a_contacts = admin.get(f"/api/admin/organizations/{org_a}/contacts")
    b_contacts = admin.get(f"/api/admin/organizations/{org_b}/contacts")
    assert len(a_contacts) == len(b_contacts) == 1
    assert a_contacts[0]["id"] != b_contacts[0]["id"]
    a_talks = admin.get(f"/api/admin/organizations/{org_a}/talks")
    a_bodies = [m["body"] for m in admin.get(f"/api/admin/talks/{a_talks[0]['id']}/messages")]
    assert "Hello A" in a_bodies
    assert "Hello B" not in a_bodies
    wait_until(
        lambda: len(evolution.sent_messages()) == 2
    )  # received is not yet answered: wait for both 201s
    assert sorted(m["_instance"] for m in evolution.sent_messages()) == ["org-a-sdr", "org-b-sdr"]
    admin.close()


def test_evolution_down_three_attempts_two_and_four_seconds_apart_then_failure_metadata(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, "sdr-agent-1")
    evolution.fail_next(3, status=500)

    response = service.post_webhook(text_message("sdr-agent-1", LEAD, "Hello"))
    assert response.status_code == 200

    attempts = evolution.wait_for_requests(3, timeout=30, path_prefix="/message/sendText")
    reply = wait_until(
        lambda: next(iter(db.rows("SELECT * FROM talk_message WHERE send_status = 'failed'")), None),
        timeout=15,
    )
    gaps = [later.received_at - earlier.received_at for earlier, later in itertools.pairwise(attempts)]
    assert len(evolution.sendtext_attempts()) == 3
    assert 1.8 <= gaps[0] <= 3.5, gaps
    assert 3.8 <= gaps[1] <= 5.5, gaps
    meta = reply["metadata"]
    assert meta["whatsappSent"] is False
    assert meta["whatsappAttempts"] == 3
    assert "500" in meta["whatsappError"]
    assert datetime.fromisoformat(meta["whatsappFailedAt"]).tzinfo is not None
    assert db.one("SELECT needs_human FROM talk")["needs_human"] is True
    # Nothing escaped: the service keeps taking webhooks and later sends succeed.
    assert service.post_webhook(text_message("sdr-agent-1", LEAD, "Still there?")).status_code == 200
    evolution.wait_for_requests(4, timeout=20, path_prefix="/message/sendText")
    wait_until(lambda: len(evolution.sent_messages()) == 1)
    admin.close()


def test_evolution_unreachable_records_connection_error_after_three_attempts(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service({"LUMINAI_SEND_BACKOFF_SECONDS": "0.2,0.4"})
    admin = Admin(service)
    admin.setup_agent(evolution, "sdr-agent-1")
    evolution.stop()  # connection refused from now on

    assert service.post_webhook(text_message("sdr-agent-1", LEAD, "Hello")).status_code == 200
    reply = wait_until(
        lambda: next(iter(db.rows("SELECT * FROM talk_message WHERE send_status = 'failed'")), None),
        timeout=20,
    )
    assert reply["metadata"]["whatsappAttempts"] == 3
    assert "cannot reach Evolution API" in reply["metadata"]["whatsappError"]
    admin.close()


def test_webhook_endpoint_answers_and_ignores_what_it_must(
    start_service: Callable[..., Service], evolution: FakeEvolutionApi, db: Db
) -> None:
    service = start_service()
    admin = Admin(service)
    admin.setup_agent(evolution, "sdr-agent-1")

    seed_test_5 = {
        "event": "messages.upsert",
        "instance": "sdr-agent-1",
        "data": {
            "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": "TEST123ABC"},
            "pushName": "Test User",
            "message": {"conversation": "This is a test message"},
            "messageTimestamp": 1699876543,
        },
    }
    first = service.post_webhook(seed_test_5)
    assert (first.status_code, first.json()) == (200, {"success": True, "message": "Webhook processed"})
    again = service.post_webhook(seed_test_5)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert len(db.rows("SELECT id FROM talk_message WHERE direction = 'inbound'")) == 1

    group = text_message("sdr-agent-1", LEAD, "hello group")
    group["data"]["key"]["remoteJid"] = "120363025123456789@g.us"
    group["data"]["key"]["participant"] = "5511999999999@s.whatsapp.net"
    unknown = text_message("no-such-instance", LEAD, "hello?")
    for payload in (group, unknown):
        response = service.post_webhook(payload)
        assert response.status_code == 200
        assert response.json()["success"] is True
        assert response.json()["ignored"]
    assert len(db.rows("SELECT id FROM talk_message WHERE direction = 'inbound'")) == 1
    assert len(db.rows("SELECT id FROM contact")) == 1
    # fromMe is no lead message: a person typed on the business phone. It is kept (as human outbound, the
    # bot pauses) but never answered and never makes a contact of its own.
    from_me = text_message("sdr-agent-1", LEAD, "typed on the phone")
    from_me["data"]["key"]["fromMe"] = True
    assert service.post_webhook(from_me).status_code == 200
    human = db.one("SELECT * FROM talk_message WHERE body = 'typed on the phone'")
    assert (human["direction"], human["from_agent_id"], human["metadata"]["human"]) == (
        "outbound",
        None,
        True,
    )
    assert db.one("SELECT paused FROM talk")["paused"] is True
    assert len(db.rows("SELECT id FROM contact")) == 1

    with service.client() as client:
        bad_json = client.post("/api/webhooks/whatsapp/evolution", content=b"{not json")
    assert bad_json.status_code == 400
    wrong_shape = service.post_webhook(
        {"event": "messages.upsert", "instance": "sdr-agent-1", "data": {"key": 1}}
    )
    assert wrong_shape.status_code == 422
    assert "data.key" in wrong_shape.json()["error"] or wrong_shape.json().get("path", "").startswith(
        "data.key"
    )
    admin.close()
