"""Group commit: many callers' writes share one PostgreSQL transaction and one WAL flush.

A caller (a conversation actor) submits the parameters of one write and blocks until the transaction
holding it has committed; meanwhile the writer thread takes everything queued, hands the whole batch to its
`run_batch` function (typically one set-based statement over arrays: one round trip, one plan), commits once
and gives every caller the result `run_batch` produced for it.
Whatever arrives while a commit is in flight forms the next batch, so batches grow with the load without any
timer: one webhook alone waits for one commit, a thousand concurrent ones share a few.

A batch that fails (a lost connection, a deadlock with another process, any statement error) is rolled back
as a whole and every caller in it gets `GroupCommitFailed`: none of its rows exist, so the caller falls back
to its own transaction, which decides exactly-once and duplicates itself. A commit whose outcome is unknown
(the connection died during COMMIT) is reported the same way; the fallback then finds the rows if they were
committed, because the callers' statements are idempotent (ON CONFLICT DO NOTHING on a unique key).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class GroupCommitFailed(Exception):
    """The batch holding this write was rolled back (or its commit's outcome is unknown)."""


class RawConnection(Protocol):
    """What the writer needs of a pooled DB-API connection (SQLAlchemy's PoolProxiedConnection)."""

    @property
    def driver_connection(self) -> Any: ...
    def invalidate(self, e: BaseException | None = None) -> None: ...
    def close(self) -> None: ...


Done = Callable[[Any, BaseException | None], None]
"""Called once from the writer thread: (result, None) after the commit, or (None, error) when it failed."""


@dataclass(slots=True)
class _Write:
    params: Mapping[str, Any]
    done: Done


class _Waiter:
    """Turns the callback into a blocking wait for `write()`."""

    __slots__ = ("error", "lock", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # released by the callback
        self.result: Any = None
        self.error: BaseException | None = None

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.lock.release()


@dataclass
class GroupCommitStats:
    batches: int = 0
    writes: int = 0
    failed_batches: int = 0
    largest_batch: int = 0


RunBatch = Callable[[Any, Sequence[Mapping[str, Any]]], Sequence[Any]]
"""(psycopg connection, the batch's params in submission order) -> one result per params, same order."""

# single_statement=True: the writer's connection runs in autocommit, so `run_batch` must issue exactly one
# writing statement, which PostgreSQL commits atomically by itself (one round trip instead of BEGIN, the
# statement and COMMIT). The connection goes back to the pool with autocommit off.


class GroupCommitWriter:
    """One thread, one connection: `write(params)` returns what `run_batch` produced for those params."""

    def __init__(
        self,
        connect: Callable[[], RawConnection],
        run_batch: RunBatch,
        *,
        max_batch: int = 500,
        name: str = "group-commit",
        on_batch: Callable[[int, bool], None] | None = None,
        single_statement: bool = False,
        around_callbacks: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self._connect = connect
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._name = name
        self._on_batch = on_batch
        self._single_statement = single_statement
        self._around_callbacks = around_callbacks
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._connection: RawConnection | None = None
        self._closed = False
        self.stats = GroupCommitStats()

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._closed = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread and return the connection to the pool."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self._drop_connection(invalidate=False)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # callers ---------------------------------------------------------------------------------------------
    def submit(self, params: Mapping[str, Any], done: Done) -> None:
        """Queue `params` for the next group transaction; `done` is called once it committed or failed.

        `done` runs on the writer thread (or at once, on the caller's, with GroupCommitFailed when the
        writer is not running), so it must be quick and must not block on another write.
        """
        if self._closed or not self.running:
            done(None, GroupCommitFailed("the group-commit writer is not running"))
            return
        self._queue.put(_Write(params, done))

    def write(self, params: Mapping[str, Any], timeout: float = 30.0) -> Any:
        """`submit` and block until the commit: returns `run_batch`'s result for these params.

        Raises GroupCommitFailed when the batch was rolled back, the writer is stopped, or no commit came
        within `timeout` (the write may still commit later; callers' fallbacks are idempotent).
        """
        waiter = _Waiter()
        self.submit(params, waiter)
        if not waiter.lock.acquire(timeout=timeout):
            raise GroupCommitFailed(f"no group commit within {timeout} s")
        if waiter.error is not None:
            raise GroupCommitFailed(str(waiter.error)) from waiter.error
        return waiter.result

    # the writer thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop_after = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop_after = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop_after:
                return

    def _commit(self, batch: Sequence[_Write]) -> None:
        results: Sequence[Any] = ()
        error: BaseException | None = None
        try:
            results = self._execute(batch)
        except Exception as exc:
            log.warning("group commit of %d writes failed; each falls back: %s", len(batch), exc)
            error = GroupCommitFailed(str(exc))
            error.__cause__ = exc
        self.stats.batches += 1
        self.stats.writes += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        if error is not None:
            self.stats.failed_batches += 1
        try:
            with self._around_callbacks() if self._around_callbacks is not None else nullcontext():
                for index, item in enumerate(batch):
                    try:
                        item.done(results[index] if error is None else None, error)
                    except Exception:
                        log.exception("a group commit callback failed")
        except Exception:
            log.exception("the group commit's callback wrapper failed")
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), error is None)
            except Exception:
                log.exception("group commit batch observer failed")

    def _execute(self, batch: Sequence[_Write]) -> Sequence[Any]:
        if self._connection is None:
            self._connection = self._connect()
            if self._single_statement:
                self._connection.driver_connection.autocommit = True
        conn = self._connection.driver_connection
        try:
            results = self._run_batch(conn, [item.params for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch gave {len(results)} results for {len(batch)} writes")
            if not self._single_statement:
                conn.commit()
        except Exception:
            self._rollback_or_drop()
            raise
        return results

    def _rollback_or_drop(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.driver_connection.rollback()
        except Exception:
            self._drop_connection(invalidate=True)
            return
        if getattr(self._connection.driver_connection, "closed", False):
            self._drop_connection(invalidate=True)

    def _drop_connection(self, *, invalidate: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._single_statement and not invalidate:
                connection.driver_connection.autocommit = False  # back to the pool as it came
            if invalidate:
                connection.invalidate()
            connection.close()
        except Exception:
            log.debug("closing the group-commit connection failed", exc_info=True)
