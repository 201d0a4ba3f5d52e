"""Many-row INSERTs for the SQLite batch writer, on the driver's own connection.

`connection.execute(insert(table), rows)` compiles the statement's parameters for every row into
dictionaries before the driver sees them; at a few thousand decisions per second that bookkeeping cost
more than SQLite's own work. A `BulkInsert` compiles the statement once per set of columns and turns
each row into a tuple with the columns' own bind processors — the conversions SQLAlchemy applies
(timezone-aware datetimes to the stored text, JSON documents to text) — then hands the tuples to the
driver's `executemany`. `immediate_transaction` is the batch's transaction on that connection: checking
a connection out of SQLAlchemy's pool, its events and its transaction objects cost ~55 µs per batch, which
a batch of one decision (a quiet server) pays alone.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

__all__ = ["BulkInsert", "immediate_transaction"]


_NOTHING = object()


class _Compiled(NamedTuple):
    sql: str
    order: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


class BulkInsert:
    """`execute(connection, rows)`: insert `rows` (dicts with the same keys) into `table`.

    `on_conflict_do_nothing` names the unique columns whose conflicts skip a row (SQLite's
    `ON CONFLICT (...) DO NOTHING`); `execute` returns the number of rows inserted.
    """

    def __init__(self, table: sa.Table, dialect: Dialect, *, on_conflict_do_nothing: Sequence[str] = ()) -> None:
        self._table = table
        self._dialect = dialect
        self._conflict_columns = tuple(on_conflict_do_nothing)
        self._compiled: dict[frozenset[str], _Compiled] = {}

    def _statement(self, names: frozenset[str]) -> _Compiled:
        found = self._compiled.get(names)
        if found is None:
            statement: Any = sa.insert(self._table)
            if self._conflict_columns:
                statement = sqlite_insert(self._table).on_conflict_do_nothing(index_elements=self._conflict_columns)
            compiled = statement.compile(dialect=self._dialect, column_keys=sorted(names))
            order = tuple(compiled.positiontup or ())  # the columns in the order of the statement's "?"s
            if set(order) != names:
                unknown = sorted(names - set(order))
                raise ValueError(f"the table {self._table.name} has no column(s) {unknown}; fix the row's keys")
            processors = tuple(
                self._table.c[name].type.dialect_impl(self._dialect).bind_processor(self._dialect) for name in order
            )
            found = self._compiled[names] = _Compiled(str(compiled), order, processors)
        return found

    def execute(self, connection: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert `rows` on the driver's connection (inside the caller's transaction)."""
        if not rows:
            return 0
        statement = self._statement(frozenset(rows[0]))
        converters = [(index, process) for index, process in enumerate(statement.processors) if process is not None]
        # Rows of one batch often share a value (its `now`, a payload): convert each object once.
        converted: list[tuple[object, object]] = [(_NOTHING, None)] * len(statement.order)
        parameters = []
        for row in rows:
            values = [row[name] for name in statement.order]
            for index, process in converters:
                value = values[index]
                last_value, last_result = converted[index]
                if value is not last_value:
                    last_result = process(value)
                    converted[index] = (value, last_result)
                values[index] = last_result
            parameters.append(tuple(values))
        return int(connection.executemany(statement.sql, parameters).rowcount)


@contextlib.contextmanager
def immediate_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on a driver connection in autocommit mode (`isolation_level = None`, as
    the store's engines set it); anything raised rolls back. BEGIN raises "database is locked" when
    another connection holds the write lock longer than the connection's busy timeout."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
