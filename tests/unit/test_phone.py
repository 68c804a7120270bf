"""Phone identity: JIDs to E.164, national spellings of one mobile (BR 9th digit, AR 9, MX 1), send format."""

from __future__ import annotations

import pytest

from luminai_actors.domain.phone import (
    canonical_phone,
    digits_for_evolution,
    jid_user,
    normalize_phone,
    phone_from_jid,
    phone_variants,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5511987654321@s.whatsapp.net", "+5511987654321"),
        ("5511987654321:12@s.whatsapp.net", "+5511987654321"),  # device suffix of a linked device
        ("+55 (11) 98765-4321", "+5511987654321"),
        ("55 11 98765 4321", "+5511987654321"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("551187654321", "+551187654321"),  # old 8-digit BR mobile: possible, if no longer "valid"
    ],
)
def test_normalize_phone_reads_jids_and_formatted_numbers(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "call me",
        "1234567",  # 7 digits: too short for any country
        "1234567890123456",  # 16 digits: longer than E.164 allows
        "00000000",  # no country code 0
        "+1 415",
    ],
)
def test_normalize_phone_refuses_what_cannot_be_a_number(raw: str) -> None:
    assert normalize_phone(raw) is None


def test_jid_user_drops_server_and_device() -> None:
    assert jid_user("5511987654321:3@s.whatsapp.net") == "5511987654321"
    assert jid_user("103899771998284@lid") == "103899771998284"


@pytest.mark.parametrize(
    ("jid", "expected"),
    [
        ("5511987654321@s.whatsapp.net", "+5511987654321"),
        ("5511987654321:7@s.whatsapp.net", "+5511987654321"),
        ("103899771998284@lid", None),  # a LID is a privacy id, never a phone
        ("5511987654321@lid", None),  # even when its digits look like one
        ("120363025123456789@g.us", None),
        ("status@broadcast", None),
        ("5511987654321", None),  # a bare number is not a JID
        (None, None),
    ],
)
def test_phone_from_jid_only_trusts_phone_jids(jid: str | None, expected: str | None) -> None:
    assert phone_from_jid(jid) == expected


@pytest.mark.parametrize(
    ("given", "variants", "canonical"),
    [
        # Brazil: mobiles with and without the ninth digit are one number; the canonical has the 9.
        ("+5511987654321", ["+5511987654321", "+551187654321"], "+5511987654321"),
        ("+551187654321", ["+551187654321", "+5511987654321"], "+5511987654321"),
        ("+5521998765432", ["+5521998765432", "+552198765432"], "+5521998765432"),
        # Argentina: with and without the 9 after +54; the canonical has the 9.
        ("+5491123456789", ["+5491123456789", "+541123456789"], "+5491123456789"),
        ("+541123456789", ["+541123456789", "+5491123456789"], "+5491123456789"),
        # Mexico: with and without the legacy 1 after +52; the canonical drops the 1.
        ("+5215512345678", ["+5215512345678", "+525512345678"], "+525512345678"),
        ("+525512345678", ["+525512345678", "+5215512345678"], "+525512345678"),
    ],
)
def test_national_spellings_of_one_mobile(given: str, variants: list[str], canonical: str) -> None:
    assert phone_variants(given) == variants
    assert canonical_phone(given) == canonical


@pytest.mark.parametrize(
    "number",
    [
        "+551133334444",  # BR landline (subscriber starts with 3): no ninth-digit spelling
        "+14155552671",
        "+442079460958",
        "+351912345678",
    ],
)
def test_other_numbers_have_one_spelling(number: str) -> None:
    assert phone_variants(number) == [number]
    assert canonical_phone(number) == number


def test_every_variant_has_the_same_canonical_spelling() -> None:
    for number in ("+551187654321", "+541123456789", "+5215512345678"):
        assert {canonical_phone(v) for v in phone_variants(number)} == {canonical_phone(number)}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+5511987654321", "5511987654321"),
        ("+55 (11) 98765-4321", "5511987654321"),
        ("5511987654321@s.whatsapp.net", "5511987654321"),
        ("5511987654321:4@s.whatsapp.net", "5511987654321"),
    ],
)
def test_digits_for_evolution_is_country_code_and_digits(given: str, expected: str) -> None:
    assert digits_for_evolution(given) == expected
