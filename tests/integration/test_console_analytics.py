"""The console's analytics queries give the same numbers on SQLite and PostgreSQL: messages per UTC day,
first-response median and p90, leads per TreeFlow step, outcomes; nothing of another organization."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from luminai_actors.errors import NotFound
from luminai_actors.persistence.tables import Talk, TalkMessage
from luminai_actors.services.api_keys import OPERATOR, Principal
from luminai_actors.services.console_analytics import organization_analytics, percentile
from luminai_actors.testing import FakeEvolutionApi, LuminaiHarness
from tests.integration.test_pipeline_inprocess import settings_for

NOW = datetime(2025, 10, 21, 12, 0, tzinfo=UTC)
SCRIPT = {
    "name": "Qualification",
    "steps": [
        {"id": "contact", "name": "Contact", "question": "Who am I talking to?"},
        {"id": "size", "name": "Company size", "question": "How many people work there?"},
        {"id": "meeting", "name": "Meeting", "question": "When can we talk?"},
    ],
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest, fake_evolution: FakeEvolutionApi) -> Iterator[LuminaiHarness]:
    settings = settings_for(request.getfixturevalue("clean_pg")) if request.param == "postgresql" else None
    with LuminaiHarness(settings, evolution=fake_evolution) as luminai:
        yield luminai


def _shift(
    luminai: LuminaiHarness, talk_id: str, asked: datetime, answered: datetime, flow: dict[str, object]
) -> None:
    with luminai.container.uow() as uow:
        assert uow.session is not None
        talk = uuid.UUID(talk_id)
        uow.session.execute(
            update(TalkMessage)
            .where(TalkMessage.talk_id == talk, TalkMessage.direction == "inbound")
            .values(created_at=asked)
        )
        uow.session.execute(
            update(TalkMessage)
            .where(TalkMessage.talk_id == talk, TalkMessage.direction == "outbound")
            .values(created_at=answered, sent_at=answered)
        )
        uow.session.execute(
            update(Talk).where(Talk.id == talk).values(talk_flow=flow, date_last_message=answered)
        )
        uow.commit()


def test_analytics_numbers(harness: LuminaiHarness) -> None:
    org = harness.admin.create_organization("Acme")
    flow = harness.admin.create_tree_flow(org, SCRIPT)
    harness.admin.create_agent(org, "acme", tree_flow=flow)
    other = harness.admin.create_organization("Globex")
    harness.admin.create_agent(other, "globex")
    for instance, phone in (
        ("acme", "5511911110001"),
        ("acme", "5511911110002"),
        ("globex", "5511911110003"),
    ):
        assert harness.say(instance, "Oi", phone=phone).status_code == 200
    harness.drain()
    first, second = sorted(harness.talks(org), key=lambda t: t["createdAt"])
    yesterday = NOW - timedelta(days=1, hours=2)  # 20 Oct 10:00 UTC
    _shift(
        harness,
        first["id"],
        yesterday,
        yesterday + timedelta(seconds=10),
        {"treeFlowId": flow, "currentStepId": "size", "history": [{"stepId": "contact"}]},
    )
    _shift(
        harness,
        second["id"],
        NOW - timedelta(hours=1),
        NOW - timedelta(hours=1) + timedelta(seconds=100),
        {
            "treeFlowId": flow,
            "currentStepId": None,
            "history": [{"stepId": "contact"}, {"stepId": "size"}],
            "status": "completed",
            "outcome": "qualified",
        },
    )

    data = organization_analytics(
        harness.container.uow, Principal(uuid.UUID(org)), uuid.UUID(org), 7, now=NOW
    )

    assert data.since == datetime(2025, 10, 15, tzinfo=UTC)
    assert [(d.day.isoformat(), d.inbound, d.outbound) for d in data.messages_per_day[-3:]] == [
        ("2025-10-19", 0, 0),
        ("2025-10-20", 1, 1),
        ("2025-10-21", 1, 1),
    ]
    assert len(data.messages_per_day) == 7
    assert sorted(data.first_response_seconds) == [10.0, 100.0]
    assert data.response_median == 55.0
    assert data.response_p90 == 100.0
    assert len(data.flows) == 1
    assert [(s.step_id, s.name, s.leads) for s in data.flows[0].steps] == [
        ("contact", "Contact", 2),
        ("size", "Company size", 2),
        ("meeting", "Meeting", 0),
    ]
    assert data.outcomes == {"qualified": 1}

    globex = organization_analytics(harness.container.uow, OPERATOR, uuid.UUID(other), 7)
    assert sum(d.inbound for d in globex.messages_per_day) == 1
    with pytest.raises(NotFound):
        organization_analytics(harness.container.uow, Principal(uuid.UUID(other)), uuid.UUID(org), 7)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([float(v) for v in range(1, 11)], 0.9) == 9.0
    assert percentile([float(v) for v in range(1, 12)], 0.9) == 10.0
