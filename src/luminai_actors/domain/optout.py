"""Opt-out: a lead's clear request to stop (STOP, PARE, SAIR, "não quero mais", "unsubscribe", ...).

Matched deterministically (a bare keyword, or a stop phrase anywhere), in English, Portuguese and Spanish;
an LLM brain may also judge a message an opt-out. The confirmation (`domain.language`) is sent once, in
the lead's language, and after it the bot stays silent for that contact.
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


def is_opt_out(text: str) -> bool:
    folded = re.sub(r"[^\w\s']", " ", fold(text))
    folded = re.sub(r"\s+", " ", folded).strip()
    return folded in _KEYWORDS or any(phrase in folded for phrase in _PHRASES)


_CUES = re.compile(
    r"\b(pare|parem|parar|para de|chega|sair|saia|remov\w*|cancel\w*|descadastr\w*|bloque\w*|nao quero|"
    r"nao me (mande|escreva|ligue)|stop|unsubscribe|remove me|don'?t (text|message|contact)|no more|"
    r"baja|no quiero|no me escribas)\b"
)


def has_stop_cue(text: str) -> bool:
    """The lead's words at least sound like a stop request ("parem de me escrever"): what a model's opt-out
    judgement needs before it is honoured. A greeting has none."""
    return _CUES.search(fold(text)) is not None
