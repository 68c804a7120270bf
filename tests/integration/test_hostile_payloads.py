"""10,000 generated malformed or hostile webhook bodies: never a 5xx, and nothing written for invalid ones.

Hypothesis mutates real Evolution payloads (any field replaced by any JSON value, hostile strings, wrong
event names, broken wrappers) and also throws arbitrary JSON and raw bytes at the endpoint. A body is
stored only when the service says so (200 with the stored message's id); the database must hold exactly
those and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from luminai_actors.persistence.tables import TalkMessage
from luminai_actors.testing import LuminaiHarness

pytestmark = [pytest.mark.integration, pytest.mark.fault]

HOSTILE_TEXT = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "'; DROP TABLE talk_message; --",
            "<script>alert(1)</script>",
            "\x00",
            "a\x00b",
            "\ud800",
            "👍🏽" * 50,
            "x" * 70_000,
            "{{7*7}}",
            "../../etc/passwd",
            "%s%s%s",
            "\u202e",
            "",
        ]
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
PATHS = [
    ("event",),
    ("instance",),
    ("data",),
    ("data", "key"),
    ("data", "key", "id"),
    ("data", "key", "remoteJid"),
    ("data", "key", "fromMe"),
    ("data", "key", "remoteJidAlt"),
    ("data", "message"),
    ("data", "message", "conversation"),
    ("data", "messageTimestamp"),
    ("data", "pushName"),
    ("data", "messageType"),
    ("data", "status"),
    ("data", "keyId"),
]
EVENTS = st.sampled_from(
    [
        "messages.upsert",
        "MESSAGES_UPSERT",
        "messages.update",
        "send.message",
        "connection.update",
        "qrcode.updated",
        "logout.instance",
        "contacts.upsert",
        "nonsense",
        "",
        "messages..upsert",
    ]
)


def base(message_id: str, text: str) -> dict[str, Any]:
    return {
        "event": "messages.upsert",
        "instance": "fuzz",
        "data": {
            "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": message_id},
            "pushName": "Lead",
            "message": {"conversation": text},
            "messageType": "conversation",
            "messageTimestamp": 1761057639,
        },
    }


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = document
    for step in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(step, {})
    if isinstance(node, dict):
        node[path[-1]] = value


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes", "event"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    document = base(draw(st.text(min_size=1, max_size=30)), draw(HOSTILE_TEXT))
    if kind == "event":
        document["event"] = draw(EVENTS)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        _set(document, draw(st.sampled_from(PATHS)), draw(JSON))
    return json.dumps(document).encode()


def test_ten_thousand_hostile_bodies_never_get_a_5xx_and_only_accepted_ones_are_stored() -> None:
    with LuminaiHarness(rate_limit_per_instance=0, rate_limit_per_ip=0) as luminai:
        org = luminai.admin.create_organization("Fuzz")
        luminai.admin.create_agent(org, "fuzz")
        stored: set[str] = set()
        statuses: dict[int, int] = {}

        @settings(
            max_examples=10_000,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(body=bodies())
        def post(body: bytes) -> None:
            response = luminai.client.post(
                "/api/webhooks/whatsapp/evolution", content=body, headers={"Content-Type": "application/json"}
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (response.status_code, response.text, body[:300])
            assert "Traceback" not in response.text
            message_id = response.headers.get("X-Luminai-Message-Id")
            if response.status_code == 200 and message_id and not response.json().get("duplicate"):
                stored.add(message_id)

        post()
        luminai.drain(timeout=120)
        with luminai.container.session_factory() as session:
            # Everything a webhook wrote: the leads' messages and human (fromMe) ones; not the bot's replies.
            written = {
                str(i)
                for i in session.scalars(select(TalkMessage.id).where(TalkMessage.from_agent_id.is_(None)))
            }
            total = session.scalar(
                select(func.count()).select_from(TalkMessage).where(TalkMessage.from_agent_id.is_(None))
            )
        assert sum(statuses.values()) == 10_000
        assert written == stored  # exactly what the service said it stored, nothing for the rejected
        assert total == len(stored)
        assert statuses.get(422, 0) > 1000
        assert statuses.get(400, 0) > 100
