"""Unit of work: one transaction per use case, with database failures translated into the error tree.

Services write `with uow_factory() as uow: ...; uow.commit()`. Leaving the block without commit rolls back.
A unique-constraint violation surfaces as `Conflict` (the service decides whether it was a race it can
resolve by reading again); a lost or refused connection as `DatabaseUnavailable` (the web layer answers 503
and Evolution delivers the webhook again). `lock(key)` serialises one key across processes until the end of
the transaction (PostgreSQL advisory lock; SQLite already serialises writers with BEGIN IMMEDIATE).

A session gets a pooled connection for each transaction (checked out at its first statement, and pinged
first on PostgreSQL when it sat in the pool over a second; given back at commit).
`SqlAlchemyUnitOfWork(..., hold_connection=True)` instead checks out one connection when the block starts
and keeps it to the end, so a read after `commit()` (the worker's "anything more to do?") needs no second
checkout. Only for blocks that wait on nothing else between their transactions: a connection held across a
long wait would not be pinged before its next use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import Connection, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from luminai_actors.errors import Conflict, DatabaseUnavailable, PayloadError
from luminai_actors.persistence.repository import Repository, SqlAlchemyRepository


class UnitOfWork(Protocol):
    repo: Repository

    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def lock(self, key: str) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]

log = logging.getLogger(__name__)

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def translate_db_error(exc: BaseException) -> BaseException:
    """The error tree's view of a SQLAlchemy error (or the error itself when it is not one)."""
    if isinstance(exc, sa_exc.IntegrityError):
        return Conflict(str(exc.orig) if exc.orig is not None else str(exc))
    if isinstance(
        exc, sa_exc.DataError
    ):  # a value the database refuses (too long, out of range): every retry
        # would fail the same way, so it is the request's fault (422), not an outage (503)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        return PayloadError(f"a value does not fit the database: {reason}", status=422)
    if isinstance(exc, _UNAVAILABLE) or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        # the driver's reason is for the operator's log; a caller is told only the kind of failure
        lines = str(getattr(exc, "orig", None) or exc).splitlines()
        log.warning("database unavailable: %s: %s", type(exc).__name__, lines[0] if lines else "")
        return DatabaseUnavailable(f"database unavailable: {type(exc).__name__}")
    return exc


class SqlAlchemyUnitOfWork:
    def __init__(self, session_factory: sessionmaker[Session], *, hold_connection: bool = False) -> None:
        self._session_factory = session_factory
        self._hold_connection = hold_connection
        self._connection: Connection | None = None
        self.session: Session | None = None

    def __enter__(self) -> Self:
        if self._hold_connection:
            engine = self._session_factory.kw["bind"]
            try:
                self._connection = engine.connect()
            except sa_exc.SQLAlchemyError as exc:
                translated = translate_db_error(exc)
                if translated is not exc:
                    raise translated from exc
                raise
            # Bound to a connection it did not open, the session commits and rolls back its own
            # transactions on it and leaves the connection open at commit and close.
            self.session = self._session_factory(bind=self._connection)
        else:
            self.session = self._session_factory()
        self.repo: Repository = SqlAlchemyRepository(self.session)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.session is not None
        try:
            # close() rolls back what was not committed and detaches objects with their loaded state intact
            # (an explicit rollback() would expire them, and callers read them after the block).
            self.session.close()
        except sa_exc.SQLAlchemyError:
            log.warning("closing a database session failed; its connection is discarded", exc_info=True)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()  # back to the pool
            except sa_exc.SQLAlchemyError:
                log.warning("returning a database connection failed; it is discarded", exc_info=True)
        if exc is not None:
            translated = translate_db_error(exc)
            if translated is not exc:
                raise translated from exc

    def commit(self) -> None:
        assert self.session is not None
        try:
            self.session.commit()
        except sa_exc.SQLAlchemyError as exc:
            self.session.rollback()
            raise translate_db_error(exc) from exc

    def rollback(self) -> None:
        assert self.session is not None
        self.session.rollback()

    def lock(self, key: str) -> None:
        assert self.session is not None
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def session_of(uow: object) -> Session:
    """The SQLAlchemy session of a unit of work opened by `SqlAlchemyUnitOfWork` (for the admin, console and
    privacy queries, which read with plain `select()`s the repository does not offer)."""
    assert isinstance(uow, SqlAlchemyUnitOfWork)
    assert uow.session is not None
    return uow.session
