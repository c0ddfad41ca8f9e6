"""The tracker abstraction: what agent-grid reads from and writes to an issue tracker.

The coordinator, the issue-tracker and the agent tools speak only these types; no GitHub type leaks out,
so another tracker is another adapter behind the same :class:`Tracker` protocol.

Errors are few and mean one thing each to a caller:

- :class:`IssueNotFound`: the issue (or repository) does not exist or is hidden from us; do not retry.
- :class:`TrackerRefused`: the tracker understood and said no (validation, permission); do not retry as is.
- :class:`RateLimited`: try again after ``retry_after_s``; the adapter has already waited as long as it may.
- :class:`TrackerUnavailable`: an outage (network, 5xx) that outlasted the adapter's capped retries.
"""

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Protocol

from agent_grid_contracts.public_issues import AuthorAssociation, IssueRef
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CloseReason",
    "Comment",
    "Issue",
    "IssueNotFound",
    "IssueState",
    "IssueSummary",
    "IssueView",
    "LabelEvent",
    "NewIssue",
    "PollCursor",
    "PollResult",
    "RateLimited",
    "RepoPermission",
    "Tracker",
    "TrackerError",
    "TrackerRefused",
    "TrackerUnavailable",
    "seen_mark",
    "sticky_marker",
]


class TrackerError(Exception):
    """Base of every error a tracker adapter raises."""


class IssueNotFound(TrackerError):
    """The issue or its repository does not exist, or our credentials cannot see it."""


class TrackerRefused(TrackerError):
    """The tracker rejected the request (validation, permission, conflict); retrying as is will not help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        """Keep the tracker's status code beside the message."""
        super().__init__(message)
        self.status = status


class TrackerUnavailable(TrackerError):
    """An outage (network error, 5xx) that outlasted the adapter's capped retries; try again later."""


class RateLimited(TrackerUnavailable):
    """The rate limit is spent and the reset is further away than the adapter may wait."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        """Keep how long until the tracker accepts requests again."""
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IssueState(StrEnum):
    """Open or closed; why it closed is :attr:`IssueSummary.state_reason`."""

    OPEN = "open"
    CLOSED = "closed"


class CloseReason(StrEnum):
    """Why an issue is closed (GitHub's ``state_reason``)."""

    COMPLETED = "completed"
    NOT_PLANNED = "not_planned"
    DUPLICATE = "duplicate"


class IssueSummary(_Model):
    """An issue as it appears in a tree: enough to decide ordering, blocking and ownership."""

    ref: IssueRef
    id: Annotated[int, Field(description="The tracker's numeric id (GitHub's REST `id`, not the number).")]
    title: str
    state: IssueState
    state_reason: str | None = None
    assignees: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    url: str
    updated_at: datetime


class Issue(IssueSummary):
    """An issue with its text and author."""

    body: str = ""
    author: str
    author_association: AuthorAssociation = AuthorAssociation.UNKNOWN
    created_at: datetime


class Comment(_Model):
    """One comment on an issue."""

    id: int
    author: str
    author_association: AuthorAssociation = AuthorAssociation.UNKNOWN
    body: str
    created_at: datetime
    updated_at: datetime
    url: str


class IssueView(_Model):
    """One issue in its tree: parent, ordered children, dependencies and the latest comments."""

    issue: Issue
    parent: IssueSummary | None = None
    children: tuple[IssueSummary, ...] = Field(default=(), description="In the tracker's sub-issue order.")
    blocked_by: tuple[IssueSummary, ...] = ()
    blocking: tuple[IssueSummary, ...] = ()
    comments: tuple[Comment, ...] = Field(default=(), description="The most recent ones, oldest first.")


class LabelEvent(_Model):
    """A label added to or removed from an issue, and who did it (the issue's event history)."""

    action: Literal["labeled", "unlabeled"]
    label: str
    actor: str
    actor_is_bot: bool = Field(default=False, description="An app's bot account, not a person.")
    created_at: datetime


class RepoPermission(StrEnum):
    """A person's role on a repository, strongest first (GitHub's roles; ``none``: no access)."""

    ADMIN = "admin"
    MAINTAIN = "maintain"
    WRITE = "write"
    TRIAGE = "triage"
    READ = "read"
    NONE = "none"


class NewIssue(_Model):
    """What it takes to open an issue."""

    title: Annotated[str, Field(min_length=1, max_length=256)]
    body: str = ""
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()


class PollCursor(_Model):
    """Where a repository's poll stopped.

    ``since`` is the newest ``updated_at`` seen. ``seen_at_since`` marks the issues already reported at
    exactly that instant, each in the state it was reported in (the tracker's ``since`` is inclusive).
    ``etag`` validates the answer to a poll from ``since``, so an unchanged repository costs a free 304.
    """

    repo: str
    since: datetime | None = None
    seen_at_since: tuple[str, ...] = ()
    etag: str | None = None


class PollResult(_Model):
    """Issues updated since the cursor, oldest first, and the cursor to pass next time."""

    issues: tuple[Issue, ...] = Field(description="Only issues not reported by an earlier poll; no pull requests.")
    parents: dict[int, IssueRef] = Field(
        default_factory=dict, description="Issue number → its parent, for the issues that have one."
    )
    cursor: PollCursor
    not_modified: bool = Field(default=False, description="The tracker answered 304: nothing changed.")


def seen_mark(issue: Issue) -> str:
    """Names an issue in one state: its number and a digest of what the tracker told about it."""
    digest = hashlib.blake2s(issue.model_dump_json().encode(), digest_size=8).hexdigest()
    return f"{issue.ref.number}:{digest}"


def sticky_marker(key: str) -> str:
    """The hidden marker that identifies agent-grid's one comment (or body block) named ``key``."""
    return f"<!-- agent-grid:{key} -->"


class Tracker(Protocol):
    """Reads and writes of one tracker. Every method may raise a :class:`TrackerError`."""

    async def get_issue(self, ref: IssueRef) -> Issue:
        """The issue alone (one request)."""
        ...

    async def view(self, ref: IssueRef, *, comments: int = 20) -> IssueView:
        """The issue with its parent, ordered children, dependencies and last ``comments`` comments."""
        ...

    async def list_open_issues(self, repo: str, *, labels: tuple[str, ...] = ()) -> tuple[Issue, ...]:
        """Every open issue of ``repo`` carrying all ``labels`` (no pull requests), oldest first."""
        ...

    async def create_issue(self, repo: str, new: NewIssue) -> Issue:
        """Open an issue in ``repo`` (``owner/name``)."""
        ...

    async def ensure_label(self, repo: str, name: str, *, color: str, description: str = "") -> None:
        """Create the repository label unless it exists (``color``: six hex digits, no ``#``)."""
        ...

    async def create_sub_issue(self, parent: IssueRef, new: NewIssue) -> Issue:
        """Open an issue in the parent's repository and append it to the parent's sub-issues."""
        ...

    async def add_sub_issue(self, parent: IssueRef, child: IssueRef) -> None:
        """Append an existing issue to the parent's sub-issues."""
        ...

    async def add_blocked_by(self, issue: IssueRef, blocker: IssueRef) -> None:
        """Record that ``issue`` is blocked by ``blocker``."""
        ...

    async def remove_blocked_by(self, issue: IssueRef, blocker: IssueRef) -> None:
        """Remove that dependency; no error when it is absent."""
        ...

    async def comment(self, ref: IssueRef, body: str) -> Comment:
        """Add a comment."""
        ...

    async def upsert_sticky_comment(self, ref: IssueRef, key: str, body: str) -> Comment:
        """Create or update agent-grid's one comment named ``key`` on the issue (found by its hidden marker)."""
        ...

    async def replace_body_block(self, ref: IssueRef, key: str, content: str) -> None:
        """Put ``content`` between agent-grid's ``key`` markers in the issue body; the rest is untouched."""
        ...

    async def add_labels(self, ref: IssueRef, labels: tuple[str, ...]) -> None:
        """Add labels (existing ones stay)."""
        ...

    async def remove_labels(self, ref: IssueRef, labels: tuple[str, ...]) -> None:
        """Remove labels; labels the issue does not carry are ignored."""
        ...

    async def add_assignees(self, ref: IssueRef, logins: tuple[str, ...]) -> None:
        """Add assignees."""
        ...

    async def remove_assignees(self, ref: IssueRef, logins: tuple[str, ...]) -> None:
        """Remove assignees; logins not assigned are ignored."""
        ...

    async def close(self, ref: IssueRef, reason: CloseReason = CloseReason.COMPLETED) -> None:
        """Close the issue with a reason."""
        ...

    async def reopen(self, ref: IssueRef) -> None:
        """Reopen the issue."""
        ...

    async def poll_updated(self, cursor: PollCursor) -> PollResult:
        """Issues of ``cursor.repo`` updated since the cursor (a conditional request: unchanged costs nothing)."""
        ...

    async def label_events(self, ref: IssueRef) -> tuple[LabelEvent, ...]:
        """Every label added to or removed from the issue, oldest first, with who did it."""
        ...

    async def permission(self, repo: str, login: str) -> RepoPermission:
        """``login``'s role on ``repo`` (``NONE`` without access or without such an account)."""
        ...
