"""Fields a TreeFlow step collects: validation and normalisation of values, and deterministic extraction.

`normalize(field, raw)` turns what a lead (or an LLM) gave into the stored value or says why it is invalid:
emails by syntax (lower-cased), phones to E.164 (phonenumbers, the lead's own region as default), numbers
(`10k`, `1.500,50`, `2 mil`), enum members (case- and accent-insensitive), yes/no in English, Portuguese and
Spanish, dates (ISO or day/month/year). `extract_offline` finds values in free text with the same rules, so
the whole flow runs without an LLM; free text is only taken for the field that was just asked.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import phonenumbers

FIELD_TYPES = ("text", "email", "phone", "number", "enum", "boolean", "date")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_EMAIL_FULL = re.compile(r"^" + _EMAIL.pattern + r"$")
_NUMBER = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:[.,\s]\d{3})+|\d+)(?:([.,])(\d{1,2}))?\s*(k|mil|thousand|m|mi|million)?\b", re.I
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DMY_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_YES = {
    "yes",
    "y",
    "yeah",
    "yep",
    "sure",
    "ok",
    "okay",
    "sim",
    "s",
    "claro",
    "quero",
    "pode",
    "si",
    "sí",
    "true",
}
_NO = {"no", "n", "nope", "nao", "não", "nunca", "false", "not"}
_NAME_PATTERNS = (
    re.compile(r"\b(?:my name is|i am|i'm|this is)\s+([A-Za-zÀ-ÿ'\- ]{2,60})", re.I),
    re.compile(r"\b(?:meu nome é|meu nome e|me chamo|sou o|sou a|eu sou)\s+([A-Za-zÀ-ÿ'\- ]{2,60})", re.I),
    re.compile(r"\b(?:me llamo|mi nombre es|soy)\s+([A-Za-zÀ-ÿ'\- ]{2,60})", re.I),
)
_MULTIPLIERS = {
    "k": 1_000,
    "mil": 1_000,
    "thousand": 1_000,
    "m": 1_000_000,
    "mi": 1_000_000,
    "million": 1_000_000,
}


@dataclass(frozen=True, slots=True)
class Normalized:
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


Language = Literal["en", "pt", "es"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "pt", "es")  # `domain.language` says which one is used


def language_code(value: object) -> Language | None:
    """One of `LANGUAGES` from a tag such as `"pt-BR"` or `"ES"`; None for anything else."""
    code = value.strip().lower()[:2] if isinstance(value, str) else None
    return next((language for language in LANGUAGES if language == code), None)


#: Why an answer was refused (`normalize`), by reason and language; `{value}` / `{choices}` filled in.
REFUSALS: Final[dict[Language, dict[str, str]]] = {
    "en": {
        "yes_no": "please answer yes or no",
        "number": "not a number",
        "email": "{value} is not a valid email address",
        "choice": "choose one of: {choices}",
        "phone": "{value} is not a phone number",
        "real_date": "{value} is not a real date",
        "date": "give a date like 2025-10-21 or 21/10/2025",
    },
    "pt": {
        "yes_no": "responda sim ou não",
        "number": "isso não é um número",
        "email": "{value} não é um e-mail válido",
        "choice": "escolha uma destas opções: {choices}",
        "phone": "{value} não é um número de telefone",
        "real_date": "{value} não é uma data que existe",
        "date": "informe uma data como 21/10/2025",
    },
    "es": {
        "yes_no": "responde sí o no",
        "number": "eso no es un número",
        "email": "{value} no es un correo válido",
        "choice": "elige una de estas opciones: {choices}",
        "phone": "{value} no es un número de teléfono",
        "real_date": "{value} no es una fecha real",
        "date": "indica una fecha como 21/10/2025",
    },
}


def _refused(language: Language, reason: str, **values: str) -> Normalized:
    return Normalized(error=REFUSALS[language][reason].format(**values))


def fold(text: str) -> str:
    """Lower-case without accents: the key for matching enum values and yes/no words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).strip()


def _number(raw: str) -> float | None:
    match = _NUMBER.search(raw)
    if match is None:
        return None
    whole, _, cents, unit = match.groups()
    value = float(re.sub(r"[.,\s]", "", whole) + (f".{cents}" if cents else ""))
    return value * _MULTIPLIERS.get((unit or "").lower(), 1)


def numbers_in(text: str) -> list[float]:
    """Every number written in `text` (`5000`, `1.500,50`, `5 mil`, `10k`), by the rules of `normalize`."""
    found = []
    for match in _NUMBER.finditer(text):
        number = _number(match.group(0))
        if number is not None:
            found.append(number)
    return found


def _as_int_if_whole(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def normalize(
    field: dict[str, Any], raw: Any, *, region: str | None = None, language: Language = "en"
) -> Normalized:
    """The stored form of `raw` for `field`, or the reason it is not valid (in `language`)."""
    kind = field.get("type", "text")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return Normalized()
    if kind == "boolean":
        if isinstance(raw, bool):
            return Normalized(raw)
        words = set(re.findall(r"[\wÀ-ÿ]+", fold(str(raw))))
        if words & {fold(w) for w in _YES} and not words & {fold(w) for w in _NO}:
            return Normalized(True)
        if words & {fold(w) for w in _NO}:
            return Normalized(False)
        return _refused(language, "yes_no")
    if kind == "number":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return Normalized(_as_int_if_whole(float(raw)))
        number = _number(str(raw))
        return Normalized(_as_int_if_whole(number)) if number is not None else _refused(language, "number")
    text = str(raw).strip()
    if kind == "email":
        found = _EMAIL.search(text)
        candidate = found.group(0) if found else text
        if not _EMAIL_FULL.match(candidate):
            return _refused(language, "email", value=repr(text))
        return Normalized(candidate.lower())
    if kind == "phone":
        return _phone(text, region, language)
    if kind == "enum":
        allowed = [str(v) for v in field.get("values") or []]
        folded = fold(text)
        for value in allowed:
            if fold(value) == folded:
                return Normalized(value)
        contained = [
            value for value in allowed if re.search(r"(?<!\w)" + re.escape(fold(value)) + r"(?!\w)", folded)
        ]
        if len(contained) == 1:
            return Normalized(contained[0])
        return _refused(language, "choice", choices=", ".join(allowed))
    if kind == "date":
        return _date(text, language)
    return Normalized(text[:2000])


def _phone(text: str, region: str | None, language: Language) -> Normalized:
    for match in phonenumbers.PhoneNumberMatcher(text, region or "US"):
        number = match.number
        if phonenumbers.is_possible_number(number):
            return Normalized(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    try:
        number = phonenumbers.parse(text, region or "US")
    except phonenumbers.NumberParseException:
        return _refused(language, "phone", value=repr(text))
    if not phonenumbers.is_possible_number(number):
        return _refused(language, "phone", value=repr(text))
    return Normalized(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _date(text: str, language: Language) -> Normalized:
    for pattern, order in ((_ISO_DATE, (0, 1, 2)), (_DMY_DATE, (2, 1, 0))):
        match = pattern.search(text)
        if match:
            parts = [int(p) for p in match.groups()]
            try:
                return Normalized(date(parts[order[0]], parts[order[1]], parts[order[2]]).isoformat())
            except ValueError:
                return _refused(language, "real_date", value=repr(match.group(0)))
    return _refused(language, "date")


def region_of(e164: str | None) -> str | None:
    """The region of the lead's own phone: the default for phone numbers they type without a country code."""
    if not e164:
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None
    return str(region) if region and region != "ZZ" else None


NAME_FIELDS: Final = ("name", "nome", "full_name", "first_name", "last_name", "nome_completo")


def is_name_field(field: dict[str, Any]) -> bool:
    """A text field that holds a person's name (by its name)."""
    return field.get("type", "text") == "text" and str(field.get("name", "")).lower() in NAME_FIELDS


def extract_offline(
    fields: list[dict[str, Any]], text: str, *, asked: str | None, region: str | None
) -> dict[str, Any]:
    """Raw values found in `text` for `fields` by pattern, plus the whole answer for the field just asked."""
    found: dict[str, Any] = {}
    for field in fields:
        name, kind = field["name"], field.get("type", "text")
        if kind == "email":
            match = _EMAIL.search(text)
            if match:
                found[name] = match.group(0)
            elif name == asked and "@" in text:
                found[name] = text.strip()  # looks like an attempt: keep it so it is validated and re-asked
        elif kind == "phone":
            result = _phone(text, region, "en")
            if result.ok:
                found[name] = result.value
        elif kind == "date":
            if _ISO_DATE.search(text) or _DMY_DATE.search(text) or name == asked:
                found[name] = text
        elif kind == "enum":
            if normalize(field, text).ok or name == asked:
                found[name] = text
        elif kind in ("number", "boolean"):
            if name == asked:
                found[name] = text
        elif is_name_field(field):
            for pattern in _NAME_PATTERNS:
                match = pattern.search(text)
                if match:
                    found[name] = re.split(r"[,.;!?\n]| and | e ", match.group(1))[0].strip()
                    break
            else:
                if name == asked and len(text.split()) <= 5 and not _EMAIL.search(text):
                    found[name] = text.strip()
        elif name == asked:
            found[name] = text.strip()
    return found
