"""A scripted `Brain` for service tests: records each `TurnContext`, replies from a script, can fail."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from luminai_actors.ai.brain import BrainReply, Extraction, ExtractionRequest, OfflineBrain, TurnContext
from luminai_actors.errors import BrainError

__all__ = ["FakeBrain"]


class FakeBrain:
    """Extracts from a script (else like the offline brain) and answers with the next scripted reply (then
    `default`, followed by the step's question when the script asks one, as a model's reply would be);
    the next `fail_times` calls (extract or compose) raise BrainError."""

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
        self.extraction_requests: list[ExtractionRequest] = []
        self._extractions: deque[dict[str, Any]] = deque()

    def script_extraction(self, *values: dict[str, Any]) -> None:
        """Values the next extractions return (then the offline brain's pattern extraction takes over)."""
        self._extractions.extend(values)

    def extract(self, request: ExtractionRequest) -> Extraction:
        self.extraction_requests.append(request)
        self._maybe_fail()
        if self._extractions:
            values = dict(self._extractions.popleft())
            return Extraction(values, opt_out=bool(values.pop("optOut", False)), model=self.model)
        offline = OfflineBrain().extract(request)
        return Extraction(offline.values, offline.opt_out, self.model, {"prompt_tokens": 3}, 1.0)

    def _maybe_fail(self) -> None:
        if self._failures_left > 0:
            self._failures_left -= 1
            raise BrainError("fake brain told to fail")

    def fail_next(self, times: int = 1) -> None:
        """Make the next `times` calls raise BrainError (a timeout, a refusal, an unusable answer)."""
        self._failures_left = times

    def compose(self, context: TurnContext) -> BrainReply:
        self.contexts.append(context)
        self._maybe_fail()
        if self._replies:
            text = self._replies.popleft()
        else:
            text = f"{self.default} {context.question or ''}".strip()
        return BrainReply(
            text=text,
            model=self.model,
            usage={"prompt_tokens": 10, "completion_tokens": 5},
            latency_ms=self.latency_ms,
        )
