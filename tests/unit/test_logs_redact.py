"""redact() masks secrets in any letter case, and leaves lines without a secret word untouched."""

from __future__ import annotations

import pytest

from luminai_actors.logs import redact


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("TOKEN=abc123 rest", "TOKEN=*** rest"),
        ("Api-Key: k-9 done", "Api-Key: *** done"),
        ("header AUTHORIZATION: BEARER xyz.1", "header AUTHORIZATION: ***"),
        ("then Bearer q1w2", "then Bearer ***"),
        ('{"PassWord": "hunter2"}', '{"PassWord": "***"}'),
    ],
)
def test_secrets_are_masked_whatever_their_case(line: str, masked: str) -> None:
    assert redact(line).strip() == masked.strip()


def test_a_line_without_secret_words_comes_back_unchanged() -> None:
    line = '127.0.0.1:5555 - "POST /api/webhooks/whatsapp/evolution HTTP/1.1" 200'
    assert redact(line) is line
