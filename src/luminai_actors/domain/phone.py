"""Phone identity: WhatsApp JIDs to E.164, the national variants of one mobile number, and send formats.

WhatsApp reports a person as `<digits>@s.whatsapp.net` (the phone, "PN") or `<digits>@lid` (a privacy id with
no phone). One mobile number can reach us in several spellings: Brazil's mobiles with and without the ninth
digit (`+55 11 9xxxx-xxxx` / `+55 11 xxxx-xxxx`), Argentina's with and without the `9` after `+54`, Mexico's
with and without the `1` after `+52`. `phone_variants` lists them so that lookups find the contact whichever
spelling arrives, and `canonical_phone` picks one spelling so that all of them map to one conversation.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

PN_SUFFIX = "@s.whatsapp.net"
LID_SUFFIX = "@lid"
_NON_DIGITS = re.compile(r"\D+")
_PHONE_SPELLING = re.compile(r"\+?[0-9][0-9 ().-]*")
_DIGITS_MIN, _DIGITS_MAX = 8, 15  # the shortest number WhatsApp reports; E.164's longest


def jid_user(jid: str) -> str:
    """The user part of a JID without device suffix: `5511987654321:12@s.whatsapp.net` -> `5511987654321`."""
    return jid.split("@", 1)[0].split(":", 1)[0]


def whatsapp_jid(raw: str) -> str:
    """A person's address in the spelling Baileys uses.

    A bare number (`"5511977776666"`, `"+55 11 …"`: how Evolution's `EVOLUTION` channel and other non-Baileys
    channels pass `remoteJid`, captured from a real 2.3.6 server in tests/fixtures/evolution_captures) and the
    legacy `…@c.us` become `<digits>@s.whatsapp.net`; every other value is returned as it came."""
    user, at, server = raw.partition("@")
    if at and server == "c.us":
        return f"{user}{PN_SUFFIX}"
    if not at and _PHONE_SPELLING.fullmatch(raw):
        digits = _NON_DIGITS.sub("", raw)
        if _DIGITS_MIN <= len(digits) <= _DIGITS_MAX:
            return f"{digits}{PN_SUFFIX}"
    return raw


def is_phone_jid(jid: str | None) -> bool:
    return bool(jid) and str(jid).endswith(PN_SUFFIX)


def is_lid_jid(jid: str | None) -> bool:
    return bool(jid) and str(jid).endswith(LID_SUFFIX)


@lru_cache(maxsize=65_536)  # pure, and parsing a number costs ~25 µs: every webhook of a lead repeats it
def normalize_phone(raw: str) -> str | None:
    """E.164 (`+5511987654321`) from a JID, digits with country code, or a formatted international number.

    Returns None when the input cannot be a phone number. WhatsApp always reports the country code, so a
    number without one is read as international, never guessed into a region.
    """
    if not raw:
        return None
    text = jid_user(raw) if "@" in raw else raw
    digits = _NON_DIGITS.sub("", text)
    if not _DIGITS_MIN <= len(digits) <= _DIGITS_MAX:
        return None
    # WhatsApp still reports some numbers in a spelling the numbering plan dropped (Mexico's `+52 1`), so a
    # national variant stands in when the reported spelling is not a possible number.
    for candidate in phone_variants("+" + digits):
        try:
            number = phonenumbers.parse(candidate, None)
        except phonenumbers.NumberParseException:
            continue
        # is_possible (length per country) rather than is_valid: valid-number ranges lag behind real WhatsApp
        # numbers (old Brazilian 8-digit mobiles are "invalid" today yet still arrive from WhatsApp).
        if phonenumbers.is_possible_number(number):
            return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return None


def phone_from_jid(jid: str | None) -> str | None:
    """E.164 of a phone JID (`…@s.whatsapp.net`); None for LIDs, groups and anything else."""
    if jid is None or not is_phone_jid(jid):
        return None
    return normalize_phone(jid)


def phone_variants(e164: str) -> list[str]:
    """All spellings of one mobile number, the given one first (BR ninth digit, AR `9`, MX `1`)."""
    variants = [e164]
    digits = e164.lstrip("+")
    if digits.startswith("55") and len(digits) in (12, 13):
        area, subscriber = digits[2:4], digits[4:]
        if len(subscriber) == 9 and subscriber[0] == "9" and subscriber[1] in "6789":
            variants.append(f"+55{area}{subscriber[1:]}")
        elif len(subscriber) == 8 and subscriber[0] in "6789":
            variants.append(f"+55{area}9{subscriber}")
    elif digits.startswith("549") and len(digits) == 13:
        variants.append("+54" + digits[3:])
    elif digits.startswith("54") and len(digits) == 12:
        variants.append("+549" + digits[2:])
    elif digits.startswith("521") and len(digits) == 13:
        variants.append("+52" + digits[3:])
    elif digits.startswith("52") and len(digits) == 12:
        variants.append("+521" + digits[2:])
    return variants


@lru_cache(maxsize=65_536)  # pure; the webhook's conversation key and the fast path ask for it per message
def canonical_phone(e164: str) -> str:
    """One spelling shared by all variants: BR and AR with the mobile 9, MX without the legacy 1."""
    variants = phone_variants(e164)
    digits = [v.lstrip("+") for v in variants]
    for candidate, d in zip(variants, digits, strict=True):
        if (
            (d.startswith("55") and len(d) == 13)
            or d.startswith("549")
            or (d.startswith("52") and not d.startswith("521"))
        ):
            return candidate
    return e164


def digits_for_evolution(phone_or_jid: str) -> str:
    """Digits with country code, no `+`: the `number` Evolution's sendText expects (reference §4)."""
    return _NON_DIGITS.sub("", jid_user(phone_or_jid) if "@" in phone_or_jid else phone_or_jid)
