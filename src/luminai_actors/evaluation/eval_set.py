"""The eval set: 31 scripted conversations (Portuguese and English) with what they must end with.

Each conversation is held through the whole service against one of two scripts (`FLOWS`): contact details,
company size (1-10 ends the talk `disqualified`), monthly budget, and a meeting (yes: `meeting_requested`,
no: `qualified`). They cover what leads really write: one answer per message, several answers in one
message, words instead of the script's values ("uns 30", "10k", "pode ser"), typos, corrections, refusals,
opt-outs, and a lead who only greets (nothing may be collected from a greeting).

`expect` is the exact set of collected values at the end (nothing more: an extra value is an invented one);
`outcome` is the talk's outcome, None while the script is still running; `opted_out` whether the contact
must end opted out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _flow(language: str, texts: dict[str, str]) -> dict[str, Any]:
    return {
        "name": texts["name"],
        "language": language,
        "objective": texts["objective"],
        "steps": [
            {
                "id": "contact",
                "name": texts["contact"],
                "fields": [
                    {"name": "name", "description": texts["name_field"], "question": texts["ask_name"]},
                    {"name": "email", "type": "email", "question": texts["ask_email"]},
                ],
            },
            {
                "id": "size",
                "fields": [
                    {
                        "name": "company_size",
                        "type": "enum",
                        "values": ["1-10", "11-50", "51+"],
                        "question": texts["ask_size"],
                    }
                ],
                "transitions": [
                    {"when": {"field": "company_size", "equals": "1-10"}, "outcome": "disqualified"}
                ],
            },
            {
                "id": "budget",
                "fields": [{"name": "budget", "type": "number", "question": texts["ask_budget"]}],
            },
            {
                "id": "meeting",
                "fields": [{"name": "wants_meeting", "type": "boolean", "question": texts["ask_meeting"]}],
                "transitions": [
                    {"when": {"field": "wants_meeting", "equals": True}, "outcome": "meeting_requested"}
                ],
                "outcome": "qualified",
            },
        ],
    }


FLOWS: dict[str, dict[str, Any]] = {
    "pt": _flow(
        "pt",
        {
            "name": "Vendas",
            "objective": "Qualificar o lead e marcar uma conversa com o time comercial",
            "contact": "Contato",
            "name_field": "nome da pessoa",
            "ask_name": "Com quem eu falo?",
            "ask_email": "Qual é o seu e-mail?",
            "ask_size": "Quantas pessoas trabalham na sua empresa: 1-10, 11-50 ou 51+?",
            "ask_budget": "Qual é o orçamento mensal, em reais?",
            "ask_meeting": "Podemos marcar uma conversa de 20 minutos?",
        },
    ),
    "en": _flow(
        "en",
        {
            "name": "Sales",
            "objective": "Qualify the lead and book a call with the sales team",
            "contact": "Contact",
            "name_field": "the person's name",
            "ask_name": "Who am I talking to?",
            "ask_email": "What is your email?",
            "ask_size": "How many people work at your company: 1-10, 11-50 or 51+?",
            "ask_budget": "What is your monthly budget, in dollars?",
            "ask_meeting": "Can we book a 20-minute call?",
        },
    ),
}


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    flow: str  # a key of FLOWS
    messages: tuple[str, ...]
    expect: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    opted_out: bool = False


def _full(name: str, email: str, size: str, budget: float, meeting: bool) -> dict[str, Any]:
    return {"name": name, "email": email, "company_size": size, "budget": budget, "wants_meeting": meeting}


MEETING, QUALIFIED, OUT = "meeting_requested", "qualified", "disqualified"

CONVERSATIONS: tuple[Conversation, ...] = (
    # Portuguese
    Conversation(
        "pt-one-answer-per-message",
        "pt",
        ("Oi, boa tarde! Vi o anúncio", "Maria Souza", "maria@tiny.io", "11-50", "5000", "sim"),
        _full("Maria Souza", "maria@tiny.io", "11-50", 5000, True),
        MEETING,
    ),
    Conversation(
        "pt-words-for-values",
        "pt",
        (
            "Olá",
            "Me chamo João Pereira",
            "joao.pereira@padaria.com.br",
            "somos uns 30",
            "uns 5 mil",
            "pode ser",
        ),
        _full("João Pereira", "joao.pereira@padaria.com.br", "11-50", 5000, True),
        MEETING,
    ),
    Conversation(
        "pt-two-answers-in-one",
        "pt",
        ("Oi! Sou a Ana Lima, ana@lima.dev", "51+", "20 mil", "não, obrigado"),
        _full("Ana Lima", "ana@lima.dev", "51+", 20000, False),
        QUALIFIED,
    ),
    Conversation(
        "pt-typos",
        "pt",
        ("oii", "carla menezes", "carla.menezes@gmial.com", "11-50", "3.000", "simm"),
        _full("carla menezes", "carla.menezes@gmial.com", "11-50", 3000, True),
        MEETING,
    ),
    Conversation(
        "pt-corrects-the-email-a-step-later",
        "pt",
        ("Oi", "Pedro Alves", "pedro@alves.com", "ops, o certo é pedro@alves.com.br", "11-50", "8000", "sim"),
        _full("Pedro Alves", "pedro@alves.com.br", "11-50", 8000, True),
        MEETING,
    ),
    Conversation(
        "pt-disqualified",
        "pt",
        ("Boa tarde", "Luiza", "luiza@doces.com", "1-10"),
        {"name": "Luiza", "email": "luiza@doces.com", "company_size": "1-10"},
        OUT,
    ),
    Conversation("pt-stop-keyword", "pt", ("Oi", "PARE"), {}, None, opted_out=True),
    Conversation(
        "pt-stop-phrase",
        "pt",
        ("Bom dia", "Rafael", "não quero mais receber mensagens"),
        {"name": "Rafael"},
        None,
        opted_out=True,
    ),
    Conversation("pt-only-greets", "pt", ("Oi, boa tarde! Vi o anúncio",)),
    Conversation("pt-greets-twice", "pt", ("Oi", "tudo bem?")),
    Conversation("pt-asks-the-price", "pt", ("Olá! Quero saber o preço",)),
    Conversation(
        "pt-refuses-then-answers",
        "pt",
        ("Oi", "Marcos", "prefiro não dizer", "marcos@site.com", "11-50", "10000", "sim"),
        _full("Marcos", "marcos@site.com", "11-50", 10000, True),
        MEETING,
    ),
    Conversation(
        "pt-answers-ahead",
        "pt",
        ("Oi, sou o Bruno, bruno@empresa.com, somos 51+ pessoas", "15 mil", "sim"),
        _full("Bruno", "bruno@empresa.com", "51+", 15000, True),
        MEETING,
    ),
    Conversation(
        "pt-name-pattern",
        "pt",
        ("Meu nome é Fernanda Costa", "fernanda@costa.com", "11-50", "R$ 4.500", "quero sim"),
        _full("Fernanda Costa", "fernanda@costa.com", "11-50", 4500, True),
        MEETING,
    ),
    Conversation(
        "pt-budget-in-k",
        "pt",
        ("Oi", "Tiago", "tiago@x.io", "51+", "10k", "não"),
        _full("Tiago", "tiago@x.io", "51+", 10000, False),
        QUALIFIED,
    ),
    Conversation(
        "pt-not-now",
        "pt",
        ("Olá", "Sofia Ramos", "sofia@ramos.com.br", "11-50", "2 mil", "agora não"),
        _full("Sofia Ramos", "sofia@ramos.com.br", "11-50", 2000, False),
        QUALIFIED,
    ),
    Conversation(
        "pt-email-in-a-sentence",
        "pt",
        ("Oi", "Lucas", "meu email é lucas.m@gmail.com", "11-50", "7000", "sim"),
        _full("Lucas", "lucas.m@gmail.com", "11-50", 7000, True),
        MEETING,
    ),
    # English
    Conversation(
        "en-one-answer-per-message",
        "en",
        ("Hi, I saw your ad", "John Smith", "john@smith.io", "11-50", "5000", "yes"),
        _full("John Smith", "john@smith.io", "11-50", 5000, True),
        MEETING,
    ),
    Conversation(
        "en-words-for-values",
        "en",
        ("Hello", "My name is Emily Clark", "emily.clark@acme.co", "about 40 people", "around 10k", "sure"),
        _full("Emily Clark", "emily.clark@acme.co", "11-50", 10000, True),
        MEETING,
    ),
    Conversation(
        "en-two-answers-in-one",
        "en",
        ("Hi, I'm Tom Baker, tom@baker.com", "51+", "25000", "no thanks"),
        _full("Tom Baker", "tom@baker.com", "51+", 25000, False),
        QUALIFIED,
    ),
    Conversation(
        "en-typos",
        "en",
        ("helo", "sarah jones", "sarah@jones.org", "11-50", "3,000", "yess"),
        _full("sarah jones", "sarah@jones.org", "11-50", 3000, True),
        MEETING,
    ),
    Conversation(
        "en-corrects-the-email-a-step-later",
        "en",
        ("Hi", "Mike Ross", "mike@ross.com", "sorry, it's mike.ross@pearson.com", "11-50", "9000", "yes"),
        _full("Mike Ross", "mike.ross@pearson.com", "11-50", 9000, True),
        MEETING,
    ),
    Conversation(
        "en-disqualified",
        "en",
        ("Hey", "Anna", "anna@solo.dev", "1-10"),
        {"name": "Anna", "email": "anna@solo.dev", "company_size": "1-10"},
        OUT,
    ),
    Conversation("en-stop-keyword", "en", ("Hi", "STOP"), {}, None, opted_out=True),
    Conversation(
        "en-stop-phrase",
        "en",
        ("Hello", "Dave", "please stop messaging me"),
        {"name": "Dave"},
        None,
        opted_out=True,
    ),
    Conversation("en-only-greets", "en", ("Hi there! Saw your ad",)),
    Conversation(
        "en-refuses-then-answers",
        "en",
        ("Hi", "Kate", "I'd rather not say", "kate@kate.io", "51+", "12000", "yes"),
        _full("Kate", "kate@kate.io", "51+", 12000, True),
        MEETING,
    ),
    Conversation(
        "en-answers-ahead",
        "en",
        ("Hi, I'm Paul, paul@paul.dev, we have 11-50 employees", "8k", "yes"),
        _full("Paul", "paul@paul.dev", "11-50", 8000, True),
        MEETING,
    ),
    Conversation(
        "en-budget-in-words",
        "en",
        ("Hi", "Laura", "laura@l.io", "11-50", "5 thousand", "yes please"),
        _full("Laura", "laura@l.io", "11-50", 5000, True),
        MEETING,
    ),
    Conversation(
        "en-opens-with-a-question",
        "en",
        ("Hi, how much does it cost?", "Nina", "nina@n.io", "11-50", "4000", "no"),
        _full("Nina", "nina@n.io", "11-50", 4000, False),
        QUALIFIED,
    ),
    Conversation(
        "en-not-now",
        "en",
        ("Hello", "George", "george@g.com", "51+", "50000", "not now"),
        _full("George", "george@g.com", "51+", 50000, False),
        QUALIFIED,
    ),
)
