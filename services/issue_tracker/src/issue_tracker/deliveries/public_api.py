"""Webhook delivery dedupe (which ``X-GitHub-Delivery`` ids became nudges) and the pollers' cursors.

It must outlive the process and be shared by every replica, so it is a database, never process memory:
SQLite by default (one host: restarts and several processes), PostgreSQL for replicas on several hosts.
"""

from typing import Protocol

from issue_tracker.deliveries.postgres_store import PostgresDeliveryStore
from issue_tracker.deliveries.sqlite_store import SqliteDeliveryStore

__all__ = ["DeliveryStore", "open_delivery_store"]

# GitHub lets an operator redeliver deliveries from the past three days; keep a margin beyond that.
RETENTION_S = 7 * 24 * 3600


class DeliveryStore(Protocol):
    """Remembers handled deliveries."""

    async def seen(self, delivery_id: str) -> bool:
        """True when the delivery was already handled."""
        ...

    async def record(self, delivery_id: str, event: str) -> None:
        """Remember a handled delivery (idempotent)."""
        ...

    async def load_cursor(self, name: str) -> str | None:
        """The polling cursor saved under ``name``, or None before the first save."""
        ...

    async def save_cursor(self, name: str, value: str) -> None:
        """Save (replace) the polling cursor ``name``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


async def open_delivery_store(url: str) -> DeliveryStore:
    """Open the store named by ``url``: ``sqlite:///path/to/file.sqlite3`` or ``postgresql://…``.

    Raises:
        DeliveryStoreError: the URL is not supported or the database cannot be reached.
        ValueError: the URL names no supported scheme.
    """
    if url.startswith("sqlite:///"):
        return await SqliteDeliveryStore.open(url.removeprefix("sqlite:///"), retention_s=RETENTION_S)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDeliveryStore.open(url, retention_s=RETENTION_S)
    raise ValueError(f"unsupported delivery store URL {url!r}: use sqlite:///PATH or postgresql://…")
