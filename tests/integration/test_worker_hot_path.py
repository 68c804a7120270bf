"""The worker's hot path on a real PostgreSQL (`persistence/hot_path.py`): an AI turn and a send in few Core
statements, and every case the one-statement claims do not cover ending exactly as the general path says.

The statement lists asserted below are what makes the path cheap (12 → 6 statements per AI turn of a new talk,
8 → 3 per send); the outcomes and rows asserted with them are the documented behaviour.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text, update
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.ai.brain import Brain, BrainReply, OfflineBrain, TurnContext
from luminai_actors.errors import DatabaseUnavailable
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook
from luminai_actors.outbound_address import AddressPolicy
from luminai_actors.persistence.database import create_db_engine, make_session_factory
from luminai_actors.persistence.tables import Agent, Contact, Talk, TalkMessage
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork
from luminai_actors.services import admin
from luminai_actors.services.ai_turn import TurnOutcome, run_ai_turn
from luminai_actors.services.inbound import record_inbound
from luminai_actors.services.outbound import DeliveryOutcome, deliver_outbound
from luminai_actors.services.pacing import Pacer
from luminai_actors.services.talks import pause_talk
from luminai_actors.testing import FakeEvolutionApi

pytestmark = pytest.mark.integration

T0 = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)
INSTANCE = "hot-path"
API_KEY = "HOT-KEY"
JID = "5511987654321@s.whatsapp.net"


@dataclass
class Db:
    engine: Engine
    sessions: sessionmaker[Session]
    statements: list[str]
    checkouts: list[int]


@pytest.fixture
def db(clean_pg: str) -> Iterator[Db]:
    engine = create_db_engine(clean_pg)
    statements: list[str] = []
    checkouts: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    @event.listens_for(engine, "checkout")
    def checkout(*args: Any) -> None:
        checkouts.append(1)

    yield Db(engine, make_session_factory(engine), statements, checkouts)
    engine.dispose()


class World:
    """An organization, a tree flow and an agent on `INSTANCE` whose Evolution is the fake; leads write in."""

    def __init__(self, db: Db, evolution_url: str, steps: list[dict[str, Any]] | None = None) -> None:
        self.db = db
        self.uows = lambda: SqlAlchemyUnitOfWork(db.sessions, hold_connection=True)
        org = admin.create_organization(self.uows, {"name": "Acme"})
        flow = admin.create_tree_flow(
            self.uows, org, {"name": "Q", "steps": steps or [{"id": "need", "question": "What do you need?"}]}
        )
        self.agent_id = admin.create_agent(
            self.uows,
            org,
            {
                "name": "Sofia",
                "prompt": "SDR",
                "treeFlowId": str(flow),
                "active": True,
                "whatsapp": {
                    "instanceName": INSTANCE,
                    "serverUrl": evolution_url,
                    "apiKey": API_KEY,
                    "active": True,
                },
            },
        )
        self.seq = 0

    def inbound(self, text: str, at: datetime = T0) -> uuid.UUID:
        self.seq += 1
        event_ = parse_webhook(
            {
                "event": "messages.upsert",
                "instance": INSTANCE,
                "data": {
                    "key": {"remoteJid": JID, "fromMe": False, "id": f"HOT{self.seq}"},
                    "pushName": "Maria Souza",
                    "message": {"conversation": text},
                    "messageTimestamp": int(at.timestamp()),
                },
            }
        )
        assert isinstance(event_, MessageUpsert)
        outcome = record_inbound(self.uows, event_, now=lambda: at)
        assert outcome.status == "stored"
        assert outcome.talk_id is not None
        return outcome.talk_id

    def turn(
        self, talk_id: uuid.UUID, at: datetime = T0, brain: Brain | None = None, debounce: float = 0.0
    ) -> TurnOutcome:
        return run_ai_turn(
            self.uows,
            brain or OfflineBrain(),
            talk_id,
            lease_seconds=120,
            debounce_seconds=debounce,
            now=lambda: at,
        )

    def deliver(
        self, client: EvolutionClient, message_id: uuid.UUID, at: datetime = T0, **kw: Any
    ) -> DeliveryOutcome:
        kw.setdefault("max_attempts", 3)
        return deliver_outbound(self.uows, client, message_id, now=lambda: at, **kw)

    def talk(self, talk_id: uuid.UUID) -> Talk:
        with self.db.sessions() as session:
            talk = session.get(Talk, talk_id)
            assert talk is not None
            return talk

    def messages(self, talk_id: uuid.UUID, direction: str) -> list[TalkMessage]:
        with self.db.sessions() as session:
            rows = session.query(TalkMessage).filter_by(talk_id=talk_id, direction=direction)
            return sorted(rows, key=lambda m: (m.created_at, m.id))

    def contact(self, talk_id: uuid.UUID) -> Contact:
        with self.db.sessions() as session:
            contact = session.get(Contact, self.talk(talk_id).contact_id)
            assert contact is not None
            return contact

    def set(self, model: type[Any], ident: uuid.UUID, **values: Any) -> None:
        with self.db.sessions() as session:
            session.execute(update(model).where(model.id == ident).values(**values))
            session.commit()

    def statements_of(self, work: Callable[[], Any]) -> tuple[Any, list[str]]:
        self.db.statements.clear()
        result = work()
        return result, list(self.db.statements)


@pytest.fixture
def evo() -> Iterator[FakeEvolutionApi]:
    with FakeEvolutionApi() as fake:
        fake.add_instance(INSTANCE, API_KEY)
        yield fake


@pytest.fixture
def client() -> Iterator[EvolutionClient]:
    # The fake Evolution API listens on loopback: allowed as an operator would allow a LAN host.
    evolution = EvolutionClient(timeout=5.0, policy=AddressPolicy.from_entries(["127.0.0.1"]))
    yield evolution
    evolution.close()


@pytest.fixture
def world(db: Db, evo: FakeEvolutionApi) -> World:
    return World(db, evo.url)


class During(Brain):
    """The offline brain, with something done to the database while it composes (the LLM's time)."""

    def __init__(self, meanwhile: Callable[[], Any]) -> None:
        self.inner = OfflineBrain()
        self.name = self.inner.name
        self.meanwhile = meanwhile

    def extract(self, request: Any) -> Any:
        return self.inner.extract(request)

    def compose(self, context: TurnContext) -> BrainReply:
        self.meanwhile()
        return self.inner.compose(context)


def row_state(message: TalkMessage) -> tuple[Any, ...]:
    return (message.send_status, message.send_attempts, message.send_lease_until, message.meta)


# --- AI turn ------------------------------------------------------------------------------------------------


def test_a_turn_claims_and_reads_in_one_statement_and_stores_in_one(world: World) -> None:
    talk_id = world.inbound("Oi, quero saber mais")
    [question] = world.messages(talk_id, "inbound")
    at = T0 + timedelta(seconds=1)

    outcome, statements = world.statements_of(lambda: world.turn(talk_id, at))

    # claim + context + history | talk, processed and reply (one statement of CTEs) | anything more?
    assert statements == ["UPDATE", "WITH", "SELECT"]
    [reply] = world.messages(talk_id, "outbound")
    assert (outcome.status, outcome.reply_message_id, outcome.more_pending) == ("replied", reply.id, False)
    assert reply.body.endswith("What do you need?")
    assert "Maria" in reply.body  # the contact's name was read
    assert "Sofia" in reply.body  # and the agent's
    assert (reply.send_status, reply.send_attempts, reply.created_at) == ("pending", 0, at)
    assert (reply.agent_id, reply.from_agent_id, reply.channel) == (
        world.agent_id,
        world.agent_id,
        "whatsapp",
    )
    assert reply.meta["ai"]["answeredMessageIds"] == [str(question.id)]
    assert reply.meta["ai"]["stepId"] == "need"
    [question] = world.messages(talk_id, "inbound")
    assert question.processed_at == at
    talk = world.talk(talk_id)
    assert (talk.ai_lease_until, talk.date_last_message, talk.paused) == (None, at, False)
    assert talk.talk_flow is not None
    assert talk.talk_flow["currentStepId"] == "need"


def test_only_the_lease_claims_transaction_commits_without_waiting_for_the_disk(world: World) -> None:
    talk_id = world.inbound("Oi")
    with SqlAlchemyUnitOfWork(world.db.sessions, hold_connection=True) as uow:
        assert uow.session is not None
        claimed = uow.repo.claim_turn(talk_id, T0, T0 + timedelta(minutes=2), 20)
        assert claimed is not None
        assert uow.session.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
        uow.commit()
        assert uow.session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"  # the next one
    assert world.talk(talk_id).ai_lease_until == T0 + timedelta(minutes=2)  # committed all the same


def test_a_burst_still_arriving_and_nothing_to_answer_leave_no_lease(world: World) -> None:
    talk_id = world.inbound("Oi")

    early = world.turn(talk_id, T0 + timedelta(seconds=0.5), debounce=2.0)
    assert (early.status, early.delay) == ("debounce", 1.5)
    assert world.talk(talk_id).ai_lease_until is None  # the claim was rolled back
    assert world.messages(talk_id, "outbound") == []

    assert world.turn(talk_id, T0 + timedelta(seconds=3), debounce=2.0).status == "replied"
    again, statements = world.statements_of(lambda: world.turn(talk_id, T0 + timedelta(seconds=4)))
    assert again.status == "nothing_pending"
    assert statements == ["UPDATE"]  # claimed with its history, rolled back
    assert world.talk(talk_id).ai_lease_until is None
    assert len(world.messages(talk_id, "outbound")) == 1


def test_the_claim_reads_the_same_history_as_the_message_views_in_utc(world: World) -> None:
    talk_id = world.inbound("first", T0)
    for n in range(23):
        world.inbound(
            f'msg {n} \u00e9 "quoted" \\ {{json}}', T0 + timedelta(seconds=n + 1, microseconds=n * 7)
        )
    [*_, answered] = world.messages(talk_id, "inbound")
    world.set(TalkMessage, answered.id, processed_at=T0 + timedelta(minutes=5, microseconds=3))
    with SqlAlchemyUnitOfWork(world.db.sessions, hold_connection=True) as uow:
        assert uow.session is not None
        # The JSON carries the session's offset; the views come back in UTC all the same.
        uow.session.execute(text("SET LOCAL TimeZone = 'America/Sao_Paulo'"))
        expected = uow.repo.message_views(talk_id, 20)
        claim = uow.repo.claim_turn(talk_id, T0, T0 + timedelta(minutes=2), 20)
        assert claim is not None
        _, recent = claim
        uow.rollback()
    assert len(expected) == 20
    assert recent == expected  # the same 20 messages, oldest first, every field equal
    assert [v.body for v in recent][-1] == 'msg 22 \u00e9 "quoted" \\ {json}'
    assert recent[-1].processed_at == T0 + timedelta(minutes=5, microseconds=3)
    assert all(v.created_at.tzinfo == UTC and v.sent_at is not None for v in recent)
    assert recent[0].processed_at is None


def test_a_message_stored_while_the_claim_waits_for_the_talk_joins_the_claimed_history(world: World) -> None:
    talk_id = world.inbound("first", T0)
    arrived = T0 + timedelta(seconds=1)
    claimed: list[Any] = []
    # Another transaction stores a message of the talk and touches the talk, as every inbound path does,
    # and holds the talk's row until it commits.
    with world.db.sessions() as other:
        [first] = world.messages(talk_id, "inbound")
        second = TalkMessage(
            id=uuid.uuid4(),
            organization_id=first.organization_id,
            talk_id=talk_id,
            agent_id=first.agent_id,
            from_contact_id=first.from_contact_id,
            direction="inbound",
            channel="whatsapp",
            body="second",
            message_type="text",
            sent_at=arrived,
            created_at=arrived,
        )
        other.add(second)
        other.execute(update(Talk).where(Talk.id == talk_id).values(date_last_message=arrived))
        other.flush()

        def claim() -> None:
            with SqlAlchemyUnitOfWork(world.db.sessions, hold_connection=True) as uow:
                claimed.append(uow.repo.claim_turn(talk_id, arrived, arrived + timedelta(minutes=2), 20))
                uow.rollback()

        claimer = threading.Thread(target=claim)
        claimer.start()
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        deadline = time.monotonic() + 10
        while other.execute(waiting).scalar_one() == 0:  # the claim's snapshot is taken: it waits for the row
            other.execute(text("SELECT pg_stat_clear_snapshot()"))  # the view is a per-transaction snapshot
            assert time.monotonic() < deadline, "the claim never waited for the talk's row"
            time.sleep(0.01)
        other.commit()
    claimer.join(10)
    [(_, recent)] = claimed
    assert [v.body for v in recent] == ["first", "second"]


def test_a_paused_or_leased_talk_gets_its_outcome_from_the_general_path(world: World) -> None:
    talk_id = world.inbound("Oi")
    held = T0 + timedelta(minutes=1)
    world.set(Talk, talk_id, ai_lease_until=held)

    assert world.turn(talk_id).status == "busy"
    assert world.talk(talk_id).ai_lease_until == held  # another worker's lease is left alone

    world.set(Talk, talk_id, ai_lease_until=None, paused=True)
    assert world.turn(talk_id).status == "paused"
    assert world.talk(talk_id).ai_lease_until is None
    assert world.messages(talk_id, "outbound") == []


def test_a_talk_paused_while_the_brain_thinks_gets_no_reply_and_keeps_no_lease(world: World) -> None:
    talk_id = world.inbound("Oi")

    outcome = world.turn(talk_id, brain=During(lambda: pause_talk(world.uows, talk_id)))

    assert outcome.status == "paused"
    talk = world.talk(talk_id)
    assert (talk.paused, talk.ai_lease_until) == (True, None)
    assert world.messages(talk_id, "outbound") == []
    [question] = world.messages(talk_id, "inbound")
    assert question.processed_at is None  # unanswered: the human sees it, resume gives it its turn


def test_a_message_arriving_while_the_brain_thinks_is_left_for_the_next_turn(world: World) -> None:
    talk_id = world.inbound("Oi")

    outcome = world.turn(talk_id, T0 + timedelta(seconds=2), brain=During(lambda: world.inbound("mais uma")))

    assert (outcome.status, outcome.more_pending) == ("replied", True)
    first, second = world.messages(talk_id, "inbound")
    assert (first.processed_at, second.processed_at) == (T0 + timedelta(seconds=2), None)
    nxt = world.turn(talk_id, T0 + timedelta(seconds=3))
    assert (nxt.status, nxt.more_pending) == ("replied", False)


def test_an_opt_out_is_stored_on_the_contact_with_its_confirmation(world: World) -> None:
    talk_id = world.inbound("STOP")
    at = T0 + timedelta(seconds=1)

    assert world.turn(talk_id, at).status == "replied"

    assert world.contact(talk_id).opted_out_at == at
    talk = world.talk(talk_id)
    assert talk.talk_flow is not None
    assert talk.talk_flow["optedOut"] is True
    [confirmation] = world.messages(talk_id, "outbound")
    assert confirmation.meta["ai"]["action"] == "opt_out"
    world.inbound("oi de novo", T0 + timedelta(seconds=5))
    assert world.turn(talk_id, T0 + timedelta(seconds=6)).status == "silent"  # then silence
    assert len(world.messages(talk_id, "outbound")) == 1


def test_a_handoff_outcome_pauses_the_talk_and_flags_it_for_a_human(db: Db, evo: FakeEvolutionApi) -> None:
    world = World(db, evo.url, steps=[{"id": "need", "question": "What do you need?", "outcome": "handoff"}])
    talk_id = world.inbound("Oi")
    assert world.turn(talk_id, T0 + timedelta(seconds=1)).status == "replied"
    world.inbound("Quero falar com uma pessoa sobre um projeto", T0 + timedelta(seconds=5))
    at = T0 + timedelta(seconds=6)

    assert world.turn(talk_id, at).status == "replied"

    talk = world.talk(talk_id)
    assert (talk.paused, talk.needs_human, talk.ai_lease_until) == (True, True, None)
    assert talk.talk_flow is not None
    assert talk.talk_flow["handoff"] == {"reason": "outcome handoff", "at": at.isoformat()}
    assert talk.talk_flow["outcome"] == "handoff"


# --- Send ---------------------------------------------------------------------------------------------------


def reply_of(world: World) -> tuple[uuid.UUID, TalkMessage]:
    talk_id = world.inbound("Oi")
    world.turn(talk_id, T0 + timedelta(seconds=1))
    [reply] = world.messages(talk_id, "outbound")
    return talk_id, reply


def test_the_one_statement_claim_of_a_reply_whose_worker_died_mid_call_looks_for_it_first(
    world: World, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    """The claim that takes over a reply still `sending` notes that its attempt may have gone out
    (`send_path`'s CASE); Evolution 2.3.x has it, so it is settled from the search, not sent again."""
    talk_id, reply = reply_of(world)
    started = datetime.now(UTC) - timedelta(seconds=30)
    client.send_text(evo.url, API_KEY, INSTANCE, "5511987654321", reply.body, trusted=True)  # what went out
    with world.db.sessions() as session:
        session.execute(
            update(TalkMessage)
            .where(TalkMessage.id == reply.id)
            .values(
                send_status="sending",
                send_attempts=1,
                send_lease_until=started,
                meta={"whatsappAttempts": 1, "whatsappLastAttemptAt": started.isoformat()},
            )
        )
        session.commit()

    outcome, statements = world.statements_of(lambda: world.deliver(client, reply.id, datetime.now(UTC)))

    assert outcome.status == "sent"
    assert statements[0] == "UPDATE"  # the one-statement claim took it
    assert len(evo.sendtext_attempts(INSTANCE)) == 1  # only the one before the "crash"
    [sent] = world.messages(talk_id, "outbound")
    assert sent.meta["whatsappMaybeSentAt"] == started.isoformat()
    assert sent.meta["whatsappResponse"]["foundBy"] == "findMessages"


def test_a_send_records_its_attempt_in_one_statement_and_settles_in_two(
    world: World, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    talk_id, reply = reply_of(world)
    at = T0 + timedelta(seconds=2)
    world.db.checkouts.clear()

    outcome, statements = world.statements_of(lambda: world.deliver(client, reply.id, at))

    assert outcome == DeliveryOutcome("sent", 1)
    assert statements == ["UPDATE", "UPDATE", "SELECT"]  # attempt | sent, next reply of the talk?
    assert len(world.db.checkouts) == 2  # one connection per unit of work, not per transaction
    [request] = evo.sendtext_attempts(INSTANCE)
    assert request.json == {"number": "5511987654321", "text": reply.body}
    [sent] = world.messages(talk_id, "outbound")
    wa_id = sent.meta["whatsappResponse"]["key"]["id"]
    assert (sent.send_status, sent.send_attempts, sent.send_lease_until) == ("sent", 1, None)
    assert (sent.sent_at, sent.delivered_at, sent.whatsapp_message_id) == (at, at, wa_id)
    assert sent.meta["ai"] == reply.meta["ai"]  # what the turn wrote is kept
    assert {k: sent.meta[k] for k in ("whatsappSent", "whatsappAttempts", "whatsappMessageId")} == {
        "whatsappSent": True,
        "whatsappAttempts": 1,
        "whatsappMessageId": wa_id,
    }
    assert (sent.meta["whatsappLastAttemptAt"], sent.meta["whatsappSentAt"]) == (
        at.isoformat(),
        at.isoformat(),
    )


def test_a_retried_send_keeps_its_count_and_its_success_drops_the_last_failure(
    world: World, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    talk_id, reply = reply_of(world)
    world.set(TalkMessage, reply.id, meta={**reply.meta, "whatsappError": "old", "whatsappFailedAt": "then"})
    evo.fail_next(1, status=500)

    first = world.deliver(client, reply.id, T0 + timedelta(seconds=2))
    assert (first.status, first.attempts) == ("retry", 1)
    [pending] = world.messages(talk_id, "outbound")
    assert (pending.send_status, pending.meta["whatsappAttempts"]) == ("pending", 1)
    assert pending.send_lease_until is not None  # the scheduled retry owns it

    second = world.deliver(client, reply.id, T0 + timedelta(seconds=4))
    assert second == DeliveryOutcome("sent", 2)
    [sent] = world.messages(talk_id, "outbound")
    assert sent.meta["whatsappAttempts"] == 2
    assert "whatsappError" not in sent.meta
    assert "whatsappFailedAt" not in sent.meta
    assert sent.meta["whatsappLastError"]  # the retry's note stays, as before


def test_record_sent_keeps_a_reconciled_id_when_evolution_answers_none(world: World) -> None:
    _, reply = reply_of(world)
    world.set(TalkMessage, reply.id, whatsapp_message_id="FROM-WEBHOOK", send_status="sending")

    with world.uows() as uow:
        settled = uow.repo.record_sent(reply.id, at=T0, whatsapp_id=None, meta_patch={"whatsappSent": True})
        uow.commit()

    assert settled == (reply.talk_id, reply.created_at)
    [sent] = world.messages(reply.talk_id, "outbound")
    assert (sent.send_status, sent.whatsapp_message_id, sent.meta["whatsappSent"]) == (
        "sent",
        "FROM-WEBHOOK",
        True,
    )


class FixedPacer(Pacer):
    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.asked: list[str] = []

    def try_acquire(self, instance: str) -> float:
        self.asked.append(instance)
        return self.wait


def test_a_paced_send_records_nothing(world: World, evo: FakeEvolutionApi, client: EvolutionClient) -> None:
    talk_id, reply = reply_of(world)
    pacer = FixedPacer(1.5)

    outcome = world.deliver(client, reply.id, T0 + timedelta(seconds=2), pacer=pacer)

    assert (outcome.status, outcome.attempts, outcome.delay) == ("paced", 0, 1.5)
    assert pacer.asked == [INSTANCE]
    [after] = world.messages(talk_id, "outbound")
    assert row_state(after) == row_state(reply)  # the attempt was rolled back with the claim
    assert evo.sendtext_attempts() == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("in_flight", "in_flight"),
        ("disconnected", "waiting"),
        ("inactive", "waiting"),
        ("no_attempts_left", "failed"),
        ("no_address", "failed"),
        ("unconfigured", "failed"),
    ],
)
def test_a_send_that_cannot_go_now_ends_as_the_general_path_says(
    world: World, evo: FakeEvolutionApi, client: EvolutionClient, case: str, expected: str
) -> None:
    talk_id, reply = reply_of(world)
    at = T0 + timedelta(seconds=2)
    if case == "in_flight":
        world.set(
            TalkMessage,
            reply.id,
            send_status="sending",
            send_attempts=1,
            send_lease_until=at + timedelta(minutes=1),
        )
    elif case == "disconnected":
        world.set(Agent, world.agent_id, whatsapp_status="disconnected")
    elif case == "inactive":
        world.set(Agent, world.agent_id, active=False)
    elif case == "no_attempts_left":
        world.set(TalkMessage, reply.id, send_attempts=3)
    elif case == "no_address":
        world.set(Talk, talk_id, whatsapp_remote_jid=None)
        world.set(Contact, world.talk(talk_id).contact_id, phone=None, mobile_phone=None)
    elif case == "unconfigured":
        world.set(Agent, world.agent_id, whatsapp_api_key="")
    [before] = world.messages(talk_id, "outbound")

    outcome = world.deliver(client, reply.id, at)

    assert outcome.status == expected
    assert evo.sendtext_attempts() == []
    [after] = world.messages(talk_id, "outbound")
    if expected == "failed":
        reason = {
            "no_attempts_left": "no attempts left (3 of 3 used)",
            "no_address": "talk has no WhatsApp address to reply to",
            "unconfigured": "agent WhatsApp configuration lacks whatsappApiKey",
        }[case]
        assert (outcome.error, after.send_status, after.meta["whatsappError"]) == (reason, "failed", reason)
        assert world.talk(talk_id).needs_human is True
    else:
        assert row_state(after) == row_state(before)


def test_replies_of_a_talk_go_out_in_order(
    world: World, evo: FakeEvolutionApi, client: EvolutionClient
) -> None:
    talk_id, first = reply_of(world)
    world.inbound("Preciso de um orçamento", T0 + timedelta(seconds=3))
    world.turn(talk_id, T0 + timedelta(seconds=4))
    _, second = world.messages(talk_id, "outbound")

    blocked = world.deliver(client, second.id, T0 + timedelta(seconds=5))
    assert blocked.status == "blocked"
    [_, unchanged] = world.messages(talk_id, "outbound")
    assert row_state(unchanged) == row_state(second)

    sent = world.deliver(client, first.id, T0 + timedelta(seconds=6))
    assert (sent.status, sent.next_message_id) == ("sent", second.id)  # hands over to the next reply
    assert world.deliver(client, second.id, T0 + timedelta(seconds=7)).status == "sent"
    assert [r.json["text"] for r in evo.sendtext_attempts(INSTANCE)] == [first.body, second.body]


# --- One connection per unit of work ----------------------------------------------------------------------


def test_a_held_connection_serves_reads_after_commit_without_a_second_checkout(world: World) -> None:
    talk_id = world.inbound("Oi")
    for hold, checkouts in ((True, 1), (False, 2)):
        world.db.checkouts.clear()
        with SqlAlchemyUnitOfWork(world.db.sessions, hold_connection=hold) as uow:
            assert uow.repo.has_pending_inbound(talk_id) is True
            uow.commit()
            assert uow.repo.has_pending_inbound(talk_id) is True
        assert len(world.db.checkouts) == checkouts


def test_a_held_connection_that_cannot_be_had_is_database_unavailable() -> None:
    engine = create_db_engine("postgresql+psycopg://root@127.0.0.1:1/none")
    try:
        with (
            pytest.raises(DatabaseUnavailable),
            SqlAlchemyUnitOfWork(make_session_factory(engine), hold_connection=True),
        ):
            pass
    finally:
        engine.dispose()


def test_the_autocommit_read_after_commit_does_not_leak_to_the_next_user_of_the_connection(
    world: World, clean_pg: str
) -> None:
    talk_id = world.inbound("Oi")
    engine = create_db_engine(clean_pg, pool_size=1)
    handed_out: list[Any] = []
    event.listen(engine, "checkout", lambda dbapi_connection, *args: handed_out.append(dbapi_connection))
    sessions = make_session_factory(engine)
    try:
        for hold in (True, False):
            with SqlAlchemyUnitOfWork(sessions, hold_connection=hold) as uow:
                uow.repo.release_ai_turn(talk_id)
                uow.commit()
                assert uow.repo.has_pending_inbound(talk_id) is True  # read outside a transaction
            with SqlAlchemyUnitOfWork(sessions, hold_connection=True) as uow:
                uow.session.execute(update(Talk).where(Talk.id == talk_id).values(subject="not kept"))  # type: ignore[union-attr]
                uow.rollback()
            assert world.talk(talk_id).subject != "not kept"  # still transactional: rolled back
        assert len({id(c) for c in handed_out}) == 1  # always the same pooled connection
    finally:
        engine.dispose()
