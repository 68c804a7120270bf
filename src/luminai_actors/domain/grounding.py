"""Grounding: a value a brain extracted is kept only when the lead's own words support it.

A small local model, asked for a script's fields, fills them in from nowhere (`budget 1000` and
`wants_meeting true` on "Oi, boa tarde! Vi o anúncio", a company the lead never named); kept, such values
drive the step transitions and are never asked again. `supported` is the one rule, applied to every brain's
extraction before the TalkFlow records it (`services.ai_turn`); what it drops is kept in the reply's
metadata (`ai.ungrounded`) so an operator can see it.

The rule, by field type, for the lead's messages of the turn (`text`); `asked` is True for the field the
last reply asked for, whose answer a model may read more freely:
- email: the address appears in the text; phone: its last 8 digits appear in the text's digits;
- number: a number written in the text (`5000`, `5 mil`, `10k`) equals the value;
- date: a date written in the text equals it, or the field was asked ("amanhã" read as a date);
- enum: the value's words appear in the text, or (asked) a number in the text falls in a range value
  ("uns 30" for `11-50`), or (asked) one of the value's words appears;
- boolean: only the asked field (the answer to a yes/no question), never volunteered, and never against
  the lead's plain words (a model's `true` for "não, obrigado");
- text: every word of the value appears in the text; (asked) at least half of them; small talk alone
  ("Oi, boa tarde!", "tudo bem", "hello", "não") is never a value, and a person's name has no digits, `@`
  or web address in it (a small model took "Oi, boa tarde!" and "alves.com" for names).
"""

from __future__ import annotations

import re
from typing import Any

from luminai_actors.domain.fields import fold, is_name_field, normalize, numbers_in

_WORD = re.compile(r"[^\W_]+")
_SMALL_TALK_WORDS = (
    "oi oii ola bom boa dia tarde noite tudo bem td blz beleza obrigado obrigada valeu sim nao ok okay "
    "hi hii hello helo hey there good morning afternoon evening thanks thank you yes no yeah nope sure "
    "hola buenos buenas dias tardes gracias si vi saw your ad anuncio"
)
_SMALL_TALK = frozenset(_SMALL_TALK_WORDS.split(" "))
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-|\u2013|a|to|até)\s*(\d+)\s*$|^\s*(\d+)\s*\+\s*$", re.I)


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(fold(text)) if len(word) > 1 or word.isdigit()]


def _in_range(value: str, numbers: list[float]) -> bool:
    match = _RANGE.match(value)
    if match is None:
        return False
    low, high, open_low = match.groups()
    if open_low is not None:
        return any(n >= float(open_low) for n in numbers)
    return any(float(low) <= n <= float(high) for n in numbers)


def supported(field: dict[str, Any], value: Any, text: str, *, asked: bool) -> bool:
    """Whether the lead's `text` supports `value` (already normalised by `fields.normalize`) for `field`."""
    kind = field.get("type", "text")
    folded = fold(text)
    if kind == "email":
        return str(value).lower() in text.lower()
    if kind == "phone":
        digits = re.sub(r"\D", "", str(value))
        return len(digits) >= 6 and digits[-8:] in re.sub(r"\D", "", text)
    if kind == "number":
        return any(abs(n - float(value)) < 0.005 for n in numbers_in(text))
    if kind == "date":
        return asked or normalize(field, text).value == value
    if kind == "boolean":
        if not asked or not folded.strip():
            return False
        own = normalize(field, text)  # the lead's plain yes or no, read by the deterministic rule
        return not own.ok or own.value == value
    words = set(_words(text))
    wanted = _words(str(value))
    if not wanted or (kind == "text" and all(word in _SMALL_TALK for word in wanted)):
        return False
    if is_name_field(field) and re.search(r"[\d@]|\.[a-z]{2,}\b", str(value).lower()):
        return False
    present = sum(word in words for word in wanted)
    if kind == "enum":
        if present == len(wanted):
            return True
        return asked and (_in_range(str(value), numbers_in(text)) or present > 0)
    return present == len(wanted) or (asked and present * 2 >= len(wanted))


def ground(
    fields: list[dict[str, Any]],
    values: dict[str, Any],
    text: str,
    *,
    asked: str | None,
    region: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kept, dropped): the raw `values` whose normalised form `supported` accepts, and the others. A value
    that does not normalise is kept when it is the asked field or is written in the text (the lead's attempt:
    the TalkFlow says why it was refused and asks again); otherwise it is a guess, dropped."""
    specs = {spec["name"]: spec for spec in fields}
    kept: dict[str, Any] = {}
    dropped: dict[str, Any] = {}
    for name, raw in values.items():
        spec = specs.get(name)
        if spec is None or raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # not a field of these, or nothing said ("" from a model is null)
        result = normalize(spec, raw, region=region)
        if result.ok:
            keep = supported(spec, result.value, text, asked=name == asked)
        else:  # the lead's attempt, refused and asked again; or a guess
            keep = name == asked or (bool(str(raw).strip()) and fold(str(raw)) in fold(text))
        if keep:
            kept[name] = raw
        else:
            dropped[name] = raw
    return kept, dropped
