"""Exchanges captured from a real Evolution API 2.3.6 server, replayed through our webhook, inbound rules and
client (tests/fixtures/evolution_captures: one JSON file per exchange, its README says how they were made).

The server used Evolution's `EVOLUTION` channel, which passes `remoteJid` through as it came: a lead's
`remoteJid` may be a bare number, and `sendText`'s answer and the `send.message` echo always carry the bare
number we sent. Each of those is a phone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from luminai_actors.domain.inbound import sender_identity
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.tables import Agent, Talk, TalkMessage
from luminai_actors.testing import LuminaiHarness
from tests.support.fake_uow import FakeRepository, FakeUnitOfWork
from tests.unit.test_business_messages import reply_in_flight
from tests.unit.test_inbound_service import NOW, record, seed_agent

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evolution_captures"
INSTANCE = "evo-real"


def capture(number: int) -> dict[str, Any]:
    [path] = CAPTURES.glob(f"{number:03d}-*.json")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def webhooks() -> list[Path]:
    return sorted(CAPTURES.glob("*-evo2lum-*.json"))


def upsert_of(number: int) -> MessageUpsert:
    event = parse_webhook(capture(number)["request_body"])
    assert isinstance(event, MessageUpsert)
    return event


def test_the_captures_are_there() -> None:
    assert len(webhooks()) == 13


@pytest.mark.parametrize("path", webhooks(), ids=lambda p: p.name)
def test_every_captured_message_has_a_sender_we_can_answer(path: Path) -> None:
    event = parse_webhook(json.loads(path.read_text(encoding="utf-8"))["request_body"])
    assert isinstance(event, MessageUpsert)
    phone, lid = sender_identity(event)
    assert phone is not None or lid is not None
    assert event.reply_jid.endswith(("@s.whatsapp.net", "@lid"))


def test_a_bare_number_lead_is_stored_and_answered_at_its_number() -> None:
    bare = capture(36)["request_body"]  # remoteJid "5511977776666": answered "ignored" before
    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        response = luminai.post_webhook(bare)
        luminai.drain()
        [talk] = luminai.talks(org)
        [contact] = luminai.admin.contacts(org)
        [sent] = luminai.evolution.sent_messages()

    assert response.status_code == 200
    assert "ignored" not in response.json()
    assert response.headers["X-Luminai-Message-Id"]
    assert talk["whatsappRemoteJid"] == "5511977776666@s.whatsapp.net"
    assert contact["phone"] == "+5511977776666"
    assert sent["number"] == "5511977776666"


def test_our_reply_echoed_with_the_bare_number_is_matched_not_stored_as_a_person() -> None:
    """The echo (capture 006) of a reply (capture 005) comes back with `remoteJid` "5511988887777"."""
    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        luminai.post_webhook(capture(4)["request_body"])
        luminai.drain()
        [talk] = luminai.talks(org)
        [ours] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
        echo = capture(6)["request_body"]
        echo["data"]["key"]["id"] = ours["whatsappMessageId"]
        echo["data"]["message"]["conversation"] = ours["body"]
        response = luminai.post_webhook(echo)
        luminai.drain()
        [after] = luminai.talks(org)
        stored = luminai.messages(talk["id"])

    assert response.json().get("duplicate") is True
    assert len([m for m in stored if m["direction"] == "outbound"]) == 1
    assert after["paused"] is False


def test_an_echo_that_overtakes_the_commit_of_our_reply_settles_it() -> None:
    """The crash window: Evolution's echo arrives before the sender recorded the reply's WhatsApp id."""
    repo = FakeRepository(clock=lambda: NOW)
    uow = FakeUnitOfWork(repo)
    agent = seed_agent(repo, instance=INSTANCE)
    record(uow, upsert_of(4))
    [talk] = repo.rows(Talk)
    echo = upsert_of(6)
    ours = reply_in_flight(repo, talk, agent, echo.content.text, "sending")

    outcome = record(uow, echo)

    assert (outcome.status, outcome.message_id) == ("duplicate", ours.id)
    assert ours.whatsapp_message_id == "3ceb5242-b8bf-4922-9ec5-b7268580fe05"
    assert ours.send_status == "sent"
    assert len(repo.rows(TalkMessage)) == 2
    assert isinstance(agent, Agent)
