"""The background writer of the coordinator's tracker writes (status comments, assignees, labels, roll-ups).

Composed by the app beside the :class:`~coordinator.handling.public_coordinator.Coordinator`, which wishes
for writes (in the ledger's outbox, in the transaction of the decision they report) and wakes the writer.
The handlers never wait for GitHub, whose content writes are paced (at least 1 s apart, at most 80 a
minute: the tracker's throttler applies that): a burst of nudges launches at the broker's pace, and its
status comments follow at GitHub's.

A write that fails is retried with capped exponential backoff (a rate limit: when it resets), and parked
after a number of attempts (fewer for one the tracker refuses), so that a poison wish does not come back
forever: kept in the outbox, shown by ``GET /api/outbox`` and the ``agent_grid_outbox_parked_writes`` gauge,
logged, until a newer wish of its row replaces it. One for an issue that no longer exists is dropped at once.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_tracker.public_tracker import IssueNotFound, RateLimited, Tracker, TrackerRefused
from pydantic import BaseModel, Field, ValidationError

from coordinator.decisions.public_policy import Policy
from coordinator.handling import status, writes
from coordinator.handling.public_records import RecordKey
from coordinator.ledger.public_ledger import Ledger
from coordinator.ledger.public_outbox import ClaimedWrite

__all__ = ["OutboxSettings", "OutboxWriter"]

_log = structlog.get_logger(__name__)


class OutboxSettings(BaseModel):
    """How the writer works through the outbox (``COORDINATOR_OUTBOX__…``).

    ``concurrency`` writes are in flight at once (the tracker still sends GitHub's content writes one at a
    time, paced; reads such as finding the status comment run beside them). A failed write is retried after
    ``retry_initial_s``, doubling up to ``retry_max_s``; it is parked after ``max_attempts`` (a GitHub outage
    of some 2 hours with the defaults: rate limits do not count), or after ``max_refused_attempts`` when the
    tracker refuses it (a 4xx). A write's claim lasts ``claim_s`` and is renewed every third of it while the
    write is in flight; a claim whose writer died expires, and another writes the wish. ``poll_interval_s``
    bounds how long a wish of another coordinator waits unseen.
    """

    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    retry_initial_s: Annotated[float, Field(gt=0)] = 2.0
    retry_max_s: Annotated[float, Field(gt=0)] = 300.0
    max_attempts: Annotated[int, Field(ge=1)] = 30
    max_refused_attempts: Annotated[int, Field(ge=1)] = 5
    claim_s: Annotated[float, Field(gt=0)] = 120.0
    poll_interval_s: Annotated[float, Field(gt=0)] = 5.0
    drain_timeout_s: Annotated[float, Field(ge=0)] = 5.0


@dataclass
class OutboxWriter:
    """Writes the outbox's due wishes to the tracker until stopped. Run it with :meth:`running`."""

    ledger: Ledger
    tracker: Tracker
    policy: Policy
    settings: OutboxSettings = field(default_factory=OutboxSettings)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Signs the roll-up's record: the coordinator's key (an ephemeral one signs what only this process can read).
    records: RecordKey = field(default_factory=RecordKey.ephemeral)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], init=False)

    def wake(self) -> None:
        """New wishes are in the outbox: look now rather than at the next poll."""
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator["OutboxWriter"]:
        """Write in the background; on exit, let the writes in flight finish (within ``drain_timeout_s``)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop), name="outbox-writer")
        try:
            yield self
        finally:
            stop.set()
            self._wake.set()
            try:
                async with asyncio.timeout(self.settings.drain_timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
                # Unfinished writes keep their rows: released, they are written by whoever writes next (a crash
                # leaves them claimed until their claim expires).
                await self.ledger.outbox.release(self._id)

    async def write_due(self) -> int:
        """Write what is due now, one batch of up to ``concurrency``; returns how many writes were attempted."""
        now = self.clock()
        claimed = await self.ledger.outbox.claim(
            claimer=self._id,
            now=now,
            until=now + timedelta(seconds=self.settings.claim_s),
            limit=self.settings.concurrency,
        )
        if claimed:
            renewing = asyncio.create_task(self._renew(claimed[0].claimed_by), name="outbox-claim-renewal")
            try:
                async with asyncio.TaskGroup() as group:
                    for write in claimed:
                        group.create_task(self._write(write))
            finally:
                renewing.cancel()
                with suppress(asyncio.CancelledError):
                    await renewing
        return len(claimed)

    async def _renew(self, claimed_by: str) -> None:
        """Keep the batch's claims while its writes are in flight (a slow GitHub, a long wait for the throttler).

        An expired claim lets another writer write the same row at once, and an older wish could then land after
        a newer one.
        """
        claim_s = self.settings.claim_s
        while True:
            await asyncio.sleep(claim_s / 3)
            try:
                held = await self.ledger.outbox.renew(claimed_by, until=self.clock() + timedelta(seconds=claim_s))
            except Exception as error:  # the ledger is away: the claims may lapse, and the writes repeat (harmless)
                _log.warning("tracker_write_claim_not_renewed", error=f"{type(error).__name__}: {error}")
                continue
            _log.debug("tracker_write_claim_renewed", held=held)

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.write_due():
                    continue  # more may be due: no waiting between batches
                timeout = await self._idle_for()
            except Exception:
                _log.exception("outbox_failed")  # the ledger is unreachable, say: try again later
                timeout = self.settings.poll_interval_s
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _idle_for(self) -> float:
        """Until the next wish falls due, at most ``poll_interval_s`` (other coordinators' wishes wake no one here)."""
        due = await self.ledger.outbox.next_due_at()
        if due is None:
            return self.settings.poll_interval_s
        return min(self.settings.poll_interval_s, max(0.0, (due - self.clock()).total_seconds()))

    async def _write(self, write: ClaimedWrite) -> None:
        outbox = self.ledger.outbox
        try:
            ref = writes.ref_of_key(write.issue_key)
            wish = writes.parse(write.payload)
        except (ValueError, ValidationError) as error:  # written by a newer coordinator, say: not ours to guess
            _log.error("tracker_write_abandoned", issue=write.issue_key, key=write.key, error=str(error))
            await outbox.complete(write)
            return
        try:
            await writes.carry_out(self.tracker, ref, wish, self._roll_up)
        except IssueNotFound as error:
            _log.warning("tracker_write_dropped", issue=write.issue_key, key=write.key, error=str(error))
            await outbox.complete(write)
        except RateLimited as error:  # GitHub's pace, not the wish's fault: never counted towards parking
            await self._retry(write, error, after_s=error.retry_after_s)
        except TrackerRefused as error:
            await self._retry_or_park(write, error, max_attempts=self.settings.max_refused_attempts)
        except Exception as error:  # an outage, or a fault of ours: retried with backoff, parked if it never ends
            await self._retry_or_park(write, error, max_attempts=self.settings.max_attempts)
        else:
            _log.debug("tracker_written", issue=write.issue_key, key=write.key, attempts=write.attempts + 1)
            await outbox.complete(write)

    async def _retry_or_park(self, write: ClaimedWrite, error: Exception, *, max_attempts: int) -> None:
        if write.attempts + 1 < max_attempts:
            await self._retry(write, error)
            return
        parked = await self.ledger.outbox.park(write, at=self.clock(), error=f"{type(error).__name__}: {error}")
        if parked:
            _log.error(
                "tracker_write_parked",
                issue=write.issue_key,
                key=write.key,
                attempts=write.attempts + 1,
                error=f"{type(error).__name__}: {error}",
            )

    async def _retry(self, write: ClaimedWrite, error: Exception, *, after_s: float | None = None) -> None:
        backoff = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2**write.attempts)
        delay = max(backoff, after_s or 0.0)
        _log.warning(
            "tracker_write_failed",
            issue=write.issue_key,
            key=write.key,
            attempt=write.attempts + 1,
            retry_in_s=round(delay, 1),
            error=f"{type(error).__name__}: {error}",
        )
        await self.ledger.outbox.retry(write, due_at=self.clock() + timedelta(seconds=delay), error=str(error))

    async def _roll_up(self, root: IssueRef) -> str | None:
        """The tree block as the ledger and the tree are now (a coalesced wish renders the latest figures)."""
        tree = await self.ledger.tree(root.key)
        if tree is None:
            return None
        root_view = await self.tracker.view(root, comments=1)
        return status.tree_roll_up(root_view, tree, self.policy.caps, self.clock(), key=self.records)
