"""pytest fixtures for testing code against luminai's actors: `luminai`, `luminai_openai`, `fake_evolution`,
`fake_openai`.

Enable it with `pytest_plugins = ["luminai_actors.testing.pytest_plugin"]` in a conftest.py, or through the
package's `pytest11` entry point. No markers: to run on other settings (PostgreSQL, Redis), override the
`luminai_settings` fixture in a conftest.py::

    @pytest.fixture
    def luminai_settings(pg_url: str) -> Settings:
        return Settings(database_url=pg_url, broker_url="redis://127.0.0.1:6379/15")

Everything is function-scoped: each test gets its own database, fakes and actors, and all of it is stopped
(threads joined, sockets closed, temporary files removed) when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from luminai_actors.testing.fake_evolution import FakeEvolutionApi
from luminai_actors.testing.fake_openai import FakeOpenAI

if TYPE_CHECKING:
    from luminai_actors.config import Settings
    from luminai_actors.testing.harness import LuminaiHarness

__all__ = ["fake_evolution", "fake_openai", "luminai", "luminai_openai", "luminai_settings"]


@pytest.fixture
def fake_evolution() -> Iterator[FakeEvolutionApi]:
    """A running fake Evolution API; the same one the `luminai` harnesses of the test use."""
    with FakeEvolutionApi() as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI-compatible server; the one `luminai_openai`'s brain talks to."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def luminai_settings() -> Settings | None:
    """Settings of the `luminai` harnesses; None means the harness's own SQLite file and memory broker.
    Override this fixture to run the same tests on PostgreSQL and/or Redis."""
    return None


@pytest.fixture
def luminai(luminai_settings: Settings | None, fake_evolution: FakeEvolutionApi) -> Iterator[LuminaiHarness]:
    """The real service in this process with the offline brain, talking to `fake_evolution`."""
    from luminai_actors.testing.harness import LuminaiHarness

    with LuminaiHarness(luminai_settings, evolution=fake_evolution) as harness:
        yield harness


@pytest.fixture
def luminai_openai(
    luminai_settings: Settings | None, fake_evolution: FakeEvolutionApi, fake_openai: FakeOpenAI
) -> Iterator[LuminaiHarness]:
    """The real service in this process whose replies the OpenAI brain writes through `fake_openai`."""
    from luminai_actors.testing.harness import LuminaiHarness

    with LuminaiHarness(luminai_settings, evolution=fake_evolution, openai=fake_openai) as harness:
        yield harness
