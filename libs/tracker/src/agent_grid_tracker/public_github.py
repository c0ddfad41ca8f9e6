"""The GitHub adapter of the tracker abstraction: settings and the one way to open it.

Authenticates as a GitHub App installation (production) or with a token (a person's or a bot's).
Pins REST API version 2022-11-28, caps rate-limit waits, retries outages with capped backoff and paces
content-creating writes (≥ 1 s apart, ≤ 80 a minute) as GitHub asks.
"""

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import structlog
from githubkit import AppInstallationAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.cache import MemCacheStrategy
from pydantic import BaseModel, Field, SecretStr, model_validator

from agent_grid_tracker.github_adapter import API_VERSION, GitHubTracker
from agent_grid_tracker.github_retry import RetryPolicy
from agent_grid_tracker.public_rate_limits import RateLimitBook
from agent_grid_tracker.write_pacer import PacingThrottler, WriteSchedule

__all__ = ["API_VERSION", "GitHubAppSettings", "GitHubSettings", "GitHubTracker", "open_github_tracker"]

_log = structlog.get_logger(__name__)


class GitHubAppSettings(BaseModel):
    """A GitHub App installation: the App's id and private key (PEM) and the installation to act for."""

    app_id: int
    private_key: SecretStr
    installation_id: int


class GitHubSettings(BaseModel):
    """How to reach GitHub (or a GitHub-compatible server) and how gently to treat it."""

    api_url: str = "https://api.github.com/"
    # Our account as GitHub names it (an App's bot is `<slug>[bot]`): only its comments are ever ours.
    login: str = "agent-grid[bot]"
    token: SecretStr | None = None
    app: GitHubAppSettings | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 15.0
    # Longer waits for a rate-limit reset surface as RateLimited instead of a silent hour-long sleep.
    max_rate_limit_wait_s: Annotated[float, Field(ge=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0)] = 4
    retry_backoff_cap_s: Annotated[float, Field(gt=0)] = 8.0
    # GitHub's guidance for content-creating requests; tests against a local server may lower them.
    write_interval_s: Annotated[float, Field(ge=0)] = 1.0
    writes_per_minute: Annotated[int, Field(ge=1)] = 80
    max_concurrent_reads: Annotated[int, Field(ge=1)] = 8
    page_size: Annotated[int, Field(ge=1, le=100)] = 100
    user_agent: str = "agent-grid"

    @model_validator(mode="after")
    def _one_credential(self) -> "GitHubSettings":
        if (self.token is None) == (self.app is None):
            raise ValueError("configure exactly one of `token` and `app`")
        return self


class _SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for every client githubkit creates; only the tracker's exit closes it.

    githubkit keeps its client in a context variable, which request handlers running in other tasks do
    not see, so it builds a client per call and closes it afterwards; sharing the transport keeps the
    connections alive across those clients.
    """

    def __init__(self) -> None:
        self._transport = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Ignore the per-call client's close."""

    async def close_for_real(self) -> None:
        await self._transport.aclose()


def _proxied() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


@asynccontextmanager
async def open_github_tracker(
    settings: GitHubSettings, *, request_hooks: Sequence[Callable[[httpx.Request], Awaitable[None]]] = ()
) -> AsyncIterator[GitHubTracker]:
    """A :class:`GitHubTracker` for the configured account, its connections released on exit.

    ``request_hooks`` see (and may adjust) each request before it is sent: instrumentation, or adapting
    headers to a recorded conversation in tests. Every response's rate-limit headers are recorded in the
    tracker's ``rate_limits``.
    """
    auth: Any
    if settings.app is not None:
        auth = AppInstallationAuthStrategy(
            app_id=settings.app.app_id,
            private_key=settings.app.private_key.get_secret_value(),
            installation_id=settings.app.installation_id,
        )
    else:
        assert settings.token is not None  # guaranteed by the settings validator
        auth = TokenAuthStrategy(settings.token.get_secret_value())
    # httpx honours HTTPS_PROXY/NO_PROXY only for the transports it builds itself; behind a proxy, let it.
    transport = None if _proxied() else _SharedTransport()

    def on_write_wait(delay_s: float) -> None:
        _log.debug("github_write_paced", wait_s=round(delay_s, 3))

    rate_limits = RateLimitBook()

    async def on_response(response: httpx.Response) -> None:
        rate_limits.observe(response.headers)

    github: GitHub[Any] = GitHub(
        auth,
        base_url=settings.api_url,
        user_agent=settings.user_agent,
        timeout=settings.timeout_s,
        async_transport=transport,
        async_event_hooks={"request": list(request_hooks), "response": [on_response]},
        # Conditional requests are ours to make (polling); a transparent cache would hide the 304s.
        http_cache=False,
        # githubkit's default cache (installation tokens among others) is one per process; a tracker's own
        # keeps two trackers (two Apps, two test servers) from handing each other tokens.
        cache_strategy=MemCacheStrategy(),
        throttler=PacingThrottler(
            WriteSchedule(min_interval_s=settings.write_interval_s, max_per_minute=settings.writes_per_minute),
            max_concurrent_reads=settings.max_concurrent_reads,
            on_wait=on_write_wait,
        ),
        auto_retry=RetryPolicy(
            max_rate_limit_wait_s=settings.max_rate_limit_wait_s,
            max_retries=settings.max_retries,
            backoff_cap_s=settings.retry_backoff_cap_s,
        ),
    )
    try:
        yield GitHubTracker(github, login=settings.login, page_size=settings.page_size, rate_limits=rate_limits)
    finally:
        if transport is not None:
            await transport.close_for_real()
