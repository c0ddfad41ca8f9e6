"""What githubkit may retry, and for how long, and how its exceptions become tracker errors.

githubkit's default waits out a primary rate limit until its reset (up to an hour) inside one call; a
service would hang with nothing in its logs. Here a rate-limit wait is capped and logged, longer ones
surface as :class:`RateLimited`; outages are retried with capped exponential backoff; and a write is
re-sent only when it surely never reached GitHub (a connect error), never after an ambiguous failure
that may have created a duplicate comment or issue.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import structlog
from githubkit.exception import (
    GitHubException,
    GraphQLFailed,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
    RequestTimeout,
)
from githubkit.typing import RetryOption

from agent_grid_tracker.public_tracker import (
    IssueNotFound,
    RateLimited,
    TrackerError,
    TrackerRefused,
    TrackerUnavailable,
)

_log = structlog.get_logger(__name__)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    """githubkit ``auto_retry`` decision function."""

    max_rate_limit_wait_s: float = 60.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        if retry_count >= self.max_retries:
            return RetryOption(False)
        if isinstance(exc, RateLimitExceeded):
            wait_s = exc.retry_after.total_seconds()
            if wait_s > self.max_rate_limit_wait_s:
                return RetryOption(False)
            _log.warning("github_rate_limited", wait_s=round(wait_s, 1), kind=type(exc).__name__)
            return RetryOption(True, exc.retry_after)
        if not _transient(exc):
            return RetryOption(False)
        backoff = timedelta(seconds=min(self.backoff_cap_s, self.backoff_base_s * 2**retry_count))
        _log.warning("github_retrying", attempt=retry_count + 1, backoff_s=backoff.total_seconds(), error=repr(exc))
        return RetryOption(True, backoff)


def _transient(exc: GitHubException) -> bool:
    if isinstance(exc, RequestFailed):
        return exc.response.status_code >= 500 and _is_idempotent(exc.request)
    if isinstance(exc, RequestTimeout):
        return _is_idempotent(exc.request)
    if isinstance(exc, RequestError):
        cause: Any = exc.exc
        if isinstance(cause, httpx.ConnectError):
            return True  # nothing reached the server: safe for writes too
        if isinstance(cause, httpx.TransportError):
            return _is_idempotent(cause.request)
    return False


def _is_idempotent(request: httpx.Request) -> bool:
    # GraphQL queries travel as POST but read only; this adapter sends no mutations.
    return request.method in _IDEMPOTENT or request.url.path.endswith("/graphql")


def tracker_error(exc: GitHubException, what: str) -> TrackerError:
    """The tracker error that tells a caller what to do about ``exc`` (raised while doing ``what``)."""
    if isinstance(exc, RateLimitExceeded):
        wait_s = exc.retry_after.total_seconds()
        return RateLimited(f"{what}: GitHub rate limit, retry in {wait_s:.0f} s", retry_after_s=wait_s)
    if isinstance(exc, RequestFailed):
        status = exc.response.status_code
        message = f"{what}: GitHub answered {status}: {_message(exc.response.raw_response)}"
        if status == 429 or (status == 403 and "secondary rate limit" in message.lower()):
            # A secondary limit without retry-after or a spent counter: GitHub says wait at least a minute.
            return RateLimited(f"{what}: GitHub secondary rate limit", retry_after_s=60.0)
        if status in (404, 410):
            return IssueNotFound(message)
        if status >= 500:
            return TrackerUnavailable(message)
        return TrackerRefused(message, status=status)
    if isinstance(exc, GraphQLFailed):
        errors = exc.response.errors or []
        message = f"{what}: " + "; ".join(error.message for error in errors)
        # Only the issue asked for (or its repository) missing is "not found"; a hidden blocker is not.
        if any(
            error.type == "NOT_FOUND" and list(error.path or [])[:2] in (["repository"], ["repository", "issue"])
            for error in errors
        ):
            return IssueNotFound(message)
        if any(error.type is None for error in errors):
            return TrackerUnavailable(message)  # GitHub's untyped errors: timeouts, something went wrong
        return TrackerRefused(message)
    if isinstance(exc, RequestError):
        return TrackerUnavailable(f"{what}: {type(exc.exc).__name__}: {exc.exc}")
    return TrackerUnavailable(f"{what}: {exc!r}")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        details = [
            str(error.get("message") or error.get("code"))
            for error in body.get("errors") or []
            if isinstance(error, dict)
        ]
        return "; ".join([str(body.get("message", "")), *details]).strip("; ")
    return str(body)[:200]
