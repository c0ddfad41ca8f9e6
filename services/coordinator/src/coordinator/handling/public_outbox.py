"""The background writer of the coordinator's tracker writes (status comments, assignees, labels, roll-ups).

Composed by the app beside the :class:`~coordinator.handling.public_coordinator.Coordinator`, which wishes
for writes (in the ledger's outbox, in the transaction of the decision they report) and wakes the writer.
The handlers never wait for GitHub, whose content writes are paced (at least 1 s apart, at most 80 a
minute: the tracker's throttler applies that): a burst of nudges launches at the broker's pace, and its
status comments follow at GitHub's.

A write that fails is retried with capped exponential backoff (a rate limit: when it resets); one the tracker
refuses is given up after a few attempts, and one for an issue that no longer exists at once, each logged.
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
from coordinator.ledger.public_ledger import Ledger
from coordinator.ledger.public_outbox import ClaimedWrite

__all__ = ["OutboxSettings", "OutboxWriter"]

_log = structlog.get_logger(__name__)


class OutboxSettings(BaseModel):
    """How the writer works through the outbox (``COORDINATOR_OUTBOX__…``).

    ``concurrency`` writes are in flight at once (the tracker still sends GitHub's content writes one at a
    time, paced; reads such as finding the status comment run beside them). A failed write is retried after
    ``retry_initial_s``, doubling up to ``retry_max_s``; a write the tracker refuses (a 4xx) is given up after
    ``max_refused_attempts``. A claimed write not completed within ``claim_s`` (its coordinator died) is
    written by another; ``poll_interval_s`` bounds how long a wish of another coordinator waits unseen.
    """

    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    retry_initial_s: Annotated[float, Field(gt=0)] = 2.0
    retry_max_s: Annotated[float, Field(gt=0)] = 300.0
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
            async with asyncio.TaskGroup() as group:
                for write in claimed:
                    group.create_task(self._write(write))
        return len(claimed)

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
        except RateLimited as error:
            await self._retry(write, error, after_s=error.retry_after_s)
        except TrackerRefused as error:
            if write.attempts + 1 >= self.settings.max_refused_attempts:
                _log.error("tracker_write_abandoned", issue=write.issue_key, key=write.key, error=str(error))
                await outbox.complete(write)
            else:
                await self._retry(write, error)
        except Exception as error:  # an outage, or a fault of ours: the wish stays, retried with backoff
            await self._retry(write, error)
        else:
            _log.debug("tracker_written", issue=write.issue_key, key=write.key, attempts=write.attempts + 1)
            await outbox.complete(write)

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
        return status.tree_roll_up(root_view, tree, self.policy.caps, self.clock())
