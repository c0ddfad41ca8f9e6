"""The ledger's outbox of tracker writes: what agent-grid wants GitHub to show, until a writer has written it.

Used by the coordinator's handling (wishes are added in the same transaction as the ledger change they
report, see :meth:`coordinator.ledger.public_ledger.Ledger.decide`) and by its background writer (which
claims due wishes, writes them, and completes or reschedules them). Payloads are opaque text here; the
writer gives them meaning.

One row per issue and key: a newer wish replaces an unwritten older one (coalescing), and carries a new
version, so a writer that wrote an older version never deletes the newer one. Claims expire, so a writer that
died mid-write leaves its wishes to another after ``claim_s``; a wish written twice is harmless, because
every tracker write the writer makes is idempotent (upserts, set-like label and assignee changes).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.ledger.schema import tracker_writes
from coordinator.ledger.sql import enqueue_writes

__all__ = ["ClaimedWrite", "Outbox", "OutboxBacklog", "OutboxEntry"]

_t = tracker_writes.c


@dataclass(frozen=True)
class OutboxEntry:
    """A wish: ``payload`` for the row ``key`` of the issue ``issue_key``."""

    issue_key: str
    key: str
    payload: str


@dataclass(frozen=True)
class ClaimedWrite:
    """A due wish a writer has claimed; ``attempts`` failed before."""

    issue_key: str
    key: str
    payload: str
    version: int
    attempts: int
    enqueued_at: datetime


@dataclass(frozen=True)
class OutboxBacklog:
    """Wishes not yet written: how many, how many have failed at least once, and since when the oldest waits."""

    pending: int
    failing: int
    oldest_enqueued_at: datetime | None


class Outbox:
    """The outbox table. Get it from :attr:`coordinator.ledger.public_ledger.Ledger.outbox`."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Share the ledger's engine."""
        self._engine = engine

    async def enqueue(self, entries: Sequence[OutboxEntry], *, now: datetime) -> None:
        """Add wishes on their own (a handler that changes nothing else in the ledger)."""
        async with self._engine.begin() as connection:
            await enqueue_writes(connection, [(e.issue_key, e.key, e.payload) for e in entries], now)

    async def claim(self, *, claimer: str, now: datetime, until: datetime, limit: int) -> list[ClaimedWrite]:
        """Claim up to ``limit`` due wishes for ``claimer`` (a writer's id), longest due first, until ``until``."""
        token = f"{claimer}/{uuid.uuid4().hex[:12]}"
        free = sa.or_(_t.claimed_until.is_(None), _t.claimed_until < now)
        async with self._engine.begin() as connection:
            candidates = (
                await connection.execute(
                    sa.select(_t.issue_key, _t.key)
                    .where(_t.due_at <= now, free)
                    .order_by(_t.due_at, _t.enqueued_at)
                    .limit(limit)
                )
            ).all()
            if not candidates:
                return []
            # Conditional on the row still being free: of two writers racing for it, one gets it.
            await connection.execute(
                tracker_writes.update()
                .where(sa.tuple_(_t.issue_key, _t.key).in_([tuple(row) for row in candidates]), free)
                .values(claimed_by=token, claimed_until=until)
            )
            claimed = await connection.execute(
                sa.select(_t.issue_key, _t.key, _t.payload, _t.version, _t.attempts, _t.enqueued_at)
                .where(_t.claimed_by == token)
                .order_by(_t.due_at, _t.enqueued_at)
            )
            return [
                ClaimedWrite(row.issue_key, row.key, row.payload, row.version, row.attempts, _aware(row.enqueued_at))
                for row in claimed
            ]

    async def complete(self, write: ClaimedWrite) -> bool:
        """The wish was written (or is abandoned): forget it, unless a newer one replaced it meanwhile.

        Returns False when a newer wish is waiting: its claim is released, and it is due at once.
        """
        async with self._engine.begin() as connection:
            deleted = await connection.execute(tracker_writes.delete().where(*_this_version(write)))
            if deleted.rowcount:
                return True
            await connection.execute(_release(write))
            return False

    async def retry(self, write: ClaimedWrite, *, due_at: datetime, error: str) -> None:
        """The write failed: try again at ``due_at`` (a newer wish, if any, is tried at once instead)."""
        async with self._engine.begin() as connection:
            updated = await connection.execute(
                tracker_writes.update()
                .where(*_this_version(write))
                .values(
                    attempts=_t.attempts + 1,
                    due_at=due_at,
                    last_error=error[:1000],
                    claimed_by=None,
                    claimed_until=None,
                )
            )
            if not updated.rowcount:
                await connection.execute(_release(write))

    async def release(self, claimer: str) -> None:
        """Give up every claim of ``claimer`` (a writer stopping with writes unfinished): they are due again."""
        async with self._engine.begin() as connection:
            await connection.execute(
                tracker_writes.update()
                .where(_t.claimed_by.like(f"{claimer}/%"))
                .values(claimed_by=None, claimed_until=None)
            )

    async def next_due_at(self) -> datetime | None:
        """When the earliest unclaimed wish falls due (None when there is none)."""
        async with self._engine.connect() as connection:
            due = await connection.scalar(sa.select(sa.func.min(_t.due_at)).where(_t.claimed_until.is_(None)))
        return _aware(due) if due is not None else None

    async def backlog(self) -> OutboxBacklog:
        """The wishes not yet written."""
        async with self._engine.connect() as connection:
            pending, failing, oldest = (
                await connection.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.sum(sa.case((_t.attempts > 0, 1), else_=0)),
                        sa.func.min(_t.enqueued_at),
                    )
                )
            ).one()
        return OutboxBacklog(int(pending), int(failing or 0), _aware(oldest) if oldest is not None else None)

    async def pending(self, issue_key: str) -> dict[str, str]:
        """The unwritten wishes of one issue, by key (for tests and the API)."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(sa.select(_t.key, _t.payload).where(_t.issue_key == issue_key))
            return {row.key: row.payload for row in rows}


def _this_version(write: ClaimedWrite) -> tuple[sa.ColumnElement[bool], ...]:
    return (_t.issue_key == write.issue_key, _t.key == write.key, _t.version == write.version)


def _release(write: ClaimedWrite) -> sa.Update:
    return (
        tracker_writes.update()
        .where(_t.issue_key == write.issue_key, _t.key == write.key)
        .values(claimed_by=None, claimed_until=None)
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the ledger stores is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
