"""GroupCommitWriter on a scripted connection: batching while a commit is in flight, one row per caller, a
failed batch failing every caller in it (and only it), reconnecting after a broken connection; and the
AI-turn request coalescing of TurnRequests."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from luminai_actors.persistence.group_commit import GroupCommitFailed, GroupCommitWriter
from luminai_actors.services.inbound_fast import TurnRequests


class ScriptedConnection:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.commits = 0
        self.rollbacks = 0
        self.closed = False
        self.fail_next = False
        self.break_on_fail = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def run(self, params: list[dict[str, Any]]) -> list[tuple[int]]:
        self.entered.set()
        self.release.wait(10)
        if self.fail_next:
            self.fail_next = False
            if self.break_on_fail:
                self.closed = True
            raise RuntimeError("statement failed")
        self.batches.append([p["n"] for p in params])
        return [(p["n"] * 10,) for p in params]

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        self.rollbacks += 1
        if self.closed:
            raise RuntimeError("connection is closed")


class Pooled:
    def __init__(self, conn: ScriptedConnection, log: list[str]) -> None:
        self.driver_connection = conn
        self.log = log

    def invalidate(self, e: BaseException | None = None) -> None:
        self.log.append("invalidate")

    def close(self) -> None:
        self.log.append("close")


@pytest.fixture
def conns() -> list[ScriptedConnection]:
    return []


def make_writer(conns: list[ScriptedConnection], log: list[str]) -> GroupCommitWriter:
    def connect() -> Pooled:
        conns.append(ScriptedConnection())
        return Pooled(conns[-1], log)

    def run_batch(conn: ScriptedConnection, params: Any) -> list[tuple[int]]:
        return conn.run(list(params))

    writer = GroupCommitWriter(connect, run_batch)
    writer.start()
    return writer


def test_writes_queued_during_a_commit_share_the_next_one(conns: list[ScriptedConnection]) -> None:
    writer = make_writer(conns, [])
    assert writer.write({"n": 1}) == (10,)
    conn = conns[0]
    conn.release.clear()
    conn.entered.clear()
    results: dict[int, Any] = {}
    first = threading.Thread(target=lambda: results.update({2: writer.write({"n": 2})}))
    first.start()
    assert conn.entered.wait(5)  # write 2 is being executed; the next five queue up meanwhile
    others = [
        threading.Thread(target=lambda n=n: results.update({n: writer.write({"n": n})})) for n in range(3, 8)
    ]
    for t in others:
        t.start()
    while writer._queue.qsize() < 5:  # all five are waiting for the writer
        threading.Event().wait(0.005)
    conn.release.set()
    for t in [first, *others]:
        t.join(5)
    writer.stop()

    assert conn.batches[:2] == [[1], [2]]
    assert sorted(conn.batches[2]) == [3, 4, 5, 6, 7]
    assert results == {n: (n * 10,) for n in range(2, 8)}  # each caller gets its own row
    assert conn.commits == 3
    assert writer.stats.largest_batch == 5


def test_a_failed_batch_fails_its_callers_and_the_writer_goes_on(conns: list[ScriptedConnection]) -> None:
    log: list[str] = []
    writer = make_writer(conns, log)
    writer.write({"n": 1})
    conns[0].fail_next = True
    with pytest.raises(GroupCommitFailed):
        writer.write({"n": 2})
    assert writer.write({"n": 3}) == (30,)
    writer.stop()
    assert conns[0].rollbacks == 1
    assert conns[0].batches == [[1], [3]]  # same healthy connection, nothing of the failed batch kept
    assert writer.stats.failed_batches == 1


def test_a_broken_connection_is_discarded_and_replaced(conns: list[ScriptedConnection]) -> None:
    log: list[str] = []
    writer = make_writer(conns, log)
    writer.write({"n": 1})
    conns[0].fail_next = True
    conns[0].break_on_fail = True
    with pytest.raises(GroupCommitFailed):
        writer.write({"n": 2})
    assert writer.write({"n": 3}) == (30,)
    writer.stop()
    assert len(conns) == 2
    assert log[:2] == ["invalidate", "close"]
    assert conns[1].batches == [[3]]


def test_a_stopped_writer_refuses_instead_of_blocking(conns: list[ScriptedConnection]) -> None:
    writer = make_writer(conns, [])
    writer.stop()
    with pytest.raises(GroupCommitFailed):
        writer.write({"n": 1})


def test_turn_requests_cover_the_debounce_window_but_its_last_margin() -> None:
    now = [1000.0]
    turns = TurnRequests(clock=lambda: now[0])
    talk, other = uuid.uuid4(), uuid.uuid4()
    assert not turns.covered(talk, 2.0)
    turns.mark(talk, 1000.0, 2.0)  # that turn claims the talk no earlier than 1002.0
    now[0] = 1001.74
    assert turns.covered(talk, 2.0)
    assert not turns.covered(other, 2.0)
    now[0] = 1001.75  # within the 0.25 s margin before it may start: request again
    assert not turns.covered(talk, 2.0)


def test_a_short_debounce_window_keeps_half_of_itself_as_the_margin() -> None:
    now = [50.0]
    turns = TurnRequests(clock=lambda: now[0])
    talk = uuid.uuid4()
    turns.mark(talk, 50.0, 0.3)
    now[0] = 50.14
    assert turns.covered(talk, 0.3)
    now[0] = 50.15
    assert not turns.covered(talk, 0.3)


def test_without_debounce_every_message_requests_its_turn() -> None:
    turns = TurnRequests(clock=lambda: 5.0)
    talk = uuid.uuid4()
    turns.mark(talk, 5.0, 0.0)
    assert not turns.covered(talk, 0.0)


def test_a_single_statement_writer_runs_in_autocommit_and_returns_the_connection_as_it_came(
    conns: list[ScriptedConnection],
) -> None:
    seen: list[bool] = []

    def connect() -> Pooled:
        conns.append(ScriptedConnection())
        conns[-1].autocommit = False  # type: ignore[attr-defined]
        return Pooled(conns[-1], [])

    def run_batch(conn: ScriptedConnection, params: Any) -> list[tuple[int]]:
        seen.append(conn.autocommit)  # type: ignore[attr-defined]
        return conn.run(list(params))

    writer = GroupCommitWriter(connect, run_batch, single_statement=True)
    writer.start()
    assert writer.write({"n": 4}) == (40,)
    writer.stop()

    assert seen == [True]
    assert conns[0].commits == 0  # PostgreSQL committed the one statement by itself
    assert conns[0].autocommit is False  # type: ignore[attr-defined]


def test_a_batchs_callbacks_run_inside_one_around_callbacks_block(conns: list[ScriptedConnection]) -> None:
    events: list[str] = []

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        events.append("enter")
        yield
        events.append("exit")
        raise RuntimeError("a broken wrapper must not stop the writer")

    def connect() -> Pooled:
        conns.append(ScriptedConnection())
        return Pooled(conns[-1], [])

    writer = GroupCommitWriter(connect, lambda conn, params: conn.run(list(params)), around_callbacks=around)
    writer.start()
    writer.write({"n": 0})
    assert events == ["enter", "exit"]
    events.clear()
    conn = conns[0]
    conn.release.clear()
    conn.entered.clear()
    done = threading.Event()
    writer.submit({"n": 1}, lambda result, error: events.append(f"done 1 {result}"))
    assert conn.entered.wait(5)
    for n in (2, 3):
        writer.submit({"n": n}, lambda result, error, n=n: events.append(f"done {n} {result}"))
    writer.submit({"n": 4}, lambda result, error: (events.append(f"done 4 {result}"), done.set()))
    conn.release.set()
    assert done.wait(5)
    writer.stop()

    assert events == [
        "enter", "done 1 (10,)", "exit",
        "enter", "done 2 (20,)", "done 3 (30,)", "done 4 (40,)", "exit",
    ]  # fmt: skip
    assert writer.stats.batches == 3  # the wrapper's exceptions did not stop the writer
