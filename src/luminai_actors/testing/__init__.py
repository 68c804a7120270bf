"""Test support: local fake servers of Evolution API and of an OpenAI-compatible API."""

from luminai_actors.testing.fake_evolution import FakeEvolutionApi
from luminai_actors.testing.fake_openai import FakeOpenAI
from luminai_actors.testing.http import RecordedRequest

__all__ = ["FakeEvolutionApi", "FakeOpenAI", "RecordedRequest"]
