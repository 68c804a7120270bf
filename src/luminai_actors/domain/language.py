"""The lead's language and the words the service itself writes in it (Portuguese, Spanish, English).

Most of a reply comes from the agent's TreeFlow, in whatever language its author wrote it. What the service
adds around it — the greeting, "sorry" before a re-asked question, a question for a field that has none, the
default closings, the opt-out confirmation and the reasons an answer was refused — is written here once per
language. `reply_language` picks one: the TreeFlow's `language` (or the agent's `whatsapp.metadata.language`)
when set, else the language the script itself is written in (so a reply never mixes two), else English.
The offline brain cannot translate the author's script: a Portuguese lead gets Portuguese replies from a
Portuguese script (an LLM brain is told to answer in the lead's language). The opt-out confirmation follows
the words of the lead's request (`guess`: "PARE" is answered in Portuguese), else the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from luminai_actors.domain.fields import LANGUAGES, Language, fold, language_code

__all__ = ["LANGUAGES", "Language", "guess", "reply_language"]

_WORD: Final = re.compile(r"[a-z]+")
_WORDS: Final[dict[Language, frozenset[str]]] = {
    "pt": frozenset(
        [
            "oi",
            "ola",
            "obrigado",
            "obrigada",
            "nao",
            "sim",
            "voce",
            "tenho",
            "quero",
            "gostaria",
            "bom",
            "boa",
            "dia",
            "tarde",
            "noite",
            "tudo",
            "bem",
            "meu",
            "minha",
            "sou",
            "estou",
            "com",
            "para",
            "pode",
            "qual",
            "quantas",
            "quantos",
            "seu",
            "sua",
            "empresa",
            "pessoas",
            "trabalham",
            "reuniao",
            "vamos",
            "marcar",
            "nome",
            "que",
            "procura",
            "pare",
            "parar",
            "sair",
            "cancelar",
            "chega",
        ]
    ),
    "es": frozenset(
        [
            "hola",
            "gracias",
            "usted",
            "tengo",
            "quiero",
            "quisiera",
            "buenos",
            "buenas",
            "dias",
            "tardes",
            "noches",
            "todo",
            "bien",
            "mi",
            "soy",
            "estoy",
            "con",
            "para",
            "puede",
            "cual",
            "cuantas",
            "cuantos",
            "su",
            "empresa",
            "personas",
            "trabajan",
            "reunion",
            "agendamos",
            "nombre",
            "busca",
            "correo",
            "baja",
        ]
    ),
    "en": frozenset(
        [
            "hi",
            "hello",
            "thanks",
            "yes",
            "want",
            "the",
            "is",
            "are",
            "my",
            "your",
            "you",
            "what",
            "how",
            "many",
            "who",
            "do",
            "does",
            "need",
            "name",
            "company",
            "people",
            "work",
            "shall",
            "we",
            "book",
            "call",
            "email",
            "talking",
            "stop",
        ]
    ),
}


def guess(texts: Sequence[str]) -> Language | None:
    """The one language whose common words are the most frequent in `texts`; None on no words or a tie."""
    words = _WORD.findall(fold(" ".join(texts)))
    counts = {language: sum(word in _WORDS[language] for word in words) for language in LANGUAGES}
    best = max(counts.values())
    winners = [language for language, count in counts.items() if count == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def script_texts(definition: Mapping[str, Any]) -> list[str]:
    """What the TreeFlow's author wrote for the lead to read: questions, closings, outcome messages."""
    texts = [str(definition.get("closing") or "")]
    for step in definition.get("steps") or []:
        texts += [str(step.get("question") or ""), *map(str, step.get("questions") or [])]
        texts += [str(f.get("question") or "") for f in step.get("fields") or []]
    texts += [str(o.get("message") or "") for o in (definition.get("outcomes") or {}).values()]
    return [text for text in texts if text]


def reply_language(configured: object, definition: Mapping[str, Any]) -> Language:
    """The language of what the service writes around the script (see the module docstring)."""
    return language_code(configured) or guess(script_texts(definition)) or "en"


def agent_language(definition: Mapping[str, Any], agent_metadata: Mapping[str, Any] | None) -> Language:
    """`reply_language` for an agent: the TreeFlow's `language`, else the agent's
    `whatsapp.metadata.language`, else the script's own words."""
    return reply_language(definition.get("language") or (agent_metadata or {}).get("language"), definition)


def handoff_message(
    definition: Mapping[str, Any], agent_metadata: Mapping[str, Any] | None, language: Language
) -> str:
    """What the lead is told when a person takes over (the AI failed, or the lead writes on after the
    script's closing): the agent's `whatsapp.metadata.handoffMessage`, else the script's `handoff` outcome
    message, else the default in `language`."""
    configured = (agent_metadata or {}).get("handoffMessage")
    if isinstance(configured, str) and configured.strip():
        return configured.strip()[:1000]
    scripted = ((definition.get("outcomes") or {}).get("handoff") or {}).get("message")
    if isinstance(scripted, str) and scripted.strip():
        return scripted.strip()
    return CLOSINGS[language]["handoff"]


GREETING: Final[dict[Language, str]] = {
    "en": "Hi{who}! I'm {agent}.",
    "pt": "Olá{who}! Sou {agent}.",
    "es": "¡Hola{who}! Soy {agent}.",
}
SORRY: Final[dict[Language, str]] = {
    "en": "Sorry, {error}.",
    "pt": "Desculpe, {error}.",
    "es": "Perdón, {error}.",
}
ASK_FIELD: Final[dict[Language, str]] = {
    "en": "What is your {label}?",
    "pt": "Qual é o seu {label}?",
    "es": "¿Cuál es su {label}?",
}
OPT_OUT_CONFIRMATION: Final[dict[Language, str]] = {
    "en": "Understood — you won't receive any more messages from us. Take care!",
    "pt": "Entendido — você não receberá mais mensagens nossas. Até mais!",
    "es": "Entendido — no recibirás más mensajes nuestros. ¡Cuídate!",
}
CLOSINGS: Final[dict[Language, dict[str, str]]] = {
    "en": {
        "qualified": "Thank you! You look like a great fit: someone from our team will contact you shortly.",
        "disqualified": "Thank you for your time! We will keep your details in case anything changes.",
        "meeting_requested": "Great, I'll have a colleague reach out to book the meeting with you.",
        "handoff": "I'm passing you to a colleague who will continue from here.",
        "completed": "Thank you! I have everything I need. Someone from our team will get back to you soon.",
    },
    "pt": {
        "qualified": "Obrigado! Você tem o perfil: alguém do nosso time vai falar com você em breve.",
        "disqualified": "Obrigado pelo seu tempo! Vamos guardar seus dados caso algo mude.",
        "meeting_requested": "Ótimo, vou pedir para um colega entrar em contato para marcar a reunião.",
        "handoff": "Vou passar você para um colega que continua daqui.",
        "completed": "Obrigado! Já tenho tudo de que preciso. Alguém do nosso time vai retornar em breve.",
    },
    "es": {
        "qualified": "¡Gracias! Encajas muy bien: alguien de nuestro equipo te contactará pronto.",
        "disqualified": "¡Gracias por tu tiempo! Guardaremos tus datos por si algo cambia.",
        "meeting_requested": "Perfecto, un colega te contactará para agendar la reunión.",
        "handoff": "Te paso con un colega que seguirá desde aquí.",
        "completed": "¡Gracias! Ya tengo todo lo que necesito. Alguien del equipo te responderá pronto.",
    },
}


def closing(outcome: str | None, language: Language) -> str | None:
    return CLOSINGS[language].get(outcome or "completed")
