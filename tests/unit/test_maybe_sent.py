"""A reply whose sendText may have gone out is not sent twice (`services.maybe_sent`).

Evolution slower than our timeout, or a worker killed mid-call, leaves the reply unsettled although
Evolution may have sent it. On 2.3.x the next attempt first looks for it (`/chat/findMessages`); on 2.4.0
the resend carries the first attempt's `messageId`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from luminai_actors.persistence.tables import SEND_SENDING, TalkMessage
from luminai_actors.testing import FakeEvolutionApi, LuminaiHarness

INSTANCE = "acme"
FAST = {"evolution_timeout_seconds": 0.3, "send_backoff_seconds": (0.05,)}


def reply_of(luminai: LuminaiHarness, org: str) -> dict[str, Any]:
    [talk] = luminai.talks(org)
    [reply] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
    return reply


def searches(evolution: FakeEvolutionApi) -> int:
    return len([r for r in evolution.requests if r.path.startswith("/chat/findMessages/")])


def test_a_send_answered_after_our_timeout_is_found_not_sent_again_on_2_3() -> None:
    with LuminaiHarness(**FAST) as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        luminai.evolution.answer_late_next(1, 1.0)  # sent at once, answered after our 0.3 s timeout
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        reply = reply_of(luminai, org)
        [sent] = luminai.evolution.sent_messages()
        attempts = len(luminai.evolution.sendtext_attempts(INSTANCE))
        found = searches(luminai.evolution)

    assert attempts == 1  # the second attempt found it instead of sending it
    assert found >= 1
    assert sent["text"] == reply["body"]
    assert reply["sendStatus"] == "sent"
    assert reply["metadata"]["whatsappResponse"]["foundBy"] == "findMessages"
    assert reply["whatsappMessageId"] == reply["metadata"]["whatsappResponse"]["key"]["id"]


def test_a_send_that_never_reached_whatsapp_is_sent_again_after_looking() -> None:
    with LuminaiHarness(**FAST) as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        luminai.evolution.drop_next(1)  # the connection closes before any answer: nothing was sent
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        reply = reply_of(luminai, org)
        sent = luminai.evolution.sent_messages()
        found = searches(luminai.evolution)

    assert found >= 1
    assert len(sent) == 1
    assert (reply["sendStatus"], reply["sendAttempts"]) == ("sent", 2)


def test_an_answer_that_is_an_error_needs_no_search() -> None:
    with LuminaiHarness(**FAST) as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        luminai.evolution.fail_next(1)  # a 500: Evolution said it did not send
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        reply = reply_of(luminai, org)
        found = searches(luminai.evolution)
    assert found == 0
    assert (reply["sendStatus"], reply["sendAttempts"]) == ("sent", 2)


def test_on_2_4_the_resend_after_a_timeout_carries_the_first_attempts_id_and_needs_no_search() -> None:
    with LuminaiHarness(evolution=FakeEvolutionApi(version="2.4.0"), **FAST) as luminai:
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        luminai.admin.post(f"/api/admin/agents/{agent_id}/whatsapp/test-connection", expect=200)
        luminai.evolution.answer_late_next(1, 1.0)
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        ids = [r.json["messageId"] for r in luminai.evolution.sendtext_attempts(INSTANCE)]
        found = searches(luminai.evolution)
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert found == 0


def test_a_reply_whose_worker_died_mid_call_is_looked_for_before_it_is_sent_again() -> None:
    with LuminaiHarness(**FAST) as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE)
        luminai.say(INSTANCE, "Oi")
        luminai.drain()
        reply = reply_of(luminai, org)
        # Play the crash: Evolution sent it, our worker died before recording it (still `sending`, an
        # expired lease, the attempt's start in its metadata).
        started = datetime.now(UTC) - timedelta(seconds=5)
        with luminai.container.uow() as uow:
            message = uow.repo.get_for_update(TalkMessage, uuid.UUID(reply["id"]))
            assert message is not None
            message.send_status = SEND_SENDING
            message.send_lease_until = started
            message.whatsapp_message_id = None
            message.meta = {"whatsappAttempts": 1, "whatsappLastAttemptAt": started.isoformat()}
            uow.commit()
        luminai.container.dispatcher.request_send(message.id)
        luminai.drain()
        after = reply_of(luminai, org)
        attempts = len(luminai.evolution.sendtext_attempts(INSTANCE))

    assert attempts == 1  # the one before the "crash"; the takeover found it
    assert after["sendStatus"] == "sent"
    assert after["metadata"]["whatsappMaybeSentAt"] == started.isoformat()
    assert after["metadata"]["whatsappResponse"]["foundBy"] == "findMessages"
