"""The server's mutable in-memory records. Only the store changes them; everything else reads."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

type AccountType = Literal["User", "Organization", "Bot"]


class IssueState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class StateReason(StrEnum):
    COMPLETED = "completed"
    NOT_PLANNED = "not_planned"
    REOPENED = "reopened"
    DUPLICATE = "duplicate"


AUTHOR_ASSOCIATIONS = frozenset(
    {"COLLABORATOR", "CONTRIBUTOR", "FIRST_TIMER", "FIRST_TIME_CONTRIBUTOR", "MANNEQUIN", "MEMBER", "NONE", "OWNER"}
)


@dataclass(eq=False)
class User:
    id: int
    login: str
    type: AccountType
    created_at: datetime
    name: str | None = None
    members: set[int] = field(default_factory=set)  # an Organization's member user ids
    app_id: int | None = None  # a Bot's GitHub App


@dataclass(eq=False)
class Label:
    id: int
    name: str
    color: str
    description: str | None = None
    default: bool = False


@dataclass(eq=False)
class Repo:
    id: int
    owner: User
    name: str
    private: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    labels: dict[str, Label] = field(default_factory=dict)  # by lower-cased name
    issues: dict[int, "Issue"] = field(default_factory=dict)  # by number
    collaborators: set[int] = field(default_factory=set)
    # A collaborator's role when it is not GitHub's default for collaborators (write): admin, maintain, triage, read.
    roles: dict[int, str] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"


@dataclass(eq=False)
class Comment:
    id: int
    issue: "Issue"
    user: User
    body: str
    created_at: datetime
    updated_at: datetime
    author_association: str | None = None  # None: derived from the repository
    via_app: "App | None" = None


@dataclass(eq=False)
class Issue:
    id: int
    number: int
    repo: Repo
    title: str
    body: str | None
    user: User
    created_at: datetime
    updated_at: datetime
    state: IssueState = IssueState.OPEN
    state_reason: StateReason | None = None
    closed_at: datetime | None = None
    closed_by: User | None = None
    labels: list[Label] = field(default_factory=list)
    assignees: list[User] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    events: list["IssueEvent"] = field(default_factory=list)  # its timeline's label changes, oldest first
    parent_id: int | None = None
    sub_issue_ids: list[int] = field(default_factory=list)  # in priority order
    author_association: str | None = None  # None: derived from the repository
    via_app: "App | None" = None


@dataclass(eq=False)
class IssueEvent:
    """A label added to or removed from an issue, as ``GET /repos/{owner}/{repo}/issues/{number}/events`` lists it."""

    id: int
    event: Literal["labeled", "unlabeled"]
    actor: User
    label: Label
    created_at: datetime
    via_app: "App | None" = None


@dataclass(eq=False)
class App:
    id: int
    slug: str
    name: str
    owner: User
    bot: User
    public_key_pem: str
    permissions: dict[str, str]
    events: list[str]
    created_at: datetime
    client_id: str


@dataclass(eq=False)
class Installation:
    id: int
    app: App
    account: User
    repository_selection: Literal["all", "selected"]
    repository_ids: set[int]
    permissions: dict[str, str]
    created_at: datetime

    def covers(self, repo: Repo) -> bool:
        if repo.owner is not self.account:
            return False
        return self.repository_selection == "all" or repo.id in self.repository_ids


@dataclass(eq=False)
class Token:
    value: str
    user: User
    expires_at: datetime | None = None
    installation: Installation | None = None
    permissions: dict[str, str] | None = None  # an installation token's (possibly narrowed) permissions
    repository_ids: set[int] | None = None  # an installation token narrowed to these repositories

    def can_see(self, repo: Repo) -> bool:
        if self.installation is None:
            return True
        if not self.installation.covers(repo):
            return False
        return self.repository_ids is None or repo.id in self.repository_ids

    def can_write_issues(self) -> bool:
        if self.installation is None:
            return True
        return (self.permissions or {}).get("issues") == "write"


@dataclass(frozen=True, eq=False)
class Change:
    """One state change, recorded for webhook delivery (rendered and sent after the request's mutation)."""

    event: Literal["issues", "issue_comment", "sub_issues", "issue_dependencies"]
    action: str
    actor: User
    issue: Issue
    comment: Comment | None = None
    label: Label | None = None
    assignee: User | None = None
    changes: dict[str, dict[str, object]] | None = None
    other: Issue | None = None  # the parent or sub-issue; the blocking or blocked issue
