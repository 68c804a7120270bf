"""Opt-out: a lead's clear request to stop (STOP, PARE, SAIR, "não quero mais", "unsubscribe", ...).

Matched deterministically (a bare keyword, or a stop phrase anywhere), in English, Portuguese and Spanish;
an LLM brain may also judge a message an opt-out. The confirmation is sent once, in the lead's language as
far as the words tell, and after it the bot stays silent for that contact.
"""

from __future__ import annotations

import re

from luminai_actors.domain.fields import fold

_KEYWORDS = {
    "stop",
    "stop all",
    "unsubscribe",
    "cancel",
    "quit",
    "end",
    "optout",
    "opt out",
    "pare",
    "parar",
    "sair",
    "cancelar",
    "descadastrar",
    "chega",
    "basta",
    "remover",
    "baja",
    "alto",
}
_PHRASES = (
    "nao quero mais",
    "nao me mande",
    "pare de me mandar",
    "para de me mandar",
    "nao envie mais",
    "me tire da lista",
    "me remova",
    "nao tenho interesse, pare",
    "stop messaging",
    "stop sending",
    "stop texting",
    "don't message me",
    "dont message me",
    "do not contact",
    "remove me from",
    "take me off",
    "no me escribas",
    "no quiero mas mensajes",
    "darme de baja",
)
_PORTUGUESE = ("pare", "parar", "sair", "nao", "cancelar", "descadastrar", "chega", "basta", "remover", "me ")

CONFIRM_EN = "Understood — you won't receive any more messages from us. Take care!"
CONFIRM_PT = "Entendido — você não receberá mais mensagens nossas. Até mais!"


def is_opt_out(text: str) -> bool:
    folded = re.sub(r"[^\w\s']", " ", fold(text))
    folded = re.sub(r"\s+", " ", folded).strip()
    return folded in _KEYWORDS or any(phrase in folded for phrase in _PHRASES)


def confirmation_for(text: str) -> str:
    folded = fold(text)
    return CONFIRM_PT if any(word in folded for word in _PORTUGUESE) else CONFIRM_EN
