"""The reads of unsettled replies on a table of many settled ones, with and without their partial index.

    .venv/bin/python bench/unsettled_reads.py [--messages 500000]   # about 1 minute; writes
    # bench/results/unsettled_reads.json

On a fresh PostgreSQL database at the latest migration: an agent and one lead's talk (made through the
service's admin functions and `record_inbound`), then
`--messages` outbound replies already sent (inserted by one `generate_series` statement) and 20 pending
ones, none sending, and `ANALYZE`. Then each read runs 50 times through the service's own repository
(`SqlAlchemyRepository`, the statements the service sends, on a psycopg connection that prepares them as it
would), first with `idx_talk_message_send_unsettled` (migration 0004) and then after `DROP INDEX`:

- `messages_awaiting_send`: the recovery sweep (every process, every 30 s);
- `sends_in_flight`: asked by every receipt of a message the service does not know (messages typed on the
  business phone, for instance); here for the agent of all those replies, with nothing in flight;
- `unsettled_outbound_of_agent`: the replies handed back to the sender when an instance reconnects.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, create_agent_in_process, webhook_body, write_results
from sqlalchemy import text

from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.persistence.database import create_db_engine, make_session_factory
from luminai_actors.persistence.repository import SqlAlchemyRepository
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services.inbound import record_inbound

INSTANCE = "bench-unsettled"


def fill(engine: Any, messages: int) -> dict[str, Any]:
    """An agent and one lead's talk made by the service itself, then the replies in one statement."""
    sessions = make_session_factory(engine)

    def uows() -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(sessions)

    org, agent = create_agent_in_process(uows, INSTANCE, "http://127.0.0.1:9")
    event = parse_webhook(webhook_body(INSTANCE, "5511999990000", "Oi", "UNSETTLED-1"))
    assert isinstance(event, MessageUpsert)
    outcome = record_inbound(uows, event)
    assert outcome.talk_id is not None
    started = time.monotonic()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO talk_message (id, organization_id, talk_id, agent_id, direction, channel,"
                " body, message_type, metadata, send_status, send_attempts, sent_at, created_at) "
                "SELECT gen_random_uuid(), :org, :talk, :agent, 'outbound', 'whatsapp', 'a reply',"
                " 'text', '{}'::jsonb,"
                " CASE WHEN n <= 20 THEN 'pending' ELSE 'sent' END,"
                " 1, now(), now() - make_interval(secs => :total - n) "
                "FROM generate_series(1, :total) AS n"
            ),
            {"org": org, "talk": outcome.talk_id, "agent": agent, "total": messages + 20},
        )
    inserted_s = time.monotonic() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE talk_message"))
    return {"agent": agent, "insert_seconds": round(inserted_s, 1)}


def time_reads(engine: Any, agent: uuid.UUID, rounds: int = 50) -> dict[str, Any]:
    later = datetime.now(UTC) + timedelta(minutes=5)
    reads = {
        "messages_awaiting_send": lambda repo: repo.messages_awaiting_send(later, later, 100),
        "sends_in_flight (nothing in flight)": lambda repo: repo.sends_in_flight(agent),
        "unsettled_outbound_of_agent": lambda repo: repo.unsettled_outbound_of_agent(agent, 1000),
    }
    figures: dict[str, Any] = {}
    sessions = make_session_factory(engine)
    with sessions() as session:
        repo = SqlAlchemyRepository(session)
        for name, read in reads.items():
            samples, found = [], None
            for _ in range(rounds):
                started = time.perf_counter()
                found = read(repo)
                samples.append(time.perf_counter() - started)
                session.rollback()
            figures[name] = {
                "p50_ms": round(statistics.median(samples) * 1000, 3),
                "max_ms": round(max(samples) * 1000, 3),
                "result": len(found) if isinstance(found, list) else found,
            }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args()
    with Bench("unsettled", time_limit=600) as bench:
        bench.create_database()
        engine = create_db_engine(bench.db_url or "")
        bench.cleanups.append(engine.dispose)
        setup = fill(engine, args.messages)
        with_index = time_reads(engine, setup["agent"])
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("DROP INDEX idx_talk_message_send_unsettled"))
        engine.dispose()  # fresh connections: no statement prepared while the index existed
        without_index = time_reads(engine, setup["agent"])
        figures = {
            "settled_replies": args.messages,
            "unsettled_replies": {"pending": 20, "sending": 0},
            "insert_seconds": setup["insert_seconds"],
            "with_index": with_index,
            "without_index": without_index,
        }
        for name in with_index:
            print(
                f"{name}: p50 {with_index[name]['p50_ms']} ms with the index, "
                f"{without_index[name]['p50_ms']} ms without (rows {with_index[name]['result']})"
            )
        write_results("unsettled_reads", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
