"""SQLite delivery store: one file shared by every issue-tracker process on the host (WAL mode)."""

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from issue_tracker.deliveries.public_errors import DeliveryStoreError

_PRUNE_EVERY = 1000


class SqliteDeliveryStore:
    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor, retention_s: int) -> None:
        self._connection = connection
        self._executor = executor
        self._retention_s = retention_s
        self._records_since_prune = 0

    @classmethod
    async def open(cls, path: str, *, retention_s: int) -> Self:
        # One thread owns the connection: sqlite3 objects must stay on the thread that made them.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliveries-sqlite")

        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS webhook_deliveries ("
                " delivery_id TEXT PRIMARY KEY, event TEXT NOT NULL, received_at REAL NOT NULL)"
            )
            connection.execute(
                "CREATE TABLE IF NOT EXISTS poll_cursors ("
                " name TEXT PRIMARY KEY, value TEXT NOT NULL, saved_at REAL NOT NULL)"
            )
            return connection

        try:
            connection = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except sqlite3.Error as error:
            executor.shutdown()
            raise DeliveryStoreError(f"cannot open {path}: {error}") from error
        return cls(connection, executor, retention_s)

    async def seen(self, delivery_id: str) -> bool:
        row = await self._run(
            lambda: self._connection.execute(
                "SELECT 1 FROM webhook_deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
        )
        return row is not None

    async def record(self, delivery_id: str, event: str) -> None:
        now = time.time()
        await self._run(
            lambda: self._connection.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (delivery_id, event, received_at) VALUES (?, ?, ?)",
                (delivery_id, event, now),
            )
        )
        self._records_since_prune += 1
        if self._records_since_prune >= _PRUNE_EVERY:
            self._records_since_prune = 0
            cutoff = now - self._retention_s
            await self._run(
                lambda: self._connection.execute("DELETE FROM webhook_deliveries WHERE received_at < ?", (cutoff,))
            )

    async def load_cursor(self, name: str) -> str | None:
        row = await self._run(
            lambda: self._connection.execute("SELECT value FROM poll_cursors WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def save_cursor(self, name: str, value: str) -> None:
        now = time.time()
        await self._run(
            lambda: self._connection.execute(
                "INSERT INTO poll_cursors (name, value, saved_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value, saved_at = excluded.saved_at",
                (name, value, now),
            )
        )

    async def close(self) -> None:
        await self._run(self._connection.close)
        self._executor.shutdown()

    async def _run[T](self, operation: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, operation)
        except sqlite3.Error as error:
            raise DeliveryStoreError(f"delivery store: {error}") from error
