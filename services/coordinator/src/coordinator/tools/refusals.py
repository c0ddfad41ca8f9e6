"""Every way a tools call fails, as the contract's :class:`ToolError` with its HTTP status.

Handlers raise :class:`Refusal`; :class:`ToolRoute` turns it (and FastAPI's validation errors, tracker and
queue faults, and anything unexpected) into the JSON answer, and writes the call's one log line.
"""

import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from agent_grid_contracts.public_tools import ToolError
from agent_grid_runtime.public_sqs import PublishError
from agent_grid_tracker.public_tracker import IssueNotFound, RateLimited, TrackerError, TrackerRefused
from fastapi import Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

_log = structlog.get_logger(__name__)

# An outage of the tracker or the broker: an agent waits this long before it tries again. Short, because a
# run's wall clock is ticking, and the client caps its own waits anyway.
UNAVAILABLE_RETRY_S = 10.0
_MAX_DETAIL_CHARS = 2000


class Refusal(Exception):
    """A call answered with a :class:`ToolError` (raised by handlers, answered by :class:`ToolRoute`)."""

    def __init__(self, status_code: int, error: str, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = ToolError(error=error, detail=detail[:_MAX_DETAIL_CHARS], retry_after_s=retry_after_s)

    def response(self) -> JSONResponse:
        headers = {}
        if self.error.retry_after_s is not None:
            headers["Retry-After"] = str(math.ceil(self.error.retry_after_s))
        return JSONResponse(
            self.error.model_dump(mode="json", exclude_none=True), status_code=self.status_code, headers=headers
        )


def unauthorized(detail: str) -> Refusal:
    return Refusal(status.HTTP_401_UNAUTHORIZED, "unauthorized", detail)


def run_over(detail: str) -> Refusal:
    return Refusal(status.HTTP_403_FORBIDDEN, "run_over", detail)


def out_of_scope(detail: str) -> Refusal:
    return Refusal(status.HTTP_403_FORBIDDEN, "out_of_scope", detail)


def cap_reached(detail: str) -> Refusal:
    return Refusal(status.HTTP_409_CONFLICT, "cap_reached", detail)


def invalid(detail: str) -> Refusal:
    return Refusal(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid", detail)


def unavailable(detail: str, retry_after_s: float | None = UNAVAILABLE_RETRY_S) -> Refusal:
    return Refusal(status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", detail, retry_after_s=retry_after_s)


def tracker_refusal(error: TrackerError, *, context: str = "") -> Refusal:
    """What a tracker fault means to the agent; ``context`` says what had been done already, if anything."""
    prefix = f"{context}: " if context else ""
    if isinstance(error, RateLimited):
        return unavailable(
            f"{prefix}the tracker is rate limited: {error}", retry_after_s=math.ceil(error.retry_after_s)
        )
    if isinstance(error, IssueNotFound):
        return out_of_scope(f"{prefix}no such issue, or hidden from agent-grid: {error}")
    if isinstance(error, TrackerRefused):
        return invalid(f"{prefix}the tracker refused: {error}")
    return unavailable(f"{prefix}the tracker is unavailable: {error}")


def validation_detail(error: RequestValidationError) -> str:
    """FastAPI's validation errors in one line: ``where: what`` for each."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


class ToolRoute(APIRoute):
    """A ``/tools/v1`` route: every failure becomes a :class:`ToolError`, every call one log line."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def answer(request: Request) -> Response:
            began = time.perf_counter()
            try:
                response = await handle(request)
            except Exception as error:  # the boundary: every failure, expected or not, answers a ToolError
                response = _answer_failure(error, request).response()
            _log.info(
                "tool_called",
                method=request.method,
                path=request.url.path,
                run_id=getattr(request.state, "run_id", None),
                status=response.status_code,
                duration_ms=round((time.perf_counter() - began) * 1000, 1),
            )
            return response

        return answer


def _answer_failure(error: Exception, request: Request) -> Refusal:
    match error:
        case Refusal():
            return error
        case RequestValidationError():
            return invalid(validation_detail(error))
        case TrackerError():
            return tracker_refusal(error)
        case PublishError():
            return unavailable(f"the nudge queue is unavailable: {error}")
        case _:
            _log.exception("tool_call_failed", path=request.url.path, run_id=getattr(request.state, "run_id", None))
            return Refusal(
                status.HTTP_500_INTERNAL_SERVER_ERROR, "internal", f"the coordinator failed ({type(error).__name__})"
            )
