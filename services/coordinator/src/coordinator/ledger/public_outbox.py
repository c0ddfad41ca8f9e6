"""The ledger's outbox of tracker writes: what agent-grid wants GitHub to show, until a writer has written it.

Used by the coordinator's handling (wishes are added in the same transaction as the ledger change they
report, see :meth:`coordinator.ledger.public_ledger.Ledger.decide`) and by its background writer (which
claims due wishes, writes them, and completes or reschedules them). Payloads are opaque text here; the
writer gives them meaning.

One row per issue and key: a newer wish replaces an unwritten older one (coalescing), and carries a new
version, so a writer that wrote an older version never deletes the newer one. Claims expire, so a writer that
died mid-write leaves its wishes to another after ``claim_s``; a writer still alive renews its claims while it
writes, and only ever releases or reschedules a row it still holds (one whose claim expired and was taken over
is the new holder's). A wish written twice is harmless, because every tracker write the writer makes is
idempotent (upserts, set-like label and assignee changes). A wish that keeps failing is parked: kept, shown,
never claimed again, until a newer wish of its row replaces it.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coordinator.ledger.schema import tracker_writes
from coordinator.ledger.sql import enqueue_writes
from coordinator.ledger.transactions import Transactions

__all__ = ["ClaimedWrite", "Outbox", "OutboxBacklog", "OutboxEntry", "ParkedWrite"]

_t = tracker_writes.c


@dataclass(frozen=True)
class OutboxEntry:
    """A wish: ``payload`` for the row ``key`` of the issue ``issue_key``."""

    issue_key: str
    key: str
    payload: str


@dataclass(frozen=True)
class ClaimedWrite:
    """A due wish a writer has claimed; ``attempts`` failed before; ``claimed_by`` is the claim's own token."""

    issue_key: str
    key: str
    payload: str
    version: int
    attempts: int
    enqueued_at: datetime
    claimed_by: str


@dataclass(frozen=True)
class ParkedWrite:
    """A wish given up after failing ``attempts`` times, with the last error, until a newer wish replaces it."""

    issue_key: str
    key: str
    attempts: int
    last_error: str | None
    parked_at: datetime


@dataclass(frozen=True)
class OutboxBacklog:
    """Wishes not yet written: how many, how many have failed at least once, and since when the oldest waits.

    ``parked``: wishes given up after too many failures (not counted in the others), kept for an operator to see.
    """

    pending: int
    failing: int
    oldest_enqueued_at: datetime | None
    parked: int = 0


class Outbox:
    """The outbox table. Get it from :attr:`coordinator.ledger.public_ledger.Ledger.outbox`."""

    def __init__(self, transactions: Transactions) -> None:
        """Share the ledger's transactions."""
        self._tx = transactions

    async def enqueue(self, entries: Sequence[OutboxEntry], *, now: datetime) -> None:
        """Add wishes on their own (a handler that changes nothing else in the ledger)."""
        rows = [(e.issue_key, e.key, e.payload) for e in entries]
        await self._tx.write(lambda connection: enqueue_writes(connection, rows, now))

    async def claim(self, *, claimer: str, now: datetime, until: datetime, limit: int) -> list[ClaimedWrite]:
        """Claim up to ``limit`` due wishes for ``claimer`` (a writer's id), longest due first, until ``until``."""
        token = f"{claimer}/{uuid.uuid4().hex[:12]}"

        def claim(connection: Connection) -> list[ClaimedWrite]:
            taken = connection.execute(_CLAIM, {"token": token, "now": now, "until": until, "limit": limit})
            if not taken.rowcount:
                return []
            claimed = connection.execute(_CLAIMED, {"token": token})
            return [
                ClaimedWrite(
                    row.issue_key, row.key, row.payload, row.version, row.attempts, _aware(row.enqueued_at), token
                )
                for row in claimed
            ]

        return await self._tx.write(claim)

    async def complete(self, write: ClaimedWrite) -> bool:
        """The wish was written (or is abandoned): forget it, unless a newer one replaced it meanwhile.

        Returns False when a newer wish is waiting: the claim is released (if it is still this writer's: one that
        expired and was taken over is the new holder's), and the newer wish is due at once. The version written is
        forgotten even when another writer holds it now: it was written, and that writer's write repeats it.
        """

        def complete(connection: Connection) -> bool:
            deleted = connection.execute(_COMPLETE, _version_of(write))
            if deleted.rowcount:
                return True
            connection.execute(_RELEASE, _claim_of(write))
            return False

        return await self._tx.write(complete)

    async def retry(self, write: ClaimedWrite, *, due_at: datetime, error: str) -> None:
        """The write failed: try again at ``due_at`` (a newer wish, if any, is tried at once instead).

        Only while this writer holds the row: a claim that expired and was taken over is the new holder's to
        complete or reschedule.
        """

        def retry(connection: Connection) -> None:
            updated = connection.execute(_RETRY, _claim_of(write) | {"w_due_at": due_at, "w_error": error[:1000]})
            if not updated.rowcount:
                connection.execute(_RELEASE, _claim_of(write))

        await self._tx.write(retry)

    async def park(self, write: ClaimedWrite, *, at: datetime, error: str) -> bool:
        """Give the wish up after its last failed attempt: parked (never claimed again) until a newer wish replaces it.

        Returns False when there was nothing to park: a newer wish replaced it (tried at once instead), or the claim
        expired and another writer holds the row.
        """

        def park(connection: Connection) -> bool:
            parked = connection.execute(_PARK, _claim_of(write) | {"w_at": at, "w_error": error[:1000]})
            if parked.rowcount:
                return True
            connection.execute(_RELEASE, _claim_of(write))
            return False

        return await self._tx.write(park)

    async def renew(self, claimed_by: str, *, until: datetime) -> int:
        """Extend the claim ``claimed_by`` (a :attr:`ClaimedWrite.claimed_by`) to ``until``; returns the rows it holds.

        A writer renews its claims while their writes are in flight, so a write longer than ``claim_s`` is not
        taken over (and written beside it) by another writer. Rows whose claim expired and were taken over are not
        renewed: they are no longer this writer's.
        """
        statement = tracker_writes.update().where(_t.claimed_by == claimed_by).values(claimed_until=until)
        return await self._tx.write(lambda connection: int(connection.execute(statement).rowcount or 0))

    async def release(self, claimer: str) -> None:
        """Give up every claim of ``claimer`` (a writer stopping with writes unfinished): they are due again."""
        statement = (
            tracker_writes.update()
            .where(_t.claimed_by.like(f"{claimer}/%"))
            .values(claimed_by=None, claimed_until=None)
        )
        await self._tx.write(lambda connection: connection.execute(statement))

    async def next_due_at(self) -> datetime | None:
        """When the earliest unclaimed wish falls due (None when there is none; parked wishes never fall due)."""
        query = sa.select(sa.func.min(_t.due_at)).where(_t.claimed_until.is_(None), _t.parked_at.is_(None))
        due = await self._tx.read(lambda connection: connection.scalar(query))
        return _aware(due) if due is not None else None

    async def backlog(self) -> OutboxBacklog:
        """The wishes not yet written, and those parked."""
        live = _t.parked_at.is_(None)
        query = sa.select(
            sa.func.sum(sa.case((live, 1), else_=0)),
            sa.func.sum(sa.case((sa.and_(live, _t.attempts > 0), 1), else_=0)),
            sa.func.min(sa.case((live, _t.enqueued_at), else_=None)),
            sa.func.sum(sa.case((live, 0), else_=1)),
        )
        read = await self._tx.read(lambda connection: tuple(connection.execute(query).one()))
        pending, failing, oldest, parked = read
        return OutboxBacklog(
            int(pending or 0), int(failing or 0), _aware(oldest) if oldest is not None else None, int(parked or 0)
        )

    async def parked(self, *, limit: int) -> list[ParkedWrite]:
        """The parked wishes, most recently parked first (at most ``limit``)."""
        query = (
            sa.select(_t.issue_key, _t.key, _t.attempts, _t.last_error, _t.parked_at)
            .where(_t.parked_at.is_not(None))
            .order_by(_t.parked_at.desc())
            .limit(limit)
        )
        return await self._tx.read(
            lambda connection: [
                ParkedWrite(row.issue_key, row.key, row.attempts, row.last_error, _aware(row.parked_at))
                for row in connection.execute(query)
            ]
        )

    async def pending(self, issue_key: str) -> dict[str, str]:
        """The unwritten wishes of one issue, by key (for tests and the API)."""
        query = sa.select(_t.key, _t.payload).where(_t.issue_key == issue_key)
        return await self._tx.read(lambda connection: {row.key: row.payload for row in connection.execute(query)})


# Statements built once (building one costs more than running it), parameters given at execution.
_p = sa.bindparam
_FREE = sa.and_(sa.or_(_t.claimed_until.is_(None), _t.claimed_until < _p("now")), _t.parked_at.is_(None))
# The due wishes, longest due first, taken in one statement conditional on each still being free: of two
# writers racing (PostgreSQL re-checks the condition on a row another just claimed), one gets it.
_CLAIM = (
    tracker_writes.update()
    .where(
        sa.tuple_(_t.issue_key, _t.key).in_(
            sa.select(_t.issue_key, _t.key)
            .where(_t.due_at <= _p("now"), _FREE)
            .order_by(_t.due_at, _t.enqueued_at)
            .limit(_p("limit"))
            .scalar_subquery()
        ),
        _FREE,
    )
    .values(claimed_by=_p("token"), claimed_until=_p("until"))
)
_CLAIMED = (
    sa.select(_t.issue_key, _t.key, _t.payload, _t.version, _t.attempts, _t.enqueued_at)
    .where(_t.claimed_by == _p("token"))
    .order_by(_t.due_at, _t.enqueued_at)
)
_THIS_VERSION = (_t.issue_key == _p("w_issue_key"), _t.key == _p("w_key"), _t.version == _p("w_version"))
_HELD = _t.claimed_by == _p("w_token")
_COMPLETE = tracker_writes.delete().where(*_THIS_VERSION)
_RETRY = (
    tracker_writes.update()
    .where(*_THIS_VERSION, _HELD)
    .values(
        attempts=_t.attempts + 1,
        due_at=_p("w_due_at"),
        last_error=_p("w_error"),
        claimed_by=None,
        claimed_until=None,
    )
)
_PARK = (
    tracker_writes.update()
    .where(*_THIS_VERSION, _HELD)
    .values(
        attempts=_t.attempts + 1,
        parked_at=_p("w_at"),
        last_error=_p("w_error"),
        claimed_by=None,
        claimed_until=None,
    )
)
# Only the writer's own claim: one that expired and was taken over belongs to the writer that took it.
_RELEASE = (
    tracker_writes.update()
    .where(_t.issue_key == _p("w_issue_key"), _t.key == _p("w_key"), _HELD)
    .values(claimed_by=None, claimed_until=None)
)


def _version_of(write: ClaimedWrite) -> dict[str, object]:
    return {"w_issue_key": write.issue_key, "w_key": write.key, "w_version": write.version}


def _claim_of(write: ClaimedWrite) -> dict[str, object]:
    return _version_of(write) | {"w_token": write.claimed_by}


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the ledger stores is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
