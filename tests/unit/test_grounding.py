"""Grounded extraction (issue 20): a value a brain extracted is kept only when the lead's words support it,
the brain is asked for the current step only, and a later answer corrects an earlier one."""

from __future__ import annotations

from typing import Any

import pytest

from luminai_actors.domain.grounding import ground, supported
from luminai_actors.testing import LuminaiHarness

SIZE = {"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}
GREETING = "Oi, boa tarde! Vi o anúncio"


@pytest.mark.parametrize(
    ("field", "value", "text", "asked", "expected"),
    [
        ({"name": "budget", "type": "number"}, 1000, GREETING, False, False),
        ({"name": "budget", "type": "number"}, 5000, "uns 5 mil por mês", True, True),
        ({"name": "budget", "type": "number"}, 5000, "tenho 5000", False, True),
        ({"name": "wants_meeting", "type": "boolean"}, True, GREETING, False, False),
        ({"name": "wants_meeting", "type": "boolean"}, True, "adoraria!", True, True),
        ({"name": "wants_meeting", "type": "boolean"}, True, "não, obrigado", True, False),
        ({"name": "wants_meeting", "type": "boolean"}, False, "não, obrigado", True, True),
        ({"name": "wants_meeting", "type": "boolean"}, True, "sim, pode ser terça", True, True),
        ({"name": "company"}, "Acme Corp", GREETING, False, False),
        ({"name": "company"}, "Padaria Pão Quente", "trabalho na padaria pao quente", False, True),
        ({"name": "company"}, "Padaria do Zé", "uma padaria", True, False),
        ({"name": "name"}, "Maria Souza", "sou a maria souza", False, True),
        ({"name": "name"}, "Oi, boa tarde!", GREETING, True, False),  # small talk is never a value
        ({"name": "name"}, "tudo bem", "tudo bem?", True, False),
        ({"name": "name"}, "alves.com", "pedro@alves.com", True, False),  # a name has no web address
        ({"name": "name"}, "john@smith.io", "john@smith.io", True, False),
        ({"name": "email", "type": "email"}, "ana@tiny.io", "meu email: Ana@Tiny.io", False, True),
        ({"name": "email", "type": "email"}, "ana@tiny.io", "pode anotar", True, False),
        ({"name": "phone", "type": "phone"}, "+5511987654321", "me liga no 11 98765-4321", False, True),
        ({"name": "phone", "type": "phone"}, "+5511987654321", "me liga", True, False),
        (SIZE, "11-50", "somos uns 30", True, True),
        (SIZE, "11-50", "somos uns 30", False, False),
        (SIZE, "51+", "mais de 200 pessoas", True, True),
        (SIZE, "1-10", "1-10", False, True),
        ({"name": "day", "type": "date"}, "2026-12-08", "amanhã", True, True),
        ({"name": "day", "type": "date"}, "2026-12-08", GREETING, False, False),
    ],
)
def test_a_value_is_supported_only_by_the_leads_own_words(
    field: dict[str, Any], value: Any, text: str, asked: bool, expected: bool
) -> None:
    assert supported(field, value, text, asked=asked) is expected


def test_ground_drops_guesses_and_keeps_refusable_attempts() -> None:
    fields = [{"name": "email", "type": "email"}, {"name": "budget", "type": "number"}, SIZE]
    kept, dropped = ground(
        fields,
        {"email": "not-an-email", "budget": "1000", "company_size": "sim", "other": 1},
        "Sou a Maria, email not-an-email",
        asked="name",
        region="BR",
    )
    assert kept == {"email": "not-an-email"}  # written by the lead: refused and asked again
    assert dropped == {"budget": "1000", "company_size": "sim"}


FLOW = {
    "name": "Vendas",
    "language": "pt",
    "steps": [
        {
            "id": "contact",
            "fields": [
                {"name": "name", "question": "Com quem eu falo?"},
                {"name": "email", "type": "email", "question": "Qual é o seu e-mail?"},
            ],
        },
        {"id": "size", "fields": [dict(SIZE, question="Quantas pessoas trabalham na empresa?")]},
        {
            "id": "meeting",
            "fields": [
                {"name": "wants_meeting", "type": "boolean", "question": "Podemos marcar uma conversa?"}
            ],
            "transitions": [
                {"when": {"field": "wants_meeting", "equals": True}, "outcome": "meeting_requested"}
            ],
        },
    ],
}


def test_invented_values_from_a_model_are_not_kept_and_a_later_answer_corrects_an_earlier_one() -> None:
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        fake = luminai.openai
        assert fake is not None
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, FLOW))
        # a greeting: the model invents a name, an e-mail and (not even asked for) a meeting
        fake.script(
            {"name": "Carlos", "email": "carlos@acme.com", "wants_meeting": True, "optOut": False},
            "Olá! Com quem eu falo?",
        )
        luminai.say("acme", GREETING, message_id="3EB0G1")
        luminai.drain()
        [talk] = luminai.talks(org)
        first = luminai.admin.talk(talk["id"])["talkFlow"]
        [reply] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
        asked_schema = fake.chat_requests()[0]["response_format"]["json_schema"]["schema"]
        fake.script({"name": "Maria", "email": "maria@tiny.io", "optOut": False}, "Obrigada, Maria!")
        luminai.say("acme", "Maria, maria@tiny.io", message_id="3EB0G2")
        luminai.drain()
        # two steps later the lead corrects the e-mail: taken from their words, no model needed
        fake.script({"company_size": None, "optOut": False}, "Quantas pessoas?")
        luminai.say("acme", "ops, o certo é maria@tiny.com.br", message_id="3EB0G3")
        luminai.drain()
        last = luminai.admin.talk(talk["id"])["talkFlow"]

    assert set(asked_schema["properties"]) == {"name", "email", "optOut"}  # the current step only
    assert first["collected"] == {}
    assert first["status"] == "active"
    assert reply["metadata"]["ai"]["ungrounded"] == {"name": "Carlos", "email": "carlos@acme.com"}
    assert last["collected"]["name"]["value"] == "Maria"
    assert last["collected"]["email"]["value"] == "maria@tiny.com.br"
    assert last["currentStepId"] == "size"
