"""What the service writes itself around the script is in the script's language (`domain.language`): a
Portuguese TreeFlow gets Portuguese greetings, refusals, default questions and closings, never English."""

from __future__ import annotations

from typing import Any

import pytest

from luminai_actors.domain.language import guess, reply_language
from luminai_actors.errors import ValidationError
from luminai_actors.testing import LuminaiHarness

INSTANCE = "acme"
PORTUGUESE = {
    "name": "Qualificação",
    "steps": [
        {"id": "email", "fields": [{"name": "email", "type": "email", "question": "Qual é o seu e-mail?"}]},
        {"id": "size", "fields": [{"name": "company_size", "type": "number", "description": "tamanho"}]},
    ],
}


def conversation(flow: dict[str, Any], *texts: str) -> list[str]:
    with LuminaiHarness() as luminai:
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, INSTANCE, tree_flow=luminai.admin.create_tree_flow(org, flow))
        for n, text in enumerate(texts):
            luminai.say(INSTANCE, text, message_id=f"3EB0L{n}", push_name="Maria")
            luminai.drain()
        return luminai.replies(INSTANCE)


def test_a_portuguese_script_is_answered_in_portuguese_only() -> None:
    replies = conversation(PORTUGUESE, "Oi, tenho interesse", "maria@acme", "maria@acme.com.br", "12")

    assert replies == [
        "Olá Maria! Sou SDR. Qual é o seu e-mail?",
        "Desculpe, 'maria@acme' não é um e-mail válido. Qual é o seu e-mail?",
        "Qual é o seu tamanho?",
        "Obrigado! Já tenho tudo de que preciso. Alguém do nosso time vai retornar em breve.",
    ]


def test_a_script_that_names_its_language_gets_it() -> None:
    flow = {"name": "Q", "language": "es-AR", "steps": [{"id": "q", "question": "Budget?"}]}
    assert conversation(flow, "Hola") == ["¡Hola Maria! Soy SDR. Budget?"]


def test_an_english_script_stays_english_whoever_writes() -> None:
    flow = {"name": "Q", "steps": [{"id": "q", "question": "What is your budget?"}]}
    assert conversation(flow, "Oi, quero agendar") == ["Hi Maria! I'm SDR. What is your budget?"]


def test_the_opt_out_confirmation_follows_the_words_of_the_request() -> None:
    flow = {"name": "Q", "steps": [{"id": "q", "question": "What is your budget?"}]}
    replies = conversation(flow, "Oi", "PARE")
    assert replies[-1] == "Entendido — você não receberá mais mensagens nossas. Até mais!"


@pytest.mark.parametrize(
    ("configured", "definition", "expected"),
    [
        ("pt-BR", {}, "pt"),
        ("ES", {}, "es"),
        ("fr", PORTUGUESE, "pt"),  # not one we write: the script decides
        (None, {"steps": [{"question": "Quantas pessoas trabalham na sua empresa?"}]}, "pt"),
        (None, {"steps": [{"question": "¿Cuántas personas trabajan en su empresa?"}]}, "es"),
        (None, {"steps": [{"question": "Budget?"}]}, "en"),
    ],
)
def test_reply_language(configured: str | None, definition: dict[str, Any], expected: str) -> None:
    assert reply_language(configured, definition) == expected


def test_guess_needs_a_clear_winner() -> None:
    assert guess(["Oi, tudo bem?"]) == "pt"
    assert guess(["12345"]) is None


def test_a_treeflow_language_we_do_not_write_is_refused_naming_the_field() -> None:
    from luminai_actors.domain.treeflow import validate_definition

    with pytest.raises(ValidationError) as refused:
        validate_definition({"name": "Q", "language": "fr", "steps": [{"id": "q", "question": "?"}]})
    assert refused.value.field == "language"
