"""A scripted `Brain` for service tests: records each `TurnContext`, replies from a script, can fail."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from luminai_actors.ai.brain import BrainReply, TurnContext
from luminai_actors.errors import BrainError

__all__ = ["FakeBrain"]


class FakeBrain:
    """Answers with the next scripted reply (then `default`); the next `fail_times` calls raise BrainError."""

    name = "fake"

    def __init__(
        self,
        replies: Iterable[str] = (),
        *,
        default: str = "Fake reply",
        model: str = "fake-model",
        latency_ms: float = 42.0,
        fail_times: int = 0,
    ) -> None:
        self.contexts: list[TurnContext] = []
        self.default = default
        self.model = model
        self.latency_ms = latency_ms
        self._replies = deque(replies)
        self._failures_left = fail_times

    def fail_next(self, times: int = 1) -> None:
        """Make the next `times` calls raise BrainError (a timeout, a refusal, an unusable answer)."""
        self._failures_left = times

    def compose(self, context: TurnContext) -> BrainReply:
        self.contexts.append(context)
        if self._failures_left > 0:
            self._failures_left -= 1
            raise BrainError("fake brain told to fail")
        text = self._replies.popleft() if self._replies else self.default
        return BrainReply(
            text=text,
            model=self.model,
            usage={"prompt_tokens": 10, "completion_tokens": 5},
            latency_ms=self.latency_ms,
        )
