"""PostgreSQL delivery store: shared by issue-tracker replicas on any number of hosts."""

import time
from typing import Self

import asyncpg

from issue_tracker.deliveries.public_errors import DeliveryStoreError

_PRUNE_EVERY = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS poll_cursors (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class PostgresDeliveryStore:
    def __init__(self, pool: asyncpg.Pool, retention_s: int) -> None:
        self._pool = pool
        self._retention_s = retention_s
        self._records_since_prune = 0

    @classmethod
    async def open(cls, url: str, *, retention_s: int) -> Self:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10, command_timeout=5)
            # Several replicas may start at once: serialize the CREATE so none fails on the race.
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext('webhook_deliveries'))")
                await connection.execute(_SCHEMA)
        except (OSError, asyncpg.PostgresError) as error:
            raise DeliveryStoreError(f"cannot open the delivery store: {error}") from error
        return cls(pool, retention_s)

    async def seen(self, delivery_id: str) -> bool:
        try:
            row = await self._pool.fetchval("SELECT 1 FROM webhook_deliveries WHERE delivery_id = $1", delivery_id)
        except (OSError, asyncpg.PostgresError) as error:
            raise DeliveryStoreError(f"delivery store: {error}") from error
        return row is not None

    async def record(self, delivery_id: str, event: str) -> None:
        try:
            await self._pool.execute(
                "INSERT INTO webhook_deliveries (delivery_id, event) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                delivery_id,
                event,
            )
            self._records_since_prune += 1
            if self._records_since_prune >= _PRUNE_EVERY:
                self._records_since_prune = 0
                await self._pool.execute(
                    "DELETE FROM webhook_deliveries WHERE received_at < to_timestamp($1)",
                    time.time() - self._retention_s,
                )
        except (OSError, asyncpg.PostgresError) as error:
            raise DeliveryStoreError(f"delivery store: {error}") from error

    async def load_cursor(self, name: str) -> str | None:
        try:
            value = await self._pool.fetchval("SELECT value FROM poll_cursors WHERE name = $1", name)
        except (OSError, asyncpg.PostgresError) as error:
            raise DeliveryStoreError(f"delivery store: {error}") from error
        return None if value is None else str(value)

    async def save_cursor(self, name: str, value: str) -> None:
        try:
            await self._pool.execute(
                "INSERT INTO poll_cursors (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value, saved_at = now()",
                name,
                value,
            )
        except (OSError, asyncpg.PostgresError) as error:
            raise DeliveryStoreError(f"delivery store: {error}") from error

    async def close(self) -> None:
        await self._pool.close()
