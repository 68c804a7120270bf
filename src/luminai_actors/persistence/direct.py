"""Hot-path statements handed to psycopg's cursor directly, past SQLAlchemy's execution machinery.

`Connection.execute` costs about 0.13 ms of CPU per statement on top of the driver's own work (its execution
context, result metadata, row objects: measured 212 against 77 µs per execution of the lead path's first
statement on PostgreSQL). A new lead and its AI turn run about ten statements on the way to their reply, so
`rows(connection, statement, params)` compiles each of those Core statements once per dialect (and set of
parameter names) and executes it with `Connection._cursor_execute`, the call SQLAlchemy itself uses for its
special-case executions, which keeps everything around the driver call the same:

- `before_cursor_execute` / `after_cursor_execute` listeners and echo logging run as for any statement;
- a driver error becomes the same SQLAlchemy exception (`IntegrityError`, `OperationalError`, ...), and a lost
  connection invalidates the pool as it would have;
- the connection's transaction begins as `Connection.execute` would begin it (autobegin).

What SQLAlchemy would have done to the values is done here too: the values bound at compile time (literals)
are filled in, Python-side column defaults (`onupdate=utcnow`) are evaluated, each parameter goes through its
type's bind processor (JSON to psycopg's `Jsonb`, the timezone check of `UTCDateTime`, ...) and each result
column through its result processor. Statements this cannot run that way (expanding `IN` parameters, escaped
parameter names, a positional paramstyle) and every dialect but psycopg's go through `Connection.execute`
instead, with the same rows (as tuples) as the result.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Row = tuple[Any, ...]


@dataclass(slots=True)
class _Plan:
    sql: str
    # values bound at compile time (literal(...), bindparam(value=...)) and scalar column defaults
    literals: dict[str, Any]
    # Python-side callable column defaults, evaluated per execution (`onupdate=utcnow`, say): (name, callable)
    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    bind_processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    result_types: tuple[Any, ...]  # SQLAlchemy types of the result columns, in cursor order
    # One entry per result column, from the first execution's `cursor.description`: the processor or None.
    result_processors: tuple[Callable[[Any], Any] | None, ...] | None = None


#: statement -> dialect -> parameter names -> plan (None: that combination runs through Connection.execute).
#: SQLAlchemy compiles a DML statement for the parameter names it is given, and so does `_plan`.
_ByNames = dict[tuple[str, ...], _Plan | None]
_PLANS: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Dialect, _ByNames]]
_PLANS = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()


def _plan_for(statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]) -> _Plan | None:
    by_dialect = _PLANS.get(statement)
    by_names = by_dialect.get(dialect) if by_dialect is not None else None
    if by_names is not None:
        try:
            return by_names[names]
        except KeyError:
            pass
    plan = _plan(statement, dialect, names)
    with _PLANS_LOCK:
        by_dialect = _PLANS.get(statement)
        if by_dialect is None:
            by_dialect = _PLANS[statement] = weakref.WeakKeyDictionary()
        by_names = by_dialect.get(dialect)
        if by_names is None:
            by_names = by_dialect[dialect] = {}
        by_names[names] = plan
    return plan


def rows(connection: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> list[Row]:
    """Every row `statement` returns with `params` (an empty list when it returns none)."""
    plan = _plan_for(statement, connection.dialect, tuple(params))
    if plan is None:
        return _through_sqlalchemy(connection, statement, params)
    values = dict(plan.literals)
    values.update(params)
    for name, default in plan.defaults:
        values[name] = default()
    for name, process in plan.bind_processors:
        if name in values:
            values[name] = process(values[name])
    if not connection.in_transaction():
        connection.begin()  # what Connection.execute's autobegin does
    cursor = connection.connection.cursor()
    try:
        connection._cursor_execute(cursor, plan.sql, values)
        description: Any = cursor.description
        if description is None:
            return []
        fetched = cast(list[Row], cursor.fetchall())  # psycopg's rows are tuples
    finally:
        cursor.close()
    processors = plan.result_processors
    if processors is None:
        processors = plan.result_processors = _result_processors(plan, connection.dialect, description)
    if not any(processors):
        return fetched
    return [
        tuple(
            value if process is None else process(value)
            for process, value in zip(processors, row, strict=True)
        )
        for row in fetched
    ]


def first(connection: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> Row | None:
    """The first row `statement` returns, or None."""
    found = rows(connection, statement, params)
    return found[0] if found else None


def scalar_one(connection: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> Any:
    """The single value of the single row `statement` returns (LookupError otherwise)."""
    found = rows(connection, statement, params)
    if len(found) != 1:
        raise LookupError(f"expected exactly one row, got {len(found)}")
    return found[0][0]


def _through_sqlalchemy(connection: Connection, statement: Any, params: Mapping[str, Any]) -> list[Row]:
    result = connection.execute(statement, params)
    return [tuple(row) for row in result] if result.returns_rows else []


def _plan(statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]) -> _Plan | None:
    """The statement compiled for `dialect` and the parameter `names` as `Connection.execute` compiles it,
    or None when it must run through Connection.execute."""
    if dialect.driver != "psycopg" or dialect.paramstyle != "pyformat":
        return None
    compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
    if not isinstance(compiled, SQLCompiler):
        return None
    if (
        compiled.positional
        or compiled.escaped_bind_names
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.postfetch_lastrowid
        or any(bind.expanding or bind.callable is not None for bind in compiled.binds.values())
    ):
        return None
    literals = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    defaults = []
    for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
        default: Any = column.default if column in compiled.insert_prefetch else column.onupdate
        name = column.key
        if default is None or f"%({name})s" not in compiled.string:
            return None
        if default.is_scalar:  # the same value every time: a literal (prefetched columns are never in params)
            literals[name] = default.arg
        elif default.is_callable:
            defaults.append((name, functools.partial(default.arg, None)))  # a zero-argument callable, wrapped
        else:
            return None
    processors = []
    for name, process in compiled._bind_processors.items():
        if not callable(process):  # a tuple type's processors
            return None
        processors.append((name, process))
    return _Plan(
        sql=compiled.string,
        literals=literals,
        defaults=tuple(defaults),
        bind_processors=tuple(processors),
        result_types=tuple(entry.type for entry in compiled._result_columns),
    )


def _result_processors(
    plan: _Plan, dialect: Dialect, description: Any
) -> tuple[Callable[[Any], Any] | None, ...]:
    if len(description) != len(plan.result_types):
        raise RuntimeError(
            f"the statement returned {len(description)} columns where it was compiled for "
            f"{len(plan.result_types)}: {plan.sql[:80]}"
        )
    return tuple(
        type_._cached_result_processor(dialect, column.type_code)
        for type_, column in zip(plan.result_types, description, strict=True)
    )
