"""The agent tools' HTTP client: the one implementation behind the ``agent-grid-tools`` CLI and MCP server.

Anything that runs inside an agent run may import it. It speaks the contract of
``agent_grid_contracts.public_tools`` to the coordinator's ``/tools/v1`` endpoints with the run token, and
returns the contract's models. Backward-compatible changes only.
"""

import asyncio
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import httpx
from agent_grid_contracts.public_tools import (
    CommentRequest,
    CommentResult,
    FinishOutcome,
    FinishRequest,
    FinishResult,
    IssueDetail,
    NewSubIssue,
    NudgeRequest,
    NudgeResult,
    SubIssuesRequest,
    SubIssuesResult,
    ToolError,
    WorkpadRequest,
    WorkpadResult,
)
from pydantic import BaseModel, ValidationError

__all__ = [
    "RUN_TOKEN_ENV",
    "TOOLS_URL_ENV",
    "RetryPolicy",
    "ToolCallError",
    "ToolsClient",
    "ToolsClientError",
    "ToolsConfigError",
]

TOOLS_URL_ENV = "AGENT_GRID_TOOLS_URL"
"""The coordinator's base URL inside a run, e.g. ``http://127.0.0.1:8002`` (without ``/tools/v1``)."""

RUN_TOKEN_ENV = "AGENT_GRID_RUN_TOKEN"
"""The run token inside a run (see ``agent_grid_contracts.public_run_tokens``)."""

_PREFIX = "/tools/v1"
_USER_AGENT = "agent-grid-tools/0.1"
# 502/504 come from a proxy in front of the coordinator, 503 from the coordinator itself (tracker down):
# all three say "not now", never "no".
_RETRYABLE_STATUSES = frozenset({502, 503, 504})
# The coordinator answers with a ToolError; anything else (a proxy's HTML page, a framework's default 404)
# is named after its status so that callers still get one shape.
_ERROR_NAMES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid"}
_MAX_DETAIL_CHARS = 2000

type _Method = Literal["GET", "POST", "PUT"]


class ToolsClientError(Exception):
    """Base of every fault this client raises."""


class ToolsConfigError(ToolsClientError):
    """The environment does not say where the coordinator is or which run this is."""


class ToolCallError(ToolsClientError):
    """A call the coordinator refused (4xx) or could not serve (5xx, unreachable, unreadable answer).

    Args:
        status: the HTTP status, or None when no response arrived (connection refused, timeout).
        error: the coordinator's :class:`ToolError` (synthesized from the status when it sent none).
        operation: what was asked, e.g. ``POST /tools/v1/subissues``, for the message.
    """

    def __init__(self, status: int | None, error: ToolError, *, operation: str = "") -> None:
        self.status = status
        self.error = error
        self.operation = operation
        super().__init__(self._message())

    @property
    def refused(self) -> bool:
        """The coordinator said no (4xx): repeating the same call will not help."""
        return self.status is not None and 400 <= self.status < 500

    def _message(self) -> str:
        what = self.operation or "tools call"
        if self.status is None:
            how = f"failed ({self.error.error})"
        else:
            how = f"{'refused' if self.refused else 'failed'} ({self.status} {self.error.error})"
        retry = f"; retry after {self.error.retry_after_s:g}s" if self.error.retry_after_s is not None else ""
        return f"{what} {how}: {self.error.detail}{retry}"


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls (``show``, ``workpad``) retry a 502/503/504 or a lost connection.

    Non-idempotent calls (creating sub-issues, comments, nudges, finishing) are never retried: a request that
    reached the coordinator before the connection dropped may have done its work, and repeating it would
    duplicate it. The delay doubles from ``initial_delay_s`` up to ``max_delay_s`` (half-jittered); a
    ``retry_after_s`` from the coordinator takes precedence, capped at ``max_delay_s``.
    """

    max_attempts: int = 4
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """The pause before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


class ToolsClient:
    """The run's tools, over HTTP; use as ``async with ToolsClient.from_environment() as tools: ...``.

    Every call names issues as ``owner/repo#number``; where an issue is optional it defaults to the run's own.

    Args:
        base_url: the coordinator's base URL (the client appends ``/tools/v1``).
        run_token: the run token, sent as ``Authorization: Bearer``.
        timeout_s: per-request timeout of reads and updates.
        create_timeout_s: per-request timeout of ``create_subissues``. The coordinator paces GitHub writes
            (at least 1 s apart, 80 a minute), and each sub-issue costs several writes, so a large fan-out
            legitimately takes minutes.
        retry: the retry policy of idempotent calls.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        run_token: str,
        *,
        timeout_s: float = 60.0,
        create_timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._create_timeout = httpx.Timeout(create_timeout_s, connect=min(10.0, create_timeout_s))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + _PREFIX,
            headers={"Authorization": f"Bearer {run_token}", "User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Self:
        """A client for the run described by ``AGENT_GRID_TOOLS_URL`` and ``AGENT_GRID_RUN_TOKEN``.

        Raises:
            ToolsConfigError: a variable is missing or empty, or the URL is not http(s).
        """
        env = os.environ if environ is None else environ
        url = env.get(TOOLS_URL_ENV, "").strip()
        token = env.get(RUN_TOKEN_ENV, "").strip()
        missing = [name for name, value in ((TOOLS_URL_ENV, url), (RUN_TOKEN_ENV, token)) if not value]
        if missing:
            raise ToolsConfigError(
                f"{' and '.join(missing)} not set: these tools only work inside an agent-grid run, "
                "whose environment carries the coordinator's URL and the run token"
            )
        if not url.startswith(("http://", "https://")):
            raise ToolsConfigError(f"{TOOLS_URL_ENV} must be an http(s) URL, got {url!r}")
        return cls(url, token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def show(self, issue: str | None = None) -> IssueDetail:
        """One issue of the run's tree with its parent, children, blockers and latest comments.

        Raises:
            ToolCallError: refused or unavailable (after retries).
        """
        params = {"issue": issue} if issue else None
        return await self._call("GET", "/issue", IssueDetail, params=params)

    async def create_subissues(self, issues: Sequence[NewSubIssue], *, parent: str | None = None) -> SubIssuesResult:
        """Create ``issues`` in order under ``parent`` (default: the run's issue). Never retried.

        Raises:
            pydantic.ValidationError: the request breaks the contract's limits (1 to 50 issues, title length).
            ToolCallError: refused (e.g. 409 ``cap_reached``) or unavailable.
        """
        request = SubIssuesRequest(parent=parent, issues=tuple(issues))
        return await self._call(
            "POST", "/subissues", SubIssuesResult, body=request, request_timeout=self._create_timeout
        )

    async def comment(self, body: str, *, issue: str | None = None) -> CommentResult:
        """Post a new comment on ``issue`` (default: the run's issue). Never retried.

        Raises:
            pydantic.ValidationError: empty or over-long body.
            ToolCallError: refused or unavailable.
        """
        return await self._call("POST", "/comments", CommentResult, body=CommentRequest(issue=issue, body=body))

    async def update_workpad(self, body: str, *, issue: str | None = None) -> WorkpadResult:
        """Create or replace the run's single progress comment on ``issue`` (default: the run's issue).

        Raises:
            pydantic.ValidationError: empty or over-long body.
            ToolCallError: refused or unavailable (after retries).
        """
        return await self._call("PUT", "/workpad", WorkpadResult, body=WorkpadRequest(issue=issue, body=body))

    async def nudge(self, issue: str, reason: str) -> NudgeResult:
        """Ask the coordinator to look at ``issue``; it decides by the same rules as for any nudge. Never retried.

        Raises:
            pydantic.ValidationError: empty or over-long reason.
            ToolCallError: refused or unavailable.
        """
        return await self._call("POST", "/nudges", NudgeResult, body=NudgeRequest(issue=issue, reason=reason))

    async def finish(
        self,
        outcome: FinishOutcome,
        summary: str,
        *,
        close_issue: bool = False,
        pull_request: str | None = None,
    ) -> FinishResult:
        """Record how the run ends. Never retried.

        Raises:
            pydantic.ValidationError: empty or over-long summary.
            ToolCallError: refused or unavailable.
        """
        request = FinishRequest(outcome=outcome, summary=summary, close_issue=close_issue, pull_request=pull_request)
        return await self._call("POST", "/finish", FinishResult, body=request)

    async def _call[R: BaseModel](
        self,
        method: _Method,
        path: str,
        result: type[R],
        *,
        params: Mapping[str, str] | None = None,
        body: BaseModel | None = None,
        request_timeout: httpx.Timeout | None = None,
    ) -> R:
        operation = f"{method} {_PREFIX}{path}"
        # GET and PUT are idempotent (a replaced workpad with the same body writes nothing), so a retry
        # cannot duplicate anything; a POST that may have reached the coordinator must not be repeated.
        attempts = self._retry.max_attempts if method in ("GET", "PUT") else 1
        content = body.model_dump_json().encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=headers,
                    timeout=request_timeout if request_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as error:
                failure = ToolCallError(None, _unreachable(error, self._http.base_url), operation=operation)
                if last:
                    raise failure from error
                await asyncio.sleep(self._retry.delay_s(attempt, None))
                continue
            if response.is_success:
                return _parse_result(response, result, operation)
            failure = ToolCallError(response.status_code, _tool_error(response), operation=operation)
            if last or response.status_code not in _RETRYABLE_STATUSES:
                raise failure
            await asyncio.sleep(self._retry.delay_s(attempt, failure.error.retry_after_s))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _parse_result[R: BaseModel](response: httpx.Response, result: type[R], operation: str) -> R:
    try:
        return result.model_validate_json(response.content)
    except ValidationError as error:
        detail = f"the coordinator's answer is not a {result.__name__}: {error}"
        raise ToolCallError(
            response.status_code,
            ToolError(error="bad_response", detail=detail[:_MAX_DETAIL_CHARS]),
            operation=operation,
        ) from error


def _tool_error(response: httpx.Response) -> ToolError:
    try:
        return ToolError.model_validate_json(response.content)
    except ValidationError:
        pass
    status = response.status_code
    name = _ERROR_NAMES.get(status, "unavailable" if status >= 500 else f"http_{status}")
    text = response.text.strip() or response.reason_phrase
    retry_after = response.headers.get("Retry-After", "")
    return ToolError(
        error=name,
        detail=text[:_MAX_DETAIL_CHARS],
        retry_after_s=float(retry_after) if retry_after.isdigit() else None,
    )


def _unreachable(error: httpx.TransportError, base_url: httpx.URL) -> ToolError:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "could not reach the coordinator"
    return ToolError(error="unavailable", detail=f"{kind} at {base_url}: {type(error).__name__} {error}".strip())
