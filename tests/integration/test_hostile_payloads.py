"""Thousands of generated malformed or hostile webhook bodies: never a 5xx, nothing written for invalid ones.

Hypothesis mutates real Evolution payloads (any field replaced by any JSON value, hostile strings, wrong
event names, broken wrappers) and also throws arbitrary JSON and raw bytes at the endpoint. A body is
stored only when the service says so (200 with the stored message's id); the database must hold exactly
those and nothing else.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from luminai_actors.persistence.tables import TalkMessage
from luminai_actors.testing import LuminaiHarness
from tests.integration.test_pipeline_inprocess import SIGNED, settings_for

SECRET = SIGNED["X-Webhook-Token"]

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


# 1,000 bodies in the suite (about 13 s on 2 cores); `FUZZ_EXAMPLES=10000` for a longer hunt.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))


def test_thousands_of_hostile_bodies_never_get_a_5xx_and_only_accepted_ones_are_stored() -> None:
    with LuminaiHarness(rate_limit_per_instance=0, rate_limit_per_ip=0) as luminai:
        org = luminai.admin.create_organization("Fuzz")
        luminai.admin.create_agent(org, "fuzz", token=SECRET)
        stored: set[str] = set()
        statuses: dict[int, int] = {}

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(body=bodies())
        def post(body: bytes) -> None:
            response = luminai.client.post(
                "/api/webhooks/whatsapp/evolution",
                content=body,
                headers={"Content-Type": "application/json", **SIGNED},
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
        assert sum(statuses.values()) == EXAMPLES
        assert written == stored  # exactly what the service said it stored, nothing for the rejected
        assert total == len(stored)
        assert statuses.get(422, 0) > EXAMPLES // 10
        assert statuses.get(400, 0) > EXAMPLES // 100


# The fuzz findings of issue 17, on PostgreSQL (which, unlike SQLite, enforces column lengths) -------------


def _upsert(**key: Any) -> dict[str, Any]:
    document = base(key.pop("id", "FINDING-1"), "oi")
    document["data"]["key"].update(key)
    return document


FINDINGS = [
    pytest.param(_upsert(), 200, id="baseline"),
    pytest.param(
        {**_upsert(id="PN-245"), "data": {**_upsert()["data"], "pushName": "N" * 245}}, 200, id="pushName-245"
    ),
    pytest.param(_upsert(id="K" * 129), 422, id="key.id-129"),
    pytest.param(_upsert(id="LID-70", senderLid="9" * 70 + "@lid"), 422, id="senderLid-70"),
    pytest.param(_upsert(id="JID-200", remoteJid="5" * 200 + "@s.whatsapp.net"), 422, id="remoteJid-200"),
    pytest.param(_upsert(id="AT-LID", remoteJid="@lid"), 422, id="remoteJid-empty-user"),
    pytest.param(_upsert(id="ALT-LID", remoteJidAlt="@lid"), 200, id="remoteJidAlt-empty-user"),
    pytest.param(_upsert(id="SENDER-LID", senderLid="@lid"), 200, id="senderLid-empty-user"),
    pytest.param({**_upsert(id="INST"), "instance": "i" * 300}, 422, id="instance-300"),
]


@pytest.mark.parametrize(("body", "status"), FINDINGS)
def test_out_of_bounds_fields_are_bounded_at_parse_time_on_postgresql(
    clean_pg: str, fake_evolution: Any, body: dict[str, Any], status: int
) -> None:
    with LuminaiHarness(settings_for(clean_pg), evolution=fake_evolution) as luminai:
        org = luminai.admin.create_organization("Fuzz")
        luminai.admin.create_agent(org, "fuzz", token=SECRET)
        first = luminai.client.post("/api/webhooks/whatsapp/evolution", json=body, headers=SIGNED)
        assert first.status_code == status, first.text
        if status == 422:
            assert first.json()["path"]
        # a redelivery is answered the same way: never a database error Evolution would retry forever
        again = luminai.client.post("/api/webhooks/whatsapp/evolution", json=body, headers=SIGNED)
        assert again.status_code == status, again.text
        for contact in luminai.admin.contacts(org):
            assert contact["whatsappLid"] != ""  # an empty JID user is absent, never a LID of ''
            assert len(contact["name"] or "") <= 255


LONG_TEXT = st.one_of(st.text(max_size=30), st.text(min_size=60, max_size=300), st.just("@lid"))
ID_PATHS = [
    ("data", "key", "id"),
    ("data", "key", "remoteJid"),
    ("data", "key", "remoteJidAlt"),
    ("data", "key", "senderLid"),
    ("data", "key", "senderPn"),
    ("data", "pushName"),
    ("instance",),
]


def test_long_and_empty_identifiers_never_get_a_5xx_nor_leave_half_written_rows_on_postgresql(
    clean_pg: str, fake_evolution: Any
) -> None:
    with LuminaiHarness(
        settings_for(clean_pg, rate_limit_per_instance=0, rate_limit_per_ip=0), evolution=fake_evolution
    ) as luminai:
        org = luminai.admin.create_organization("Fuzz")
        luminai.admin.create_agent(org, "fuzz", token=SECRET)
        stored: set[str] = set()

        @settings(
            max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
        )
        @given(
            message_id=st.text(min_size=1, max_size=160),
            changes=st.lists(st.tuples(st.sampled_from(ID_PATHS), LONG_TEXT), max_size=3),
        )
        def post(message_id: str, changes: list[tuple[tuple[str, ...], str]]) -> None:
            document = base(message_id, "oi")
            for path, value in changes:
                if path[-1] in ("senderLid", "remoteJidAlt") and not value.endswith("@lid"):
                    value = f"{value}@lid"
                _set(document, path, value)
            response = luminai.client.post("/api/webhooks/whatsapp/evolution", json=document, headers=SIGNED)
            assert response.status_code < 500, (response.status_code, response.text, document)
            message = response.headers.get("X-Luminai-Message-Id")
            if response.status_code == 200 and message and not response.json().get("duplicate"):
                stored.add(message)

        post()
        luminai.drain(timeout=60)
        with luminai.container.session_factory() as session:
            written = {
                str(i)
                for i in session.scalars(select(TalkMessage.id).where(TalkMessage.from_agent_id.is_(None)))
            }
        assert written == stored
