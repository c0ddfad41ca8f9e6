"""How the ledger runs a transaction: whole, in one thread, on SQLite; on the async engine on PostgreSQL.

A transaction is a plain function over a synchronous SQLAlchemy ``Connection``, so the same SQL serves both.

Why a thread for SQLite: aiosqlite hands every statement to its own thread four times (cursor, execute,
fetch, close), and each hand-back waits for the event loop's next turn. A decision of a dozen statements
held SQLite's one connection across some forty turns of a busy loop, 10 to 20 ms, and every other decision
queued behind it (``make bench-coordinator``: the coordinator stalled at ~40 nudges/s with the CPU half idle).
Run whole in one thread, a transaction costs one hand-off. The thread holds the database's only writing
connection, so transactions are serialised without busy-waiting on the file lock; writes begin with
``BEGIN IMMEDIATE``, so what they read stays true until they commit, for other processes too.

PostgreSQL runs the same function through ``AsyncConnection.run_sync`` on asyncpg: there a connection per
transaction, concurrency from the pool, and the launch lock where a decision needs one.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


class Transactions(Protocol):
    """Runs one transaction (a function over a connection) and returns what it returns."""

    dialect: str

    async def write[T](self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction that commits when it returns and rolls back when it raises."""
        ...

    async def read[T](self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a consistent snapshot, writing nothing."""
        ...

    async def close(self) -> None:
        """Release the connections (and the thread)."""
        ...


class AsyncEngineTransactions:
    """Transactions on an async engine (PostgreSQL), through ``run_sync``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name

    async def write[T](self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def read[T](self, work: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        """The engine belongs to whoever opened it."""


class SqliteThreadTransactions:
    """Transactions on SQLite, each run whole in the one thread that owns the one connection."""

    def __init__(self, path: str) -> None:
        self.dialect = "sqlite"
        # Created here, connected lazily in the thread (pysqlite connections stay in the thread that made them).
        self._engine = sa.create_engine(f"sqlite+pysqlite:///{path}", pool_size=1, max_overflow=0)
        sa.event.listen(self._engine, "connect", sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")

    async def write[T](self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, work)

    async def read[T](self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, work)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)

    def _write[T](self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as connection:
            # pysqlite would open the transaction only at the first write; the write lock first instead.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return work(connection)

    def _read[T](self, work: Callable[[Connection], T]) -> T:
        with self._engine.connect() as connection:
            connection.exec_driver_sql("BEGIN")  # one snapshot for every statement of the read
            try:
                return work(connection)
            finally:
                connection.rollback()


def sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer; NORMAL: a commit no longer waits for an fsync.

    A power cut may lose the last transactions, never corrupt the file; the broker redelivers what was not acked.
    """
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")  # another process's writer: wait for it rather than fail
    cursor.close()
