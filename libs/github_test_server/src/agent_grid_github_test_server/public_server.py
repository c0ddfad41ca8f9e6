"""A stateful GitHub stand-in on 127.0.0.1: REST (2022-11-28), GraphQL, app tokens, signed webhooks.

Imported by tests of any package and by the local demo. :class:`FakeGitHub` holds the state and is the
handle to seed it, inject faults and read the request log and webhook deliveries; :func:`serve_github`
serves it with uvicorn on a free port; :func:`create_app` builds the ASGI app for other hosts.

Everything runs on the event loop that serves it: drive the server with async clients from that loop
(a blocking client on the same loop would deadlock it). Seeding through the handle is silent (no
webhooks); changes made through the API deliver webhooks. Backward-compatible changes only.
"""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import uvicorn
from fastapi import FastAPI

from agent_grid_github_test_server.app_factory import build_app
from agent_grid_github_test_server.core import Core, utc_now
from agent_grid_github_test_server.entities import Issue, Repo
from agent_grid_github_test_server.errors import not_found
from agent_grid_github_test_server.limits import Fault
from agent_grid_github_test_server.public_errors import GitHubTestServerError
from agent_grid_github_test_server.public_models import (
    LoggedRequest,
    SeededApp,
    SeededComment,
    SeededInstallation,
    SeededIssue,
    SeededRepo,
    SeededUser,
    WebhookDelivery,
)
from agent_grid_github_test_server.render import Urls, node_id
from agent_grid_github_test_server.routes_control import control_router
from agent_grid_github_test_server.seeding import apply_seed

__all__ = ["FakeGitHub", "RunningGitHub", "create_app", "serve_github"]


class FakeGitHub:
    """The server's state and the test handle over it: seed, inject faults, read what happened.

    Args:
        clock: the time issues and comments are stamped with (second precision, like GitHub); inject a
            controllable clock to test ``since`` and ordering. Rate-limit windows use the wall clock.
        rate_limit: requests per hour per token (GitHub's default for a token is 5000).
    """

    def __init__(self, *, clock: Callable[[], datetime] = utc_now, rate_limit: int = 5000) -> None:
        """Start empty: no accounts, no repositories, no webhooks."""
        self._core = Core(clock=clock, rate_limit=rate_limit)

    def reset(self, *, clock: Callable[[], datetime] | None = None) -> None:
        """Forget everything (state, webhooks and deliveries, faults, the request log) while serving on.

        Args:
            clock: the clock from now on; None restores the one given at construction.
        """
        self._core.reset(clock)

    # seeding: accounts and repositories

    def add_user(self, login: str, *, name: str | None = None) -> SeededUser:
        """Create a person's account."""
        user = self._core.store.add_user(login, type="User", name=name)
        return SeededUser(user.login, user.id, user.type)

    def add_organization(self, login: str, *, members: Sequence[str] = ()) -> SeededUser:
        """Create an organization; its members' association with its repositories is ``MEMBER``."""
        org = self._core.store.add_user(login, type="Organization")
        for member in members:
            self.add_member(login, member)
        return SeededUser(org.login, org.id, org.type)

    def add_member(self, organization: str, login: str) -> None:
        """Make an existing user a member of an organization."""
        store = self._core.store
        store.add_member(store.user(organization), store.user(login))

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        private: bool = False,
        description: str | None = None,
        collaborators: Sequence[str] = (),
    ) -> SeededRepo:
        """Create a repository owned by an existing user or organization."""
        store = self._core.store
        repo = store.add_repo(store.user(owner), name, private=private, description=description)
        for login in collaborators:
            store.add_collaborator(repo, store.user(login))
        return SeededRepo(repo.owner.login, repo.name, repo.id)

    def add_collaborator(self, owner: str, repo: str, login: str, *, role: str = "write") -> None:
        """Give an existing user a role on a repository: ``admin``, ``maintain``, ``write``, ``triage`` or ``read``."""
        store = self._core.store
        self._seed(lambda: store.add_collaborator(self._repo(owner, repo), store.user(login), role=role))

    def label_issue(self, owner: str, repo: str, number: int, labels: Sequence[str], *, actor: str) -> None:
        """Add labels to an issue as ``actor`` (its timeline and webhooks say who)."""
        store = self._core.store
        issue = store.issue(self._repo(owner, repo), number)
        self._seed(lambda: store.add_labels(issue, store.user(actor), list(labels)))

    def add_label(
        self, owner: str, repo: str, name: str, *, color: str = "ededed", description: str | None = None
    ) -> None:
        """Create a repository label (labels added to issues are also created on the fly, as on GitHub)."""
        label = self._core.store.ensure_label(self._repo(owner, repo), name)
        label.color, label.description = color, description

    def add_token(self, login: str, token: str | None = None, *, rate_limit: int | None = None) -> str:
        """Issue a personal access token for an existing account; returns the token."""
        store = self._core.store
        value = token or f"ghp_test{store.next_id():032d}"
        store.add_token(store.user(login), value)
        if rate_limit is not None:
            self._core.limits.set_limit(value, rate_limit)
        return value

    # seeding: issues

    def add_issue(
        self,
        owner: str,
        repo: str,
        title: str,
        *,
        author: str,
        body: str | None = None,
        labels: Sequence[str] = (),
        assignees: Sequence[str] = (),
        state: Literal["open", "closed"] = "open",
        state_reason: str | None = None,
        author_association: str | None = None,
        created_at: datetime | None = None,
    ) -> SeededIssue:
        """Create an issue as ``author``; ``author_association`` overrides the derived association."""
        store = self._core.store
        issue = self._seed(
            lambda: store.create_issue(
                self._repo(owner, repo),
                store.user(author),
                title=title,
                body=body,
                labels=list(labels),
                assignees=list(assignees),
                author_association=author_association,
                created_at=created_at,
            )
        )
        if state == "closed":
            self._seed(lambda: store.update_issue(issue, issue.user, {"state": "closed", "state_reason": state_reason}))
            if created_at is not None:
                issue.updated_at = issue.closed_at = created_at
        return _seeded_issue(issue)

    def add_comment(
        self,
        owner: str,
        repo: str,
        number: int,
        body: str,
        *,
        author: str,
        author_association: str | None = None,
        created_at: datetime | None = None,
    ) -> SeededComment:
        """Add a comment to an issue as ``author``."""
        store = self._core.store
        issue = store.issue(self._repo(owner, repo), number)
        comment = self._seed(
            lambda: store.create_comment(
                issue, store.user(author), body, author_association=author_association, created_at=created_at
            )
        )
        return SeededComment(comment.id, issue.number, node_id("IssueComment", comment.id))

    def issue(self, owner: str, repo: str, number: int) -> SeededIssue:
        """Look up an issue by its number (for its ``id``, which sub-issue and dependency bodies take)."""
        return _seeded_issue(self._core.store.issue(self._repo(owner, repo), number))

    def add_sub_issue(self, parent: SeededIssue, child: SeededIssue) -> None:
        """Append ``child`` to ``parent``'s sub-issues (replacing any previous parent)."""
        store = self._core.store
        issue = self._issue(parent)
        self._seed(lambda: store.add_sub_issue(issue, issue.user, child.id, replace_parent=True))

    def add_blocked_by(self, issue: SeededIssue, blocking: SeededIssue) -> None:
        """Record that ``issue`` is blocked by ``blocking``."""
        store = self._core.store
        blocked = self._issue(issue)
        self._seed(lambda: store.add_blocked_by(blocked, blocked.user, blocking.id))

    # seeding: apps

    def add_app(
        self,
        slug: str,
        *,
        owner: str,
        public_key_pem: str,
        permissions: Mapping[str, str] | None = None,
    ) -> SeededApp:
        """Register a GitHub App whose JWTs verify with ``public_key_pem`` (RS256); creates ``<slug>[bot]``."""
        store = self._core.store
        app = store.add_app(
            slug, owner=store.user(owner), public_key_pem=public_key_pem, permissions=dict(permissions or {}) or None
        )
        return SeededApp(app.id, app.slug, app.client_id, app.bot.login)

    def add_installation(
        self,
        app_id: int,
        account: str,
        *,
        repositories: Sequence[str] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> SeededInstallation:
        """Install an app on an account, for all its repositories or the named ones."""
        store = self._core.store
        app = store.apps.get(app_id)
        if app is None:
            raise not_found()
        owner = store.user(account)
        selected = None if repositories is None else [store.repo(account, name) for name in repositories]
        installation = store.add_installation(
            app, owner, repositories=selected, permissions=None if permissions is None else dict(permissions)
        )
        return SeededInstallation(installation.id, app.id, owner.login)

    def seed(self, document: Mapping[str, object]) -> dict[str, list[dict[str, object]]]:
        """Seed from a JSON document whose sections name the ``add_*`` methods (format in ``seeding.py``).

        Returns:
            What each entry created, by section: the seeded records as dicts, ``{"token": ...}`` for tokens,
            ``{"hook_id": ...}`` for webhooks, ``{}`` for entries that create nothing addressable.

        Raises:
            GitHubTestServerError: an unknown section, a malformed entry, or a refused one.
        """
        return apply_seed(self, document)

    # webhooks

    def add_webhook(self, url: str, secret: str, *, events: Sequence[str] | None = None) -> int:
        """Deliver every later change (or only ``events``) to ``url``, signed with ``secret``; returns the hook id."""
        return self._core.webhooks.add_hook(url, secret, None if events is None else frozenset(events)).id

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every delivery attempt so far, oldest first (redeliveries included)."""
        return list(self._core.webhooks.deliveries)

    def redeliver(self, guid: str) -> None:
        """Send a recorded delivery again with the same ``X-GitHub-Delivery`` id.

        Raises:
            GitHubTestServerError: no delivery has that id.
        """
        try:
            self._core.webhooks.redeliver(guid)
        except KeyError:
            raise GitHubTestServerError(f"no delivery {guid}", status=404) from None

    async def webhooks_idle(self) -> None:
        """Wait until every queued webhook delivery has been attempted."""
        await self._core.webhooks.idle()

    # faults and rate limits

    def fail_next(self, method: str | None, path_prefix: str, *, count: int = 1, status: int = 502) -> None:
        """Answer the next ``count`` requests matching ``method`` (None: any) and ``path_prefix`` with ``status``."""
        self._core.faults.add(Fault("error", method, path_prefix, count, status=status))

    def secondary_rate_limit(
        self, method: str | None = None, path_prefix: str = "/", *, count: int = 1, retry_after_s: int = 60
    ) -> None:
        """Answer the next ``count`` matching requests with GitHub's secondary rate limit (403, ``retry-after``)."""
        self._core.faults.add(Fault("secondary_rate_limit", method, path_prefix, count, retry_after_s=retry_after_s))

    def exhaust_rate_limit(
        self, token: str, *, reset_in_s: int = 60, resource: Literal["core", "graphql"] = "core"
    ) -> None:
        """Spend ``token``'s primary rate limit; it refills ``reset_in_s`` seconds from now."""
        self._core.limits.exhaust(token, resource, reset_in_s=reset_in_s)

    def rate_limit_remaining(self, token: str, *, resource: Literal["core", "graphql"] = "core") -> int:
        """What ``x-ratelimit-remaining`` would say for ``token`` now."""
        return self._core.limits.peek(token, resource).remaining

    def clear_faults(self) -> None:
        """Forget every injected fault that has not fired yet."""
        self._core.faults.clear()

    # the request log

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every API request answered so far, oldest first (``/_control`` calls excluded)."""
        return list(self._core.requests)

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._core.requests.clear()

    # internals

    def _repo(self, owner: str, name: str) -> Repo:
        return self._core.store.repo(owner, name)

    def _issue(self, seeded: SeededIssue) -> Issue:
        return self._core.store.issue(self._repo(seeded.owner, seeded.repo), seeded.number)

    def _seed[T](self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        finally:
            self._core.discard_changes()


def _seeded_issue(issue: Issue) -> SeededIssue:
    return SeededIssue(issue.repo.owner.login, issue.repo.name, issue.number, issue.id, node_id("Issue", issue.id))


@dataclass(frozen=True)
class RunningGitHub:
    """A served :class:`FakeGitHub`: ``base_url`` is the REST root (trailing slash), GraphQL is ``graphql_url``."""

    base_url: str
    github: FakeGitHub

    @property
    def graphql_url(self) -> str:
        """``POST`` GraphQL documents here (``{base_url}graphql``)."""
        return f"{self.base_url}graphql"


def create_app(github: FakeGitHub, *, base_url: str, web_url: str | None = None) -> FastAPI:
    """Build the ASGI app serving ``github``.

    Args:
        github: the state to serve.
        base_url: the URL clients reach the app at, with a trailing slash; response URLs point there.
        web_url: where ``html_url`` links point (defaults to ``base_url``).
    """
    core = github._core
    core.bind(Urls(api=_slashed(base_url), web=_slashed(web_url or base_url)))

    return build_app(core, control_router(github))


class _SignalFreeServer(uvicorn.Server):
    # Served inside someone else's event loop (a test, the demo): uvicorn must not take over the process's
    # signal handlers (uvicorn #1579); whoever owns the loop owns the signals.
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before uvicorn starts, so the port (even port 0) is known and connections queue."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
    # without it Nagle plus delayed ACKs add ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_github(
    github: FakeGitHub | None = None, *, host: str = "127.0.0.1", port: int = 0, web_url: str | None = None
) -> AsyncIterator[RunningGitHub]:
    """Serve ``github`` (a fresh one when None) on ``host``; port 0 picks a free port.

    Yields once the server accepts requests; on exit the server stops and pending webhooks are dropped.
    """
    github = github or FakeGitHub()
    sock = bind_socket(host, port)
    base_url = f"http://{host}:{sock.getsockname()[1]}/"
    app = create_app(github, base_url=base_url, web_url=web_url)
    app.state.started = started = asyncio.Event()
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = _SignalFreeServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="github-test-server")
    waiting = asyncio.create_task(started.wait())
    try:
        # The socket already listens, so once the lifespan has started, connections queue until uvicorn
        # accepts them: no polling for uvicorn's own readiness.
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            serving.result()
            raise GitHubTestServerError("the GitHub test server stopped during startup", status=500)
        yield RunningGitHub(base_url, github)
    finally:
        waiting.cancel()
        server.should_exit = True
        await serving
        sock.close()


def _slashed(url: str) -> str:
    return url if url.endswith("/") else url + "/"
