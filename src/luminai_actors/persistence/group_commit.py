"""Group commit: many callers' single-statement writes share one PostgreSQL transaction and one WAL flush.

A caller (a conversation actor) submits the parameters of one statement and blocks until the transaction
holding it has committed; meanwhile the writer thread takes everything queued, sends it in one pipelined
`executemany` (one network round trip), commits once and hands every caller the row its statement returned.
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
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _Write:
    params: Mapping[str, Any]
    done: threading.Lock = field(default_factory=threading.Lock)
    row: tuple[Any, ...] | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.done.acquire()  # released by the writer once the batch committed or failed


@dataclass
class GroupCommitStats:
    batches: int = 0
    writes: int = 0
    failed_batches: int = 0
    largest_batch: int = 0


class GroupCommitWriter:
    """One thread, one connection, one statement: `write(params)` returns that statement's first row."""

    def __init__(
        self,
        connect: Callable[[], RawConnection],
        statement: str,
        *,
        max_batch: int = 500,
        name: str = "group-commit",
        on_batch: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._connect = connect
        self._statement = statement
        self._max_batch = max_batch
        self._name = name
        self._on_batch = on_batch
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
    def write(self, params: Mapping[str, Any], timeout: float = 30.0) -> tuple[Any, ...] | None:
        """Run the statement with `params` in the next group transaction; block until it committed.

        Returns the statement's first row (None when it returned none). Raises GroupCommitFailed when the
        batch was rolled back, the writer is stopped, or no commit came within `timeout`.
        """
        if self._closed or not self.running:
            raise GroupCommitFailed("the group-commit writer is not running")
        item = _Write(params)
        self._queue.put(item)
        if not item.done.acquire(timeout=timeout):
            # The write may still commit later; the caller's fallback is idempotent, so that is harmless.
            raise GroupCommitFailed(f"no group commit within {timeout} s")
        if item.error is not None:
            raise GroupCommitFailed(str(item.error)) from item.error
        return item.row

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
        ok = False
        try:
            rows = self._execute(batch)
            for item, row in zip(batch, rows, strict=True):
                item.row = row
            ok = True
        except Exception as exc:
            log.warning("group commit of %d writes failed; each falls back: %s", len(batch), exc)
            for item in batch:
                item.error = exc
        finally:
            self.stats.batches += 1
            self.stats.writes += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            if not ok:
                self.stats.failed_batches += 1
            for item in batch:
                item.done.release()
            if self._on_batch is not None:
                try:
                    self._on_batch(len(batch), ok)
                except Exception:
                    log.exception("group commit batch observer failed")

    def _execute(self, batch: Sequence[_Write]) -> list[tuple[Any, ...] | None]:
        if self._connection is None:
            self._connection = self._connect()
        conn = self._connection.driver_connection
        try:
            with conn.cursor() as cursor:
                cursor.executemany(self._statement, [item.params for item in batch], returning=True)
                rows: list[tuple[Any, ...] | None] = []
                while True:
                    rows.append(cursor.fetchone())
                    if not cursor.nextset():
                        break
            conn.commit()
        except Exception:
            self._rollback_or_drop()
            raise
        return rows

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
            if invalidate:
                connection.invalidate()
            connection.close()
        except Exception:
            log.debug("closing the group-commit connection failed", exc_info=True)
