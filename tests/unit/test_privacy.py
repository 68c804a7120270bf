"""A person's data: the export is everything held, the erasure leaves no row and sends nothing afterwards, a
later message starts a fresh contact, and an erased person who had opted out is never written to again.

These run on the harness's SQLite file; tests/integration/test_privacy_postgres.py runs the same functions
on PostgreSQL (with the fast ingest path, whose remembered conversations the erasure must evict).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from sqlalchemy import func, or_, select

from luminai_actors.config import Settings
from luminai_actors.domain.phone import normalize_phone
from luminai_actors.persistence.tables import (
    AuditLog,
    Base,
    Contact,
    ServiceSecret,
    SuppressedNumber,
    Talk,
    TalkMessage,
)
from luminai_actors.services.privacy import SuppressionList, number_hash, number_identities
from luminai_actors.testing import FakeEvolutionApi, LuminaiHarness

FLOW = {
    "name": "Q",
    "steps": [{"id": "need", "question": "What do you need?"}, {"id": "when", "question": "When?"}],
}
PHONE = "5511987654321"
PHONE_WITHOUT_NINTH_DIGIT = "551187654321"  # the same Brazilian mobile as WhatsApp sometimes spells it
OTHER_PHONE = "5511912345678"
REFERENCING = ("contact_id", "talk_id", "from_contact_id")


def _agent(luminai: LuminaiHarness, instance: str = "acme") -> str:
    org = luminai.admin.create_organization("Acme")
    flow = luminai.admin.create_tree_flow(org, FLOW)
    luminai.admin.create_agent(org, instance, tree_flow=flow)
    return org


def _contact_of(luminai: LuminaiHarness, org: str, phone: str) -> dict[str, Any]:
    e164 = normalize_phone(phone)
    (contact,) = [c for c in luminai.admin.contacts(org) if c["phone"] == e164]
    return contact


def _org_key(luminai: LuminaiHarness, org: str) -> dict[str, str]:
    created = luminai.admin.post(f"/api/admin/organizations/{org}/api-keys", {"name": "staff"})
    return {"Authorization": f"Bearer {created['key']}"}


def _operator(luminai: LuminaiHarness) -> dict[str, str]:
    return {"Authorization": f"Bearer {luminai.settings.admin_token}"}


def _rows_referencing(luminai: LuminaiHarness, contact_id: str, talk_ids: list[str]) -> dict[str, int]:
    """Rows of every table that reference the contact or one of its talks (by a referencing column, or as
    the contact's or talk's own row)."""
    person, talks = uuid.UUID(contact_id), [uuid.UUID(t) for t in talk_ids]
    counts: dict[str, int] = {}
    with luminai.container.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            conditions = []
            for name in REFERENCING:
                if name in table.c:
                    column = table.c[name]
                    conditions.append(column == person if name != "talk_id" else column.in_(talks))
            if table.name == "contact":
                conditions.append(table.c.id == person)
            if table.name == "talk":
                conditions.append(table.c.id.in_(talks))
            if conditions:
                query = select(func.count()).select_from(table).where(or_(*conditions))
                counts[table.name] = int(connection.scalar(query) or 0)
    return counts


def _audit(luminai: LuminaiHarness, action: str) -> list[AuditLog]:
    with luminai.container.uow() as uow:
        assert uow.session is not None
        return list(uow.session.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_the_export_is_everything_held_about_the_person_and_is_audited(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    luminai.say("acme", "Oi")
    luminai.drain()
    luminai.say("acme", "I need a new roof")
    luminai.drain()
    contact = _contact_of(luminai, org, PHONE)
    answer = luminai.client.get(f"/api/admin/contacts/{contact['id']}/export", headers=_operator(luminai))
    assert answer.status_code == 200
    document = answer.json()
    assert document["contact"] == contact
    assert document["contact"]["phone"] == "+5511987654321"
    (talk,) = document["talks"]
    assert talk["contactId"] == contact["id"]
    assert talk["talkFlow"] == luminai.admin.talk(talk["id"])["talkFlow"]
    assert talk["talkFlow"]["collected"]  # the fields collected from the person
    assert talk["messages"] == luminai.admin.messages(talk["id"])
    assert [m["body"] for m in talk["messages"] if m["direction"] == "inbound"] == ["Oi", "I need a new roof"]
    assert all("metadata" in m for m in talk["messages"])
    assert len([m for m in talk["messages"] if m["direction"] == "outbound"]) == 2
    assert document["messagesInSharedChats"] == []
    (entry,) = _audit(luminai, "contact.export")
    assert (str(entry.entity_id), entry.actor, entry.before, entry.after) == (
        contact["id"],
        "operator",
        None,
        None,
    )


def test_an_organization_key_exports_and_erases_only_its_own_contacts(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    other = luminai.admin.create_organization("Other")
    luminai.say("acme", "Oi")
    luminai.drain()
    contact_id = _contact_of(luminai, org, PHONE)["id"]
    outsider, staff = _org_key(luminai, other), _org_key(luminai, org)
    for path, method in (
        (f"/api/admin/contacts/{contact_id}/export", "GET"),
        (f"/api/admin/contacts/{contact_id}", "DELETE"),
    ):
        assert luminai.client.request(method, path, headers=outsider).status_code == 404
        assert luminai.client.request(method, path).status_code == 401
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        assert luminai.client.get(f"/api/admin/contacts/{missing}/export", headers=staff).status_code == 404
        assert luminai.client.delete(f"/api/admin/contacts/{missing}", headers=staff).status_code == 404
    assert luminai.admin.contacts(org)  # nothing was erased by the refused calls
    assert luminai.client.get(f"/api/admin/contacts/{contact_id}/export", headers=staff).status_code == 200
    assert luminai.client.delete(f"/api/admin/contacts/{contact_id}", headers=staff).status_code == 204
    (entry,) = _audit(luminai, "contact.erase")
    assert entry.actor.startswith("key:")
    assert str(entry.organization_id) == org


def test_the_erasure_leaves_no_row_referencing_the_person(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    luminai.say("acme", "Oi")
    luminai.say("acme", "Oi", phone=OTHER_PHONE)
    luminai.drain()
    luminai.say("acme", "I need a new roof")
    luminai.drain()
    contact_id = _contact_of(luminai, org, PHONE)["id"]
    kept_id = _contact_of(luminai, org, OTHER_PHONE)["id"]
    talk_ids = [t["id"] for t in luminai.talks(org) if t["contactId"] == contact_id]
    kept_talks = [t["id"] for t in luminai.talks(org) if t["contactId"] == kept_id]
    before = _rows_referencing(luminai, contact_id, talk_ids)
    assert before["talk_message"] == 4
    assert before["talk"] == 1
    assert before["talk_agent"] == 1
    kept = _rows_referencing(luminai, kept_id, kept_talks)
    answer = luminai.client.delete(f"/api/admin/contacts/{contact_id}", headers=_operator(luminai))
    assert answer.status_code == 204
    after = _rows_referencing(luminai, contact_id, talk_ids)
    assert {"contact", "talk", "talk_agent", "talk_message"} <= set(after)
    assert set(after.values()) == {0}, after
    assert _rows_referencing(luminai, kept_id, kept_talks) == kept  # nobody else's data went with it
    (entry,) = _audit(luminai, "contact.erase")
    assert entry.before == {"messages": 4, "talks": 1, "suppressed": False}
    assert entry.after is None
    assert "98765" not in str(entry.before)
    assert (
        luminai.client.delete(f"/api/admin/contacts/{contact_id}", headers=_operator(luminai)).status_code
        == 404
    )
    with luminai.container.uow() as uow:
        assert uow.session is not None
        assert uow.session.scalar(select(func.count()).select_from(SuppressedNumber)) == 0


def test_a_send_queued_before_the_erasure_never_reaches_evolution(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    closed = {"event": "connection.update", "instance": "acme", "data": {"state": "close"}}
    assert luminai.post_webhook(closed).status_code == 200
    luminai.say("acme", "Oi")
    luminai.drain()
    (talk,) = luminai.talks(org)
    (reply,) = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
    assert reply["sendStatus"] == "pending"  # waiting for the instance to reconnect
    assert luminai.evolution.sendtext_attempts("acme") == []
    luminai.container.dispatcher.request_ai_turn(uuid.UUID(talk["id"]), delay=0)
    contact_id = talk["contactId"]
    assert (
        luminai.client.delete(f"/api/admin/contacts/{contact_id}", headers=_operator(luminai)).status_code
        == 204
    )
    # The instance reconnects (which resumes its waiting sends), and the send and AI-turn tasks queued for
    # the erased rows run: they find nothing, fail nothing and send nothing.
    opened = {"event": "connection.update", "instance": "acme", "data": {"state": "open"}}
    assert luminai.post_webhook(opened).status_code == 200
    luminai.container.dispatcher.request_send(uuid.UUID(reply["id"]))
    luminai.container.dispatcher.request_ai_turn(uuid.UUID(talk["id"]))
    luminai.drain()
    assert luminai.evolution.sendtext_attempts("acme") == []
    assert luminai.queues().get("send.XQ", 0) == 0
    assert luminai.queues().get("ai.XQ", 0) == 0
    assert set(_rows_referencing(luminai, contact_id, [talk["id"]]).values()) == {0}


def test_a_later_message_from_the_number_starts_a_fresh_contact_and_talk(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    luminai.say("acme", "Oi")
    luminai.drain()
    luminai.say("acme", "I need a new roof")  # on PostgreSQL: appended to the open talk by one statement
    luminai.drain()
    old = _contact_of(luminai, org, PHONE)
    (old_talk,) = luminai.talks(org)
    assert (
        luminai.client.delete(f"/api/admin/contacts/{old['id']}", headers=_operator(luminai)).status_code
        == 204
    )
    replies = len(luminai.replies("acme"))
    assert luminai.say("acme", "Oi again").status_code == 200
    luminai.drain()
    fresh = _contact_of(luminai, org, PHONE)
    (talk,) = luminai.talks(org)
    assert fresh["id"] != old["id"]
    assert talk["id"] != old_talk["id"]
    assert talk["contactId"] == fresh["id"]
    assert talk["talkFlow"]["collected"] == {}  # nothing collected before the erasure came back
    assert [m["body"] for m in luminai.messages(talk["id"]) if m["direction"] == "inbound"] == ["Oi again"]
    assert len(luminai.replies("acme")) == replies + 1  # not opted out: answered as a new lead


def test_an_erased_person_who_opted_out_is_never_written_to_again(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    luminai.say("acme", "Oi")
    luminai.drain()
    luminai.say("acme", "pare")
    luminai.drain()
    person = _contact_of(luminai, org, PHONE)
    assert person["optedOutAt"] is not None
    assert (
        luminai.client.delete(f"/api/admin/contacts/{person['id']}", headers=_operator(luminai)).status_code
        == 204
    )
    with luminai.container.uow() as uow:
        assert uow.session is not None
        hashes = list(uow.session.scalars(select(SuppressedNumber.number_hash)))
        key = uow.session.scalar(select(ServiceSecret.value).where(ServiceSecret.name == "suppression_key"))
    assert key is not None
    assert hashes == [number_hash(key.encode(), "phone:+5511987654321")]  # a keyed hash, not the number
    (entry,) = _audit(luminai, "contact.erase")
    assert entry.before == {"messages": 4, "talks": 1, "suppressed": True}
    replies = luminai.replies("acme")
    # The same number, in the spelling without the ninth digit, writes again: stored, never answered.
    assert luminai.say("acme", "Oi, sou eu de novo", phone=PHONE_WITHOUT_NINTH_DIGIT).status_code == 200
    luminai.drain()
    assert luminai.say("acme", "Hello?", phone=PHONE).status_code == 200
    luminai.drain()
    (talk,) = luminai.talks(org)
    bodies = [(m["direction"], m["body"]) for m in luminai.messages(talk["id"])]
    assert bodies == [("inbound", "Oi, sou eu de novo"), ("inbound", "Hello?")]
    assert all(m["processedAt"] is not None for m in luminai.messages(talk["id"]))
    assert luminai.replies("acme") == replies
    fresh = luminai.admin.contacts(org)
    assert len(fresh) == 1
    assert fresh[0]["id"] != person["id"]
    assert fresh[0]["optedOutAt"] is not None
    # Someone else is still answered.
    luminai.say("acme", "Oi", phone=OTHER_PHONE)
    luminai.drain()
    assert len(luminai.replies("acme")) == len(replies) + 1


def test_numbers_are_hashed_in_one_canonical_spelling() -> None:
    assert number_identities("+5511987654321", None, None) == number_identities("+551187654321", None, None)
    assert number_identities("+5511987654321", "+551187654321", "123456789") == [
        "lid:123456789",
        "phone:+5511987654321",
    ]
    assert number_identities(None, None, None) == []


def test_the_configured_key_is_used_and_a_generated_one_is_made_once(luminai: LuminaiHarness) -> None:
    assert Settings.from_env({"LUMINAI_SUPPRESSION_KEY": "k3y"}).suppression_key == "k3y"
    assert Settings.from_env({}).suppression_key is None
    configured = SuppressionList(luminai.container.uow, "k3y")
    assert configured.key() == b"k3y"
    expected = hmac.new(b"k3y", b"phone:+5511987654321", hashlib.sha256).hexdigest()
    assert number_hash(b"k3y", "phone:+5511987654321") == expected
    first, second = SuppressionList(luminai.container.uow, None), SuppressionList(luminai.container.uow, None)
    made = first.key()
    assert made is not None
    assert len(made) == 64
    assert second.key() == made  # the second process reads the key the first one stored
    with luminai.container.uow() as uow:
        assert uow.session is not None
        assert uow.session.scalar(select(func.count()).select_from(ServiceSecret)) == 1


def test_the_erasure_removes_the_persons_messages_in_shared_chats(
    luminai_settings: Settings | None, fake_evolution: FakeEvolutionApi
) -> None:
    with LuminaiHarness(luminai_settings, evolution=fake_evolution, ignore_groups=False) as luminai:
        _erase_with_a_group_message(luminai)


def _erase_with_a_group_message(luminai: LuminaiHarness) -> None:
    org = _agent(luminai)
    luminai.say("acme", "Oi")
    luminai.drain()
    person = _contact_of(luminai, org, PHONE)
    group = luminai.message("acme", "hello group")
    group["data"]["key"]["remoteJid"] = "120363000000000001@g.us"
    group["data"]["key"]["participant"] = PHONE + "@s.whatsapp.net"
    assert luminai.post_webhook(group).status_code == 200
    luminai.drain()
    with luminai.container.uow() as uow:
        assert uow.session is not None
        in_group = uow.session.scalars(
            select(TalkMessage.body)
            .join(Talk, Talk.id == TalkMessage.talk_id)
            .join(Contact, Contact.id == Talk.contact_id)
            .where(Contact.whatsapp_jid.is_not(None), TalkMessage.from_contact_id == uuid.UUID(person["id"]))
        ).all()
    assert in_group == ["hello group"]
    exported = luminai.client.get(f"/api/admin/contacts/{person['id']}/export", headers=_operator(luminai))
    assert [m["body"] for m in exported.json()["messagesInSharedChats"]] == ["hello group"]
    assert (
        luminai.client.delete(f"/api/admin/contacts/{person['id']}", headers=_operator(luminai)).status_code
        == 204
    )
    assert set(_rows_referencing(luminai, person["id"], []).values()) == {0}
    assert any(c["whatsappJid"] == "120363000000000001@g.us" for c in luminai.admin.contacts(org))
