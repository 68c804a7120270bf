"""`run.py demo`: the whole service in one process plays a lead's conversation and prints its transcript.

`run_demo` is called in-process (the CLI only forwards to it); it needs no PostgreSQL, Redis or keys.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luminai_actors import demo
from luminai_actors.config import Settings
from luminai_actors.demo import LEAD_MESSAGES, run_demo
from luminai_actors.testing import FakeOpenAI

pytestmark = pytest.mark.e2e

EXPECTED = [
    "lead  > Oi! Vi o anúncio de vocês",
    "agent < Olá Maria! Sou Sofia. Com quem eu falo?",
    "lead  > Sou a Maria Souza",
    "agent < Qual é o seu e-mail?",
    "lead  > maria@acme",
    "agent < Desculpe, 'maria@acme' não é um e-mail válido. Qual é o seu e-mail?",
    "lead  > maria@acme.com.br",
    "agent < Quantas pessoas trabalham na sua empresa?",
    "lead  > 11-50",
    "agent < Podemos marcar uma conversa de 20 minutos com um especialista?",
    "lead  > sim, pode ser amanhã",
    "agent < Perfeito! Um especialista vai te mandar o convite.",
]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory and a temp root of its own, to see that the demo leaves nothing behind; and no
    thread of the demo (servers, actors, workers, webhook posts) may outlive it."""
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    before = set(threading.enumerate())
    yield tmp_path
    assert list(temp.iterdir()) == []  # its temporary directory is gone, on success and on failure
    deadline = time.monotonic() + 5
    while True:
        # dramatiq's TimeLimit manager is a process-wide daemon timer that dramatiq never stops.
        left = [
            t for t in threading.enumerate() if t not in before and "TimeoutManager" not in type(t).__name__
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == []


def transcript(output: str) -> list[str]:
    return [
        line.split("   [")[0] for line in output.splitlines() if line.startswith(("lead  > ", "agent < "))
    ]


def test_the_offline_demo_qualifies_a_lead_and_books_a_meeting(sandbox: Path) -> None:
    out = io.StringIO()

    code = run_demo(Settings(), use_openai=False, out=out)

    output = out.getvalue()
    assert code == 0, output
    assert transcript(output) == EXPECTED
    agent_lines = [line for line in output.splitlines() if line.startswith("agent < ")]
    assert len(agent_lines) == 6
    assert all(line.endswith("[sent ✓ → delivered ✓✓ → read ✓✓ blue]") for line in agent_lines), output
    assert "  name           Maria Souza" in output
    assert "  email          maria@acme.com.br" in output
    assert "  company_size   11-50" in output
    assert "  wants_meeting  true" in output
    assert "Outcome: meeting_requested" in output
    assert "Summary: 6 lead messages, 6 agent replies (6 read), 4 fields collected" in output
    assert "offline brain" in output
    assert list((sandbox / "cwd").iterdir()) == []  # never touches ./luminai.db


def test_openai_without_a_key_says_what_to_set(sandbox: Path) -> None:
    out = io.StringIO()

    assert run_demo(Settings(openai_api_key=None), use_openai=True, out=out) == 2

    assert "OPENAI_API_KEY" in out.getvalue()
    assert "without --openai" in out.getvalue()


def test_the_openai_demo_replies_through_the_configured_endpoint(sandbox: Path) -> None:
    out = io.StringIO()
    with FakeOpenAI(api_key="sk-demo", model="fake-gpt") as fake:
        settings = Settings(
            openai_api_key="sk-demo", openai_base_url=fake.url + "/v1", ai_model="fake-gpt", ai_one_call=False
        )

        code = run_demo(settings, use_openai=True, out=out)

        requests = fake.chat_requests()
    output = out.getvalue()
    assert code == 0, output
    assert "OpenAI brain, fake-gpt" in output
    lines = transcript(output)
    assert [line for line in lines if line.startswith("lead")] == [f"lead  > {t}" for t in LEAD_MESSAGES]
    # The fake extracts nothing and echoes the lead: an echo asks none of the script's questions, so each
    # reply is the step's question as the script writes it (`reply_parts.asks_for`).
    replies = [line for line in lines if line.startswith("agent")]
    assert replies[0] == "agent < Olá Maria! Sou Sofia. Com quem eu falo?"
    assert not any("Fake reply" in line for line in replies)
    assert requests
    assert all(r["model"] == "fake-gpt" for r in requests)
    assert "outcome meeting_requested" in output  # the offline floor read the answers the fake did not


def test_an_offline_demo_ignores_a_configured_openai_key(sandbox: Path) -> None:
    out = io.StringIO()

    code = run_demo(Settings(openai_api_key="sk-not-used"), use_openai=False, out=out)

    assert code == 0, out.getvalue()
    assert "offline brain" in out.getvalue()
    assert "Outcome: meeting_requested" in out.getvalue()


def test_a_failing_step_is_reported_and_everything_is_still_stopped_and_removed(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def malformed(text: str, server_url: str) -> dict[str, Any]:
        return {"event": "messages.upsert", "instance": demo.INSTANCE, "data": {"message": text}}

    monkeypatch.setattr(demo, "_lead_message", malformed)
    out = io.StringIO()

    assert run_demo(Settings(), use_openai=False, out=out) == 1

    assert "demo failed: the webhook answered 422" in out.getvalue()
