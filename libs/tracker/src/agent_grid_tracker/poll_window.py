"""Which polled issues are new, and where the next poll starts: pure, so every edge is a unit test."""

from collections.abc import Sequence
from datetime import datetime

from agent_grid_tracker.public_tracker import Issue, PollCursor, seen_mark


def fresh_issues(cursor: PollCursor, polled: Sequence[Issue]) -> list[Issue]:
    """The polled issues that no earlier poll reported, oldest first.

    The tracker's ``since`` is inclusive, so issues updated exactly at ``cursor.since`` come back on every
    poll; those already reported in that exact state are dropped. Timestamps have one-second precision, so
    an issue changed twice within that second is told apart by its content.
    """
    since = cursor.since
    fresh = [
        issue
        for issue in polled
        if since is None
        or issue.updated_at > since
        or (issue.updated_at == since and seen_mark(issue) not in cursor.seen_at_since)
    ]
    return sorted(fresh, key=lambda issue: (issue.updated_at, issue.ref.number))


def advance(cursor: PollCursor, polled: Sequence[Issue], etag: str | None) -> PollCursor:
    """The cursor after a poll that answered ``polled`` with validator ``etag``.

    The validator belongs to the request that was made (from ``cursor.since``); when ``since`` moves, the
    next request differs and that validator is useless, so it is dropped and the next poll learns a new one.
    """
    newest: datetime | None = max((issue.updated_at for issue in polled), default=None)
    if newest is None or (cursor.since is not None and newest < cursor.since):
        return cursor.model_copy(update={"etag": etag})
    at_newest = {seen_mark(issue) for issue in polled if issue.updated_at == newest}
    if newest == cursor.since:
        seen = tuple(sorted(at_newest | set(cursor.seen_at_since)))
        return cursor.model_copy(update={"seen_at_since": seen, "etag": etag})
    return PollCursor(repo=cursor.repo, since=newest, seen_at_since=tuple(sorted(at_newest)), etag=None)
