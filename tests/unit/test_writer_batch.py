"""The group writer's batch in the container: the AI turns its callbacks request go out together (one
pipeline) when the batch's callbacks are done, each talk once, and only then are its webhooks answered;
when the broker refuses the batch, the webhooks are still answered and the turns stay unrequested (so the
next message requests again, and the recovery sweep covers the rest)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from luminai_actors import bootstrap
from luminai_actors.config import Settings
from luminai_actors.errors import BrokerUnavailable
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.group_commit import GroupCommitWriter
from luminai_actors.services.inbound import InboundOutcome
from luminai_actors.services.inbound_fast import FastInbound


class RecordingDispatcher:
    def __init__(self, events: list[Any], fail: bool = False) -> None:
        self.events = events
        self.fail = fail

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        self.events.append("pipeline open")
        yield
        if self.fail:
            raise BrokerUnavailable("redis is down")
        self.events.append("pipeline sent")

    def request_ai_turn(self, talk_id: uuid.UUID, delay: float = 0.0) -> None:
        self.events.append(("turn", talk_id, delay))

    def request_send(self, message_id: uuid.UUID, delay: float = 0.0) -> None:
        self.events.append(("send", message_id))


@pytest.fixture
def container(tmp_path: Path) -> Iterator[bootstrap.Container]:
    settings = Settings.from_env().with_overrides(
        database_url=f"sqlite:///{tmp_path / 'batch.db'}", broker_url="memory://", ai_debounce_seconds=2.0
    )
    built = bootstrap.build(settings)
    built.fast_inbound = FastInbound(GroupCommitWriter(lambda: None, lambda c, p: []), talk_expiry=None)
    yield built
    built.close()


def upsert() -> MessageUpsert:
    event = parse_webhook(
        {
            "event": "messages.upsert",
            "instance": "acme",
            "data": {
                "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": "M1"},
                "message": {"conversation": "oi"},
            },
        },
        None,
    )
    assert isinstance(event, MessageUpsert)
    return event


def stored(talk_id: uuid.UUID) -> InboundOutcome:
    return InboundOutcome("stored", None, talk_id, uuid.uuid4(), uuid.uuid4(), fast=True)


def run_batch(container: bootstrap.Container, events: list[Any], talks: list[uuid.UUID]) -> None:
    with container.writer_callbacks():
        for talk in talks:
            finished = container._fast_finished("k", upsert(), lambda r: events.append(("reply", r.talk_id)))
            finished(stored(talk), datetime.now(UTC))
        assert [e for e in events if e != "pipeline open"] == []  # nothing sent, nobody answered yet


def test_a_batch_requests_each_talk_once_in_one_pipeline_before_answering(
    container: bootstrap.Container,
) -> None:
    events: list[Any] = []
    container.dispatcher = RecordingDispatcher(events)  # type: ignore[assignment]
    first, second = uuid.uuid4(), uuid.uuid4()

    run_batch(container, events, [first, first, second])

    assert events == [
        "pipeline open", ("turn", first, 2.0), ("turn", second, 2.0), "pipeline sent",
        ("reply", first), ("reply", first), ("reply", second),
    ]  # fmt: skip
    events.clear()
    run_batch(container, events, [first])  # its turn, requested just now, will answer this one too
    assert events == [("reply", first)]


def test_a_refused_batch_still_answers_and_leaves_its_turns_unrequested(
    container: bootstrap.Container,
) -> None:
    events: list[Any] = []
    container.dispatcher = RecordingDispatcher(events, fail=True)  # type: ignore[assignment]
    talk = uuid.uuid4()

    run_batch(container, events, [talk])

    assert events == ["pipeline open", ("turn", talk, 2.0), ("reply", talk)]
    events.clear()
    container.dispatcher = RecordingDispatcher(events)  # type: ignore[assignment]
    run_batch(container, events, [talk])  # not marked as requested: the next message asks again
    assert ("turn", talk, 2.0) in events
