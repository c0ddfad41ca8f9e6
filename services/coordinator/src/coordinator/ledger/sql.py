"""SQL shared by the ledger's public files: dialect-neutral upserts and the outbox's enqueue."""

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from coordinator.ledger.schema import tracker_writes


def insert_for_dialect(dialect: str, table: sa.Table) -> Any:
    """An INSERT that can say ON CONFLICT (SQLite and PostgreSQL spell it the same; SQLAlchemy needs the dialect)."""
    return _insert(dialect, table)


def upsert(
    connection: Connection,
    table: sa.Table,
    keys: Mapping[str, Any],
    *,
    add: Mapping[str, Any] | None = None,
    set_: Mapping[str, Any] | None = None,
) -> None:
    """Add to a totals row's counters and set its values, creating the row when it is missing.

    One statement (INSERT … ON CONFLICT DO UPDATE), so two writers racing on a brand-new row both succeed.
    """
    add, set_ = add or {}, set_ or {}
    statement = _upsert_statement(connection.dialect.name, table, tuple(keys), tuple(add), tuple(set_))
    connection.execute(statement, {**keys, **add, **set_})


def enqueue_writes(connection: Connection, rows: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """Add ``(issue_key, key, payload)`` wishes to the outbox; each replaces the unwritten wish of its row.

    A replaced wish is due at once and starts its attempts afresh (its predecessor's failures say nothing of it),
    parked no longer; a claim on the row stays, so that one row is never written by two writers at once.
    """
    if not rows:
        return
    latest = {(issue_key, key): payload for issue_key, key, payload in rows}
    values = [
        {
            "issue_key": issue_key,
            "key": key,
            "payload": payload,
            "version": 1,
            "enqueued_at": now,
            "due_at": now,
            "attempts": 0,
        }
        for (issue_key, key), payload in latest.items()
    ]
    connection.execute(_enqueue_statement(connection.dialect.name), values)


# Statements are built once per shape: building one and deriving its cache key cost more than running it.


@functools.cache
def _insert(dialect: str, table: sa.Table) -> Any:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


@functools.cache
def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], add: tuple[str, ...], set_: tuple[str, ...]
) -> Any:
    statement = _insert(dialect, table)
    changes = {name: table.c[name] + statement.excluded[name] for name in add} | {
        name: statement.excluded[name] for name in set_
    }
    if changes:
        return statement.on_conflict_do_update(index_elements=list(keys), set_=changes)
    return statement.on_conflict_do_nothing(index_elements=list(keys))


@functools.cache
def _enqueue_statement(dialect: str) -> Any:
    statement = _insert(dialect, tracker_writes)
    return statement.on_conflict_do_update(
        index_elements=[tracker_writes.c.issue_key, tracker_writes.c.key],
        set_={
            "payload": statement.excluded.payload,
            "version": tracker_writes.c.version + 1,
            "due_at": statement.excluded.due_at,
            "attempts": 0,
            "last_error": None,
            "parked_at": None,
        },
    )
