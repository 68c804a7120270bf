"""What ops see: Prometheus metrics, structured logs with ids and no secrets, and the import command."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from luminai_actors.logs import JsonFormatter, configure_logging, log_context, redact
from luminai_actors.persistence.tables import Agent, Organization, TreeFlow
from luminai_actors.testing import LuminaiHarness

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_metrics_count_webhooks_actors_turns_sends_and_dramatiq_messages(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    flow = luminai.admin.create_tree_flow(org, {"name": "Q", "steps": [{"id": "q", "question": "Budget?"}]})
    luminai.admin.create_agent(org, "acme", tree_flow=flow)
    luminai.say("acme", "Oi")
    luminai.drain()

    text = luminai.client.get("/metrics").text

    assert 'luminai_webhooks_total{event="messages.upsert",outcome="stored"} 1.0' in text
    assert "luminai_webhook_seconds_bucket" in text
    assert "luminai_conversation_actors 1.0" in text
    assert "luminai_conversation_mailbox_depth 0.0" in text
    assert 'luminai_ai_turns_total{status="replied"} 1.0' in text
    assert 'luminai_sends_total{attempt="1",outcome="sent"} 1.0' in text
    assert 'dramatiq_messages_total{actor_name="ai_turn",queue_name="ai"} 1.0' in text
    assert 'actor_name="send_message"' not in text  # the turn sent its reply itself (LUMINAI_INLINE_SEND)
    assert "dramatiq_message_duration_milliseconds_bucket" in text


def test_json_logs_carry_the_ids_and_never_a_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    from luminai_actors.logs import ContextFilter

    handler.addFilter(ContextFilter())
    logger = logging.getLogger("luminai_actors.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(organization_id="o1", talk_id="t1"), log_context(message_id="m1"):
            logger.info("calling Evolution with apikey: SUPERSECRET and Authorization: Bearer abc.def")
    finally:
        logger.removeHandler(handler)

    entry = json.loads(stream.getvalue())
    assert (entry["organization_id"], entry["talk_id"], entry["message_id"]) == ("o1", "t1", "m1")
    assert "SUPERSECRET" not in entry["msg"]
    assert "abc.def" not in entry["msg"]
    assert redact('{"apiKey": "k-123", "text": "hello"}') == '{"apiKey": "***", "text": "hello"}'


def test_configure_logging_installs_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging("WARNING", "text")
        assert len(root.handlers) == 1
        assert root.level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)


DOCUMENT = """
organizations:
  - name: Acme
    treeFlows:
      - name: Sales qualification
        steps:
          - {id: need, question: "What do you need?"}
    agents:
      - name: Sofia
        prompt: You are Sofia.
        treeFlow: Sales qualification
        whatsapp: {instanceName: acme-sdr, serverUrl: "https://evo.example.com", apiKey: k1, active: true}
"""


def _run_import(
    tmp_path: Path, database: str, text: str, suffix: str = ".yaml"
) -> subprocess.CompletedProcess[str]:
    document = tmp_path / f"seed{suffix}"
    document.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "LUMINAI_NO_VENV": "1", "LUMINAI_DATABASE_URL": database}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "import", str(document)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_creates_then_updates_and_refuses_a_bad_document_whole(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'import.db'}"
    first = _run_import(tmp_path, database, DOCUMENT)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["agentsCreated"] == 1
    second = _run_import(tmp_path, database, DOCUMENT.replace("You are Sofia.", "You are Sofia, v2."))
    assert json.loads(second.stdout) == {
        "organizationsCreated": 0,
        "organizationsUpdated": 1,
        "treeFlowsCreated": 0,
        "treeFlowsUpdated": 1,
        "agentsCreated": 0,
        "agentsUpdated": 1,
    }
    bad = _run_import(
        tmp_path, database, DOCUMENT.replace('question: "What do you need?"', "name: no question")
    )
    assert bad.returncode == 1
    assert "organizations[0].treeFlows[0].steps[0].question" in bad.stderr
    engine = create_engine(database)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Organization)) == 1
        assert session.scalar(select(func.count()).select_from(TreeFlow)) == 1
        assert session.scalars(select(Agent)).one().prompt == "You are Sofia, v2."
    engine.dispose()
    as_json = _run_import(tmp_path, database, json.dumps({"organizations": [{"name": "Beta"}]}), ".json")
    assert json.loads(as_json.stdout)["organizationsCreated"] == 1
