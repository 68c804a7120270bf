"""The console's analytics for one organization over the last N days (SQLAlchemy 2.0 queries, org-scoped):
messages per day by direction, first-response time (a talk's first lead message to the first reply that
reached WhatsApp: median and p90), how many leads reached each TreeFlow step, and outcome counts.

Dates are UTC days on both PostgreSQL and SQLite. Step reach reads each talk's `talk_flow` (completed steps in
`history`, plus `currentStepId`), counting a lead once per step even across several talks.
"""

from __future__ import annotations

import statistics
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select

from luminai_actors.persistence.tables import SEND_SENT, Talk, TalkMessage, TreeFlow
from luminai_actors.persistence.uow import UnitOfWorkFactory, session_of
from luminai_actors.services.api_keys import Principal, ensure_visible


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    inbound: int
    outbound: int


@dataclass(frozen=True, slots=True)
class StepReach:
    step_id: str
    name: str
    leads: int


@dataclass(frozen=True, slots=True)
class FlowReach:
    tree_flow_id: str
    name: str
    steps: list[StepReach]


@dataclass(frozen=True, slots=True)
class Analytics:
    days: int
    since: datetime
    messages_per_day: list[DayCount]
    first_response_seconds: list[float]
    flows: list[FlowReach] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def response_median(self) -> float | None:
        values = self.first_response_seconds
        return statistics.median(values) if values else None

    @property
    def response_p90(self) -> float | None:
        return percentile(self.first_response_seconds, 0.9)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (p90 of 10 values is the 9th smallest); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def _utc_day(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite keeps UTC text; date() cuts it to YYYY-MM-DD


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def organization_analytics(
    uow_factory: UnitOfWorkFactory,
    principal: Principal,
    org_id: uuid.UUID,
    days: int = 30,
    now: datetime | None = None,
) -> Analytics:
    ensure_visible(principal, org_id, "organization")
    moment = now or datetime.now(UTC)
    first_day = moment.date() - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    with uow_factory() as uow:
        session = session_of(uow)
        dialect = session.get_bind().dialect.name
        day = _utc_day(TalkMessage.created_at, dialect)
        per_day: dict[date, dict[str, int]] = defaultdict(lambda: {"inbound": 0, "outbound": 0})
        rows = session.execute(
            select(day, TalkMessage.direction, func.count(TalkMessage.id))
            .where(TalkMessage.organization_id == org_id, TalkMessage.created_at >= since)
            .group_by(day, TalkMessage.direction)
        )
        for raw_day, direction, count in rows:
            if direction in ("inbound", "outbound"):
                per_day[_as_date(raw_day)][direction] += int(count)
        series = [
            DayCount(d, per_day[d]["inbound"], per_day[d]["outbound"])
            for d in (first_day + timedelta(days=i) for i in range(days))
        ]
        responses = _first_responses(session, org_id, since)
        flows, outcomes = _flow_reach(session, org_id, since)
    return Analytics(days, since, series, responses, flows, outcomes)


def _first_responses(session: Any, org_id: uuid.UUID, since: datetime) -> list[float]:
    first_in = (
        select(TalkMessage.talk_id, func.min(TalkMessage.created_at).label("asked"))
        .where(TalkMessage.organization_id == org_id, TalkMessage.direction == "inbound")
        .group_by(TalkMessage.talk_id)
        .subquery()
    )
    query = (
        select(first_in.c.asked, func.min(TalkMessage.sent_at))
        .join(TalkMessage, TalkMessage.talk_id == first_in.c.talk_id)
        .where(
            first_in.c.asked >= since,
            TalkMessage.direction == "outbound",
            TalkMessage.send_status == SEND_SENT,
            TalkMessage.sent_at >= first_in.c.asked,
        )
        .group_by(first_in.c.talk_id, first_in.c.asked)
    )
    seconds = []
    for asked, answered in session.execute(query):
        if asked is None or answered is None:
            continue
        asked_at, answered_at = (_aware(v) for v in (asked, answered))
        seconds.append(max(0.0, (answered_at - asked_at).total_seconds()))
    return seconds


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _flow_reach(session: Any, org_id: uuid.UUID, since: datetime) -> tuple[list[FlowReach], dict[str, int]]:
    reached: dict[str, dict[str, set[uuid.UUID]]] = defaultdict(lambda: defaultdict(set))
    outcomes: Counter[str] = Counter()
    talks = session.execute(
        select(Talk.contact_id, Talk.talk_flow).where(
            Talk.organization_id == org_id,
            func.coalesce(Talk.date_last_message, Talk.created_at) >= since,
        )
    )
    for contact_id, state in talks:
        if not isinstance(state, dict):
            continue
        flow_id = str(state.get("treeFlowId") or "")
        steps = {str(h.get("stepId")) for h in state.get("history") or [] if isinstance(h, dict)}
        if state.get("currentStepId"):
            steps.add(str(state["currentStepId"]))
        for step in steps:
            reached[flow_id][step].add(contact_id)
        if state.get("outcome"):
            outcomes[str(state["outcome"])] += 1
    flows = []
    definitions = {
        str(row.id): row
        for row in session.scalars(select(TreeFlow).where(TreeFlow.organization_id == org_id))
    }
    for flow_id, leads in reached.items():
        row = definitions.get(flow_id)
        declared = (row.definition.get("steps") or []) if row is not None else []
        ordered = [(str(s["id"]), str(s.get("name") or s["id"])) for s in declared]
        known = {step_id for step_id, _ in ordered}
        ordered += [(step_id, step_id) for step_id in sorted(leads) if step_id not in known]
        name = row.name if row is not None else (flow_id or "no tree flow")
        reach = [StepReach(step_id, label, len(leads.get(step_id, ()))) for step_id, label in ordered]
        flows.append(FlowReach(flow_id, name, reach))
    flows.sort(key=lambda f: f.name)
    return flows, dict(outcomes.most_common())
