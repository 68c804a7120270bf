"""Test support: local fake servers of Evolution API and of an OpenAI-compatible API, and `LuminaiHarness`
(the real service in one process; see `luminai_actors.testing.harness` and the `pytest_plugin` fixtures).

`LuminaiHarness` is imported on first use: it pulls in the whole service (database, broker, web app), which
a test that only needs a fake server should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from luminai_actors.testing.fake_evolution import FakeEvolutionApi
from luminai_actors.testing.fake_openai import FakeOpenAI
from luminai_actors.testing.http import RecordedRequest

if TYPE_CHECKING:
    from luminai_actors.testing.harness import LuminaiHarness

__all__ = ["FakeEvolutionApi", "FakeOpenAI", "LuminaiHarness", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    if name == "LuminaiHarness":
        from luminai_actors.testing.harness import LuminaiHarness

        return LuminaiHarness
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
