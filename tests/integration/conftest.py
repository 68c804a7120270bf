"""Fixtures of the in-process integration tests: the real app and container on the session's PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from luminai_actors import bootstrap
from luminai_actors.bootstrap import Container
from luminai_actors.testing import FakeEvolutionApi, FakeOpenAI
from luminai_actors.web.app import create_app
from tests.integration.test_pipeline_inprocess import SIGNED, settings_for


@pytest.fixture
def evolution() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi() as fake:
        yield fake


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test", model="fake-gpt") as fake:
        yield fake


@pytest.fixture
def make_app(clean_pg: str) -> Iterator[Callable[..., tuple[Container, TestClient]]]:
    """Build (container, client) pairs with settings overrides; everything is closed after the test."""
    opened: list[tuple[Container, TestClient]] = []

    def make(**overrides: Any) -> tuple[Container, TestClient]:
        container = bootstrap.build(settings_for(clean_pg, **overrides))
        container.start(recovery=False)
        client = TestClient(create_app(container=container), headers=SIGNED)
        client.__enter__()
        opened.append((container, client))
        return container, client

    yield make
    for container, client in opened:
        client.__exit__(None, None, None)
        container.close()
