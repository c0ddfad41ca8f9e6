"""Polling mode: for installs without a public webhook URL, poll the repositories' issues and emit nudges.

Each round asks the tracker, per repository, for issues updated since the saved cursor with a conditional
request (an unchanged repository costs a free 304), enqueues the same nudges a webhook would cause, and only
then saves the cursor: a crash between the two repeats nudges (same dedupe keys), never loses one.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from agent_grid_contracts.public_envelope import wrap
from agent_grid_runtime.public_backoff import Backoff
from agent_grid_runtime.public_sqs import PublishError
from agent_grid_tracker.public_tracker import PollCursor, RateLimited, Tracker, TrackerError
from pydantic import BaseModel, Field, ValidationError

from issue_tracker.deliveries.public_api import DeliveryStore
from issue_tracker.deliveries.public_errors import DeliveryStoreError
from issue_tracker.polling.translate import poll_nudges
from issue_tracker.webhooks.public_api import Enqueue

__all__ = ["IssuePoller", "PollingSettings"]

_log = structlog.get_logger(__name__)


class PollingSettings(BaseModel):
    """Which repositories to poll (none: polling is off), how often, and how far back the first poll looks."""

    repos: tuple[str, ...] = ()
    interval_s: Annotated[float, Field(ge=1)] = 60.0
    initial_lookback_s: Annotated[float, Field(ge=0)] = 24 * 3600.0


@dataclass
class IssuePoller:
    """Polls every configured repository once per interval until stopped."""

    tracker: Tracker
    store: DeliveryStore
    enqueue: Enqueue
    settings: PollingSettings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def poll_once(self, repo: str) -> int:
        """One poll of ``repo``; returns the number of nudges enqueued.

        Raises:
            TrackerError: the tracker could not answer (the cursor is unchanged).
            PublishError: the broker did not take the nudges (the cursor is unchanged).
            DeliveryStoreError: the cursor could not be read or saved.
        """
        cursor = await self._load_cursor(repo)
        result = await self.tracker.poll_updated(cursor)
        nudges = list(poll_nudges(result))
        for dedupe_key, nudge in nudges:
            await self.enqueue(wrap(nudge, producer="issue-tracker", dedupe_key=dedupe_key))
        if result.cursor != cursor:
            await self.store.save_cursor(_cursor_name(repo), result.cursor.model_dump_json())
        _log.info(
            "repo_polled", repo=repo, not_modified=result.not_modified, issues=len(result.issues), nudges=len(nudges)
        )
        return len(nudges)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every repository each interval until stopped; a failing repository backs off on its own.

        Nothing ends the loop but ``stop``: an unexpected error is logged with its traceback and that
        repository is tried again later, while the others go on.
        """
        interval = self.settings.interval_s
        backoffs = {repo: Backoff(initial_s=interval, max_s=interval * 10) for repo in self.settings.repos}
        due = dict.fromkeys(self.settings.repos, 0.0)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for repo in self.settings.repos:
                if loop.time() < due[repo] or stop.is_set():
                    continue
                due[repo] = loop.time() + await self._poll_guarded(repo, backoffs[repo])
            next_due = min(due.values(), default=loop.time() + interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_due - loop.time()))

    async def _poll_guarded(self, repo: str, backoff: Backoff) -> float:
        """Poll ``repo`` once; seconds until its next poll."""
        try:
            await self.poll_once(repo)
        except RateLimited as error:
            _log.warning("poll_rate_limited", repo=repo, retry_after_s=round(error.retry_after_s))
            return max(self.settings.interval_s, error.retry_after_s)
        except (TrackerError, PublishError, DeliveryStoreError) as error:
            delay = backoff.next_delay()
            _log.warning("poll_failed", repo=repo, error=str(error), retry_in_s=round(delay, 1))
            return delay
        except Exception:
            delay = backoff.next_delay()
            _log.exception("poll_crashed", repo=repo, retry_in_s=round(delay, 1))
            return delay
        backoff.reset()
        return self.settings.interval_s

    async def _load_cursor(self, repo: str) -> PollCursor:
        saved = await self.store.load_cursor(_cursor_name(repo))
        if saved is not None:
            try:
                return PollCursor.model_validate_json(saved)
            except ValidationError:
                _log.warning("poll_cursor_unreadable", repo=repo, consequence="starting from the lookback window")
        since = self.clock() - timedelta(seconds=self.settings.initial_lookback_s)
        return PollCursor(repo=repo, since=since)


def _cursor_name(repo: str) -> str:
    return f"github-poll:{repo}"
