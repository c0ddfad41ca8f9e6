"""The GitHub adapter: the :class:`Tracker` protocol over githubkit (REST 2022-11-28, GraphQL for trees)."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote
from weakref import WeakValueDictionary

import httpx
from agent_grid_contracts.public_issues import IssueRef
from githubkit import GitHub
from githubkit.exception import GitHubException, GraphQLFailed
from githubkit.response import Response
from githubkit.utils import UNSET

from agent_grid_tracker.body_blocks import replace_block, with_marker
from agent_grid_tracker.github_convert import (
    comment_from_rest,
    issue_from_rest,
    label_events_from_rest,
    permission_from_rest,
    ref_of_issue_url,
    view_from_graphql,
)
from agent_grid_tracker.github_retry import tracker_error
from agent_grid_tracker.poll_window import advance, fresh_issues
from agent_grid_tracker.public_github_queries import ISSUE_VIEW
from agent_grid_tracker.public_rate_limits import RateLimitBook
from agent_grid_tracker.public_tracker import (
    CloseReason,
    Comment,
    Issue,
    IssueNotFound,
    IssueView,
    LabelEvent,
    NewIssue,
    PollCursor,
    PollResult,
    RepoPermission,
    TrackerRefused,
    TrackerUnavailable,
    sticky_marker,
)

API_VERSION: Literal["2022-11-28"] = "2022-11-28"
_PAGE_SIZE = 100
_MAX_POLL_PAGES = 50
_ATTACH_ATTEMPTS = 3


class GitHubTracker:
    """One GitHub account's view of its repositories. Build it with ``open_github_tracker``."""

    def __init__(
        self, github: GitHub[Any], *, login: str, page_size: int = _PAGE_SIZE, rate_limits: RateLimitBook | None = None
    ) -> None:
        self._github = github
        self._login = login
        self._page_size = page_size
        self.rate_limits = rate_limits or RateLimitBook()
        """GitHub's latest rate-limit window per resource, as its responses reported it."""
        self._rest = github.rest(API_VERSION)
        # Where each sticky comment is: an update then costs a read and a write instead of a listing.
        self._sticky_ids: dict[tuple[str, str], int] = {}
        # Read-modify-write sequences on one issue, one at a time within this process.
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def get_issue(self, ref: IssueRef) -> Issue:
        owner, name = _split(ref.repo)
        response = await self._call(f"get {ref}", self._rest.issues.async_get(owner, name, ref.number))
        return issue_from_rest(_json(response))

    async def view(self, ref: IssueRef, *, comments: int = 20) -> IssueView:
        owner, name = _split(ref.repo)
        variables = {"owner": owner, "name": name, "number": ref.number, "comments": max(1, min(comments, 100))}
        try:
            data = await self._github.async_graphql(ISSUE_VIEW, variables)
        except GraphQLFailed as exc:
            # Errors about parts of the tree (a child or blocker we may not see) come with the rest of the
            # answer: use it when the issue itself is there.
            partial = exc.response.data or {}
            if not (partial.get("repository") or {}).get("issue"):
                raise tracker_error(exc, f"view {ref}") from exc
            data = partial
        except GitHubException as exc:
            raise tracker_error(exc, f"view {ref}") from exc
        node = (data.get("repository") or {}).get("issue")
        if node is None:
            raise IssueNotFound(f"view {ref}: no such issue")
        view = view_from_graphql(node)
        return view if comments else view.model_copy(update={"comments": ()})

    async def list_open_issues(self, repo: str, *, labels: tuple[str, ...] = ()) -> tuple[Issue, ...]:
        owner, name = _split(repo)
        what = f"list open issues of {repo}"
        # Only non-default parameters go on the wire: GitHub's defaults are open issues, newest first.
        first = await self._call(
            what,
            self._rest.issues.async_list_for_repo(
                owner, name, labels=",".join(labels) if labels else UNSET, per_page=self._page_size
            ),
        )
        items, _ = await self._all_pages(what, first)
        issues = [issue_from_rest(item) for item in items if "pull_request" not in item]
        return tuple(sorted(issues, key=lambda issue: issue.ref.number))

    async def create_issue(self, repo: str, new: NewIssue) -> Issue:
        owner, name = _split(repo)
        # Unset fields stay off the wire (GitHub's defaults apply; recorded conversations replay exactly).
        response = await self._call(
            f"create an issue in {repo}",
            self._rest.issues.async_create(
                owner,
                name,
                title=new.title,
                body=new.body or UNSET,
                labels=list(new.labels) or UNSET,
                assignees=list(new.assignees) or UNSET,
            ),
        )
        return issue_from_rest(_json(response))

    async def ensure_label(self, repo: str, name: str, *, color: str, description: str = "") -> None:
        owner, repo_name = _split(repo)
        try:
            await self._call(
                f"create label {name!r} in {repo}",
                self._rest.issues.async_create_label(
                    owner, repo_name, name=name, color=color, description=description or UNSET
                ),
            )
        except TrackerRefused as error:
            if error.status != httpx.codes.UNPROCESSABLE_ENTITY or "already_exists" not in str(error):
                raise

    async def create_sub_issue(self, parent: IssueRef, new: NewIssue) -> Issue:
        child = await self.create_issue(parent.repo, new)
        what = f"attach new {child.ref} under {parent}"
        # Attaching is idempotent (a repeat is "already added"), so unlike other writes it is retried.
        for attempt in range(_ATTACH_ATTEMPTS):
            try:
                await self._add_sub_issue_by_id(parent, child.id, what=what)
                return child
            except TrackerUnavailable:
                if attempt + 1 == _ATTACH_ATTEMPTS:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        return child  # pragma: no cover - the loop returns or raises

    async def add_sub_issue(self, parent: IssueRef, child: IssueRef) -> None:
        child_issue = await self.get_issue(child)
        await self._add_sub_issue_by_id(parent, child_issue.id, what=f"attach {child} under {parent}")

    async def add_blocked_by(self, issue: IssueRef, blocker: IssueRef) -> None:
        owner, name = _split(issue.repo)
        blocker_id = (await self.get_issue(blocker)).id
        with _already_done():
            await self._call(
                f"mark {issue} blocked by {blocker}",
                self._rest.issues.async_add_blocked_by_dependency(owner, name, issue.number, issue_id=blocker_id),
            )

    async def remove_blocked_by(self, issue: IssueRef, blocker: IssueRef) -> None:
        owner, name = _split(issue.repo)
        blocker_id = (await self.get_issue(blocker)).id
        with suppress(IssueNotFound):  # not blocked by it: the wanted state already holds
            await self._call(
                f"unblock {issue} from {blocker}",
                self._rest.issues.async_remove_dependency_blocked_by(owner, name, issue.number, blocker_id),
            )

    async def comment(self, ref: IssueRef, body: str) -> Comment:
        owner, name = _split(ref.repo)
        response = await self._call(
            f"comment on {ref}", self._rest.issues.async_create_comment(owner, name, ref.number, body=body)
        )
        return comment_from_rest(_json(response))

    async def upsert_sticky_comment(self, ref: IssueRef, key: str, body: str) -> Comment:
        text = with_marker(key, body)
        async with self._lock(f"{ref.key}:sticky:{key}"):
            current = await self._current_sticky(ref, key)
            if current is None:
                written = await self.comment(ref, text)
            elif current.body == text:
                written = current  # unchanged: spend no write
            else:
                written = await self._update_comment(ref, current.id, text)
            self._sticky_ids[(ref.key, key)] = written.id
            return written

    async def _current_sticky(self, ref: IssueRef, key: str) -> Comment | None:
        """Our comment for ``key`` as GitHub has it now (read fresh: another process may have changed it)."""
        owner, name = _split(ref.repo)
        known = self._sticky_ids.get((ref.key, key))
        if known is not None:
            try:
                response = await self._call(
                    f"get comment {known} on {ref}", self._rest.issues.async_get_comment(owner, name, known)
                )
                return comment_from_rest(_json(response))
            except IssueNotFound:
                del self._sticky_ids[(ref.key, key)]  # deleted by somebody: find another or start afresh
        return await self._find_marked_comment(ref, sticky_marker(key))

    async def replace_body_block(self, ref: IssueRef, key: str, content: str) -> None:
        owner, name = _split(ref.repo)
        async with self._lock(f"{ref.key}:body"):
            issue = await self.get_issue(ref)
            body = replace_block(issue.body, key, content)
            if body != issue.body:
                await self._call(
                    f"update the {key} block of {ref}",
                    self._rest.issues.async_update(owner, name, ref.number, body=body),
                )

    async def add_labels(self, ref: IssueRef, labels: tuple[str, ...]) -> None:
        if not labels:
            return
        owner, name = _split(ref.repo)
        await self._call(
            f"label {ref}", self._rest.issues.async_add_labels(owner, name, ref.number, labels=list(labels))
        )

    async def remove_labels(self, ref: IssueRef, labels: tuple[str, ...]) -> None:
        owner, name = _split(ref.repo)
        for label in labels:
            with suppress(IssueNotFound):  # GitHub answers 404 for a label the issue does not carry
                # githubkit puts the name in the path as is: `kind/bug` or `c#` would address another URL.
                encoded = quote(label, safe="")
                await self._call(
                    f"unlabel {ref}", self._rest.issues.async_remove_label(owner, name, ref.number, encoded)
                )

    async def add_assignees(self, ref: IssueRef, logins: tuple[str, ...]) -> None:
        if not logins:
            return
        owner, name = _split(ref.repo)
        await self._call(
            f"assign {ref}", self._rest.issues.async_add_assignees(owner, name, ref.number, assignees=list(logins))
        )

    async def remove_assignees(self, ref: IssueRef, logins: tuple[str, ...]) -> None:
        if not logins:
            return
        owner, name = _split(ref.repo)
        await self._call(
            f"unassign {ref}",
            self._rest.issues.async_remove_assignees(owner, name, ref.number, assignees=list(logins)),
        )

    async def close(self, ref: IssueRef, reason: CloseReason = CloseReason.COMPLETED) -> None:
        owner, name = _split(ref.repo)
        await self._call(
            f"close {ref}",
            self._rest.issues.async_update(owner, name, ref.number, state="closed", state_reason=reason.value),
        )

    async def reopen(self, ref: IssueRef) -> None:
        owner, name = _split(ref.repo)
        await self._call(f"reopen {ref}", self._rest.issues.async_update(owner, name, ref.number, state="open"))

    async def poll_updated(self, cursor: PollCursor) -> PollResult:
        owner, name = _split(cursor.repo)
        params: dict[str, str | int] = {
            "state": "all",
            "sort": "updated",
            "direction": "asc",
            "per_page": self._page_size,
        }
        if cursor.since:
            params["since"] = cursor.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # GitHub's documented form
        headers = self._version_header() | ({"If-None-Match": cursor.etag} if cursor.etag else {})
        # One page per poll, normally: walking pages by offset while a change moves an issue to the end would
        # skip the issue at a page boundary; the next poll starts from this page's newest item instead. Only
        # when a whole page sits at the cursor's own instant (no progress possible) does it read on; an issue
        # skipped there turns up on a later poll, which restarts from the first page.
        response = await self._call(
            f"poll {cursor.repo}",
            self._github.arequest("GET", f"/repos/{owner}/{name}/issues", params=params, headers=headers),
        )
        if response.status_code == httpx.codes.NOT_MODIFIED:
            return PollResult(issues=(), cursor=cursor, not_modified=True)
        items, pages = await self._all_pages(
            f"poll {cursor.repo}",
            response,
            read_on=lambda page: _no_progress(page, cursor),
            max_pages=_MAX_POLL_PAGES,
        )
        # Pull requests move the cursor too (a page of them must not stall it), but are not reported.
        polled = [issue_from_rest(item) for item in items]
        pull_requests = {item["number"] for item in items if "pull_request" in item}
        fresh = [issue for issue in fresh_issues(cursor, polled) if issue.ref.number not in pull_requests]
        fresh_numbers = {issue.ref.number for issue in fresh}
        parents = {
            item["number"]: ref_of_issue_url(item["parent_issue_url"])
            for item in items
            if item.get("parent_issue_url") and item["number"] in fresh_numbers
        }
        etag = response.headers.get("etag") if pages == 1 and "next" not in response.raw_response.links else None
        return PollResult(issues=tuple(fresh), parents=parents, cursor=advance(cursor, polled, etag))

    async def label_events(self, ref: IssueRef) -> tuple[LabelEvent, ...]:
        owner, name = _split(ref.repo)
        what = f"list the events of {ref}"
        first = await self._call(
            what, self._rest.issues.async_list_events(owner, name, ref.number, per_page=self._page_size)
        )
        items, _ = await self._all_pages(what, first)
        return label_events_from_rest(items)

    async def permission(self, repo: str, login: str) -> RepoPermission:
        owner, name = _split(repo)
        try:
            response = await self._call(
                f"the permission of {login} on {repo}",
                self._rest.repos.async_get_collaborator_permission_level(owner, name, login),
            )
        except IssueNotFound:
            return RepoPermission.NONE  # no such account (GitHub answers 404)
        return permission_from_rest(_json(response))

    async def _all_pages(
        self,
        what: str,
        first: Response[Any, Any],
        *,
        read_on: Callable[[list[dict[str, Any]]], bool] = lambda _page: True,
        max_pages: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The items of ``first`` and of the pages its ``Link: rel="next"`` chain leads to, and the pages read.

        GitHub builds the next URLs (they may even change path); they are followed as given, while
        ``read_on`` says so of the page just read and fewer than ``max_pages`` were read.
        """
        page: list[dict[str, Any]] = list(_json(first))
        items, pages = list(page), 1
        next_url = first.raw_response.links.get("next", {}).get("url")
        while next_url and read_on(page) and (max_pages is None or pages < max_pages):
            response = await self._call(what, self._github.arequest("GET", next_url, headers=self._version_header()))
            page = list(_json(response))
            items.extend(page)
            pages += 1
            next_url = response.raw_response.links.get("next", {}).get("url")
        return items, pages

    async def _add_sub_issue_by_id(self, parent: IssueRef, child_id: int, *, what: str) -> None:
        owner, name = _split(parent.repo)
        with _already_done():
            await self._call(
                what, self._rest.issues.async_add_sub_issue(owner, name, parent.number, sub_issue_id=child_id)
            )

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _update_comment(self, ref: IssueRef, comment_id: int, body: str) -> Comment:
        owner, name = _split(ref.repo)
        response = await self._call(
            f"update comment {comment_id} on {ref}",
            self._rest.issues.async_update_comment(owner, name, comment_id, body=body),
        )
        return comment_from_rest(_json(response))

    async def _find_marked_comment(self, ref: IssueRef, marker: str) -> Comment | None:
        owner, name = _split(ref.repo)
        page = 1
        while True:
            response = await self._call(
                f"list comments of {ref}",
                self._rest.issues.async_list_comments(owner, name, ref.number, per_page=self._page_size, page=page),
            )
            comments = _json(response)
            for data in comments:
                # Only our own: anyone can paste the marker into a comment of theirs.
                ours = (data.get("user") or {}).get("login") == self._login
                if ours and (data.get("body") or "").startswith(marker):
                    return comment_from_rest(data)
            if len(comments) < self._page_size:
                return None
            page += 1

    def _version_header(self) -> dict[str, str]:
        return {"X-GitHub-Api-Version": API_VERSION}

    async def _call[T](self, what: str, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except GitHubException as exc:
            raise tracker_error(exc, what) from exc


@contextmanager
def _already_done() -> Iterator[None]:
    """A 422 saying the relation already exists means the wanted state holds (a repeat after a timeout)."""
    try:
        yield
    except TrackerRefused as error:
        if error.status != httpx.codes.UNPROCESSABLE_ENTITY or "already" not in str(error).lower():
            raise


def _no_progress(page: list[dict[str, Any]], cursor: PollCursor) -> bool:
    """Every item of the page was updated at the cursor's instant: the next poll would see the same page.

    Reading on happens only after such pages, so checking the latest one is checking them all.
    """
    since = cursor.since
    return since is not None and all(datetime.fromisoformat(item["updated_at"]) <= since for item in page)


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    return owner, name


def _json(response: Response[Any, Any]) -> Any:
    return response.raw_response.json()
