"""The issue graph: sub-issues and "blocked by" dependencies, and the change log. Pure and synchronous.

Sub-issues are ordered, have one parent and nest at most eight levels. Every mutation appends to ``pending``
for webhook delivery. The base of :class:`~agent_grid_github_test_server.store.Store`.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from agent_grid_github_test_server.entities import Change, Issue, User
from agent_grid_github_test_server.errors import ApiError, not_found, unprocessable

MAX_SUB_ISSUES = 100
MAX_SUB_ISSUE_DEPTH = 8
MAX_DEPENDENCIES = 50


class IssueGraph:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.issues: dict[int, Issue] = {}  # by REST id
        self.dependencies: list[tuple[int, int]] = []  # (blocked issue id, blocking issue id), oldest first
        self.pending: list[Change] = []

    def now(self) -> datetime:
        return self._clock().replace(microsecond=0)

    def issue_by_id(self, issue_id: object) -> Issue:
        found = self.issues.get(issue_id) if isinstance(issue_id, int) else None
        if found is None:
            raise not_found()
        return found

    # sub-issues

    def sub_issues(self, parent: Issue) -> list[Issue]:
        return [self.issues[i] for i in parent.sub_issue_ids]

    def parent_of(self, issue: Issue) -> Issue | None:
        return None if issue.parent_id is None else self.issues[issue.parent_id]

    def add_sub_issue(self, parent: Issue, actor: User, sub_issue_id: object, *, replace_parent: bool) -> Issue:
        child = self.issue_by_id(sub_issue_id)
        if child is parent:
            raise unprocessable("An issue cannot be a sub-issue of itself")
        if child.repo.owner is not parent.repo.owner:
            raise unprocessable("The sub-issue must belong to the same repository owner as the parent issue")
        if child.parent_id == parent.id:
            raise unprocessable("Sub-issue has already been added to this parent")
        if child.parent_id is not None and not replace_parent:
            raise unprocessable("Sub-issue may only have one parent")
        if len(parent.sub_issue_ids) >= MAX_SUB_ISSUES:
            raise unprocessable(f"Parent cannot have more than {MAX_SUB_ISSUES} sub-issues")
        if self._is_ancestor(child, parent):
            raise unprocessable("Sub-issue cannot be an ancestor of its parent")
        if self._depth_above(parent) + 1 + self._depth_below(child) > MAX_SUB_ISSUE_DEPTH:
            raise unprocessable(f"Sub-issues cannot be nested more than {MAX_SUB_ISSUE_DEPTH} levels deep")
        previous = self.parent_of(child)
        if previous is not None:
            self._detach(previous, child, actor)
        child.parent_id = parent.id
        parent.sub_issue_ids.append(child.id)
        self._touch(parent, child)
        self._record("sub_issues", "sub_issue_added", actor, parent, other=child)
        self._record("sub_issues", "parent_issue_added", actor, child, other=parent)
        return parent

    def remove_sub_issue(self, parent: Issue, actor: User, sub_issue_id: object) -> Issue:
        child = self.issue_by_id(sub_issue_id)
        if child.parent_id != parent.id:
            raise not_found("https://docs.github.com/rest/issues/sub-issues#remove-sub-issue")
        self._detach(parent, child, actor)
        return parent

    def _detach(self, parent: Issue, child: Issue, actor: User) -> None:
        parent.sub_issue_ids.remove(child.id)
        child.parent_id = None
        self._touch(parent, child)
        self._record("sub_issues", "sub_issue_removed", actor, parent, other=child)
        self._record("sub_issues", "parent_issue_removed", actor, child, other=parent)

    def reprioritize_sub_issue(
        self, parent: Issue, sub_issue_id: int, *, after_id: object = None, before_id: object = None
    ) -> Issue:
        if (after_id is None) == (before_id is None):
            raise ApiError(422, "Validation Failed", errors=["Either after_id or before_id must be specified"])
        ids = parent.sub_issue_ids
        anchor = after_id if after_id is not None else before_id
        if sub_issue_id not in ids or anchor not in ids or anchor == sub_issue_id:
            raise ApiError(422, "Validation Failed", errors=["The sub-issue and its anchor must be sub-issues"])
        ids.remove(sub_issue_id)
        position = ids.index(anchor) + (1 if after_id is not None else 0)
        ids.insert(position, sub_issue_id)
        parent.updated_at = self.now()
        return parent

    def _is_ancestor(self, candidate: Issue, issue: Issue) -> bool:
        current = self.parent_of(issue)
        while current is not None:
            if current is candidate:
                return True
            current = self.parent_of(current)
        return issue is candidate

    def _depth_above(self, issue: Issue) -> int:
        depth, current = 1, self.parent_of(issue)
        while current is not None:
            depth, current = depth + 1, self.parent_of(current)
        return depth

    def _depth_below(self, issue: Issue) -> int:
        return max((self._depth_below(child) + 1 for child in self.sub_issues(issue)), default=0)

    # dependencies

    def blocked_by(self, issue: Issue) -> list[Issue]:
        return [self.issues[blocking] for blocked, blocking in self.dependencies if blocked == issue.id]

    def blocking(self, issue: Issue) -> list[Issue]:
        return [self.issues[blocked] for blocked, blocking in self.dependencies if blocking == issue.id]

    def add_blocked_by(self, issue: Issue, actor: User, blocking_id: object) -> Issue:
        blocker = self.issue_by_id(blocking_id)
        if blocker is issue:
            raise unprocessable("An issue cannot be blocked by itself")
        if (issue.id, blocker.id) in self.dependencies:
            raise unprocessable("This dependency already exists")
        if (blocker.id, issue.id) in self.dependencies:
            raise unprocessable("Issues cannot block each other")
        if len(self.blocked_by(issue)) >= MAX_DEPENDENCIES:
            raise unprocessable(f"An issue cannot be blocked by more than {MAX_DEPENDENCIES} issues")
        self.dependencies.append((issue.id, blocker.id))
        self._touch(issue, blocker)
        self._record("issue_dependencies", "blocked_by_added", actor, issue, other=blocker)
        self._record("issue_dependencies", "blocking_added", actor, blocker, other=issue)
        return issue

    def remove_blocked_by(self, issue: Issue, actor: User, blocking_id: int) -> Issue:
        if (issue.id, blocking_id) not in self.dependencies:
            raise not_found(
                "https://docs.github.com/rest/issues/issue-dependencies#remove-dependency-an-issue-is-blocked-by"
            )
        blocker = self.issues[blocking_id]
        self.dependencies.remove((issue.id, blocking_id))
        self._touch(issue, blocker)
        self._record("issue_dependencies", "blocked_by_removed", actor, issue, other=blocker)
        self._record("issue_dependencies", "blocking_removed", actor, blocker, other=issue)
        return issue

    # bookkeeping

    def _touch(self, *issues: Issue) -> None:
        now = self.now()
        for issue in issues:
            issue.updated_at = now

    def _record(
        self,
        event: Literal["issues", "issue_comment", "sub_issues", "issue_dependencies"],
        action: str,
        actor: User,
        issue: Issue,
        **details: object,
    ) -> None:
        self.pending.append(Change(event, action, actor, issue, **details))  # type: ignore[arg-type]

    def take_changes(self) -> list[Change]:
        changes, self.pending = self.pending, []
        return changes
