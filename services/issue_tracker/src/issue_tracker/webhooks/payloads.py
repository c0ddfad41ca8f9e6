"""The few fields of GitHub webhook payloads that translation reads.

Tolerant: everything else is ignored, and fields GitHub omits in some deliveries (``organization`` on
user-owned repositories) are never required.
"""

import re

from pydantic import BaseModel, ConfigDict

_REPO_FROM_API_URL = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/?$")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Lenient):
    login: str
    type: str = "User"


class Repository(_Lenient):
    full_name: str


class Issue(_Lenient):
    number: int
    node_id: str | None = None
    repository_url: str | None = None
    author_association: str | None = None
    user: User | None = None
    pull_request: dict[str, object] | None = None
    parent_issue_url: str | None = None

    def repo(self, fallback: Repository | None) -> str | None:
        """``owner/name`` of the issue's own repository (sub-issues and blockers may live in another one)."""
        match = _REPO_FROM_API_URL.search(self.repository_url or "")
        if match:
            return match["repo"]
        return fallback.full_name if fallback else None


class Label(_Lenient):
    name: str


class Comment(_Lenient):
    body: str | None = None
    user: User
    author_association: str | None = None


class PullRequest(_Lenient):
    number: int
    title: str | None = None
    body: str | None = None
    merged: bool | None = None
    user: User | None = None
    author_association: str | None = None


class Envelope(_Lenient):
    """What every event of interest carries."""

    action: str | None = None
    sender: User | None = None
    repository: Repository | None = None


class IssuesEvent(Envelope):
    issue: Issue
    label: Label | None = None  # on labeled and unlabeled: the label added or removed


class IssueCommentEvent(Envelope):
    issue: Issue
    comment: Comment


class SubIssuesEvent(Envelope):
    parent_issue: Issue
    sub_issue: Issue
    parent_issue_repo: Repository | None = None


class IssueDependenciesEvent(Envelope):
    blocked_issue: Issue
    blocking_issue: Issue
    blocked_issue_repo: Repository | None = None


class PullRequestEvent(Envelope):
    pull_request: PullRequest
