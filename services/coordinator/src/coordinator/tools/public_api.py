"""The agent tools' endpoints (under ``/tools/v1``): what a run may do to its own issue tree.

Called by the ``agent-grid-tools`` CLI and MCP server from inside runs; the contract, with its error
semantics, is ``agent_grid_contracts.public_tools``. Each call carries the run's token
(``Authorization: Bearer``, minted by the grid worker with the secret it shares with the coordinator); the
token names the run, and the ledger says whether it is still active and which tree it may act on.

Without ``COORDINATOR_TOOLS__RUN_TOKEN_SECRET`` the routes are still served (and documented), and answer every
call with 503 ``unavailable`` saying so, without ``retry_after_s``: an agent learns why its tools fail rather
than meeting a 404.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from agent_grid_contracts.public_run_tokens import InvalidRunToken, verify_run_token
from agent_grid_contracts.public_tools import (
    CommentRequest,
    CommentResult,
    FinishRequest,
    FinishResult,
    IssueDetail,
    NudgeRequest,
    NudgeResult,
    SubIssuesRequest,
    SubIssuesResult,
    ToolError,
    WorkpadRequest,
    WorkpadResult,
)
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_tracker.public_tracker import Tracker
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr, field_validator

from coordinator.decisions.public_policy import Policy
from coordinator.ledger.public_ledger import Ledger
from coordinator.tools.calls import AgentTools
from coordinator.tools.refusals import ToolRoute, run_over, unauthorized, unavailable
from coordinator.tools.scope import RunScope

__all__ = ["ToolsSettings", "build_tools_router"]

_MIN_SECRET_BYTES = 16  # what mint_run_token accepts
_DISABLED = "tools disabled: set COORDINATOR_TOOLS__RUN_TOKEN_SECRET (the secret the grid workers mint run tokens with)"


class ToolsSettings(BaseModel):
    """``run_token_secret``: the secret shared with the grid workers, which mint run tokens with it.

    At least 16 bytes; unset, every ``/tools/v1`` call is answered 503 ``unavailable``.
    """

    run_token_secret: SecretStr | None = None

    @field_validator("run_token_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < _MIN_SECRET_BYTES:
            raise ValueError(f"the run token secret must be at least {_MIN_SECRET_BYTES} bytes")
        return value


_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_401_UNAUTHORIZED: {"model": ToolError, "description": "The run token is missing, forged or expired."},
    status.HTTP_403_FORBIDDEN: {
        "model": ToolError,
        "description": "`run_over`: the run has ended; `out_of_scope`: the issue is outside the run's tree.",
    },
    status.HTTP_409_CONFLICT: {"model": ToolError, "description": "`cap_reached`: a fan-out cap, named in `detail`."},
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": ToolError, "description": "`invalid`: the request is malformed."},
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "model": ToolError,
        "description": "`unavailable`: the tracker or the queue is down (retry after `retry_after_s`), "
        "or the tools are disabled.",
    },
}

# The dependency that turns a request's run token into the run's scope.
type RunCheck = Callable[..., Awaitable[RunScope]]


def build_tools_router(
    *,
    ledger: Ledger,
    tracker: Tracker,
    nudges: Publisher,
    policy: Policy,
    settings: ToolsSettings,
    clock: Callable[[], datetime] | None = None,
) -> APIRouter:
    """The ``/tools/v1`` routes.

    Args:
        ledger: the run ledger (which runs are active, and their trees).
        tracker: the issue tracker the tools act on.
        nudges: a publisher to the nudges queue (an HTTP handler's: few attempts).
        policy: the rules in force (caps, opt-in, trust, the bot's login, the needs-human label).
        settings: the tools' own settings.
        clock: the time run events are stamped with.
    """
    tools = AgentTools(ledger, tracker, nudges, policy, clock or (lambda: datetime.now(UTC)))
    router = APIRouter(prefix="/tools/v1", tags=["agent tools"], route_class=ToolRoute, responses=_ERRORS)
    _add_routes(router, tools, _authenticator(ledger, settings))
    return router


def _authenticator(ledger: Ledger, settings: ToolsSettings) -> RunCheck:
    secret = settings.run_token_secret.get_secret_value().encode() if settings.run_token_secret else None
    bearer = HTTPBearer(auto_error=False, scheme_name="RunToken", description="The run token (AGENT_GRID_RUN_TOKEN).")

    async def current_run(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> RunScope:
        if secret is None:
            raise unavailable(_DISABLED, retry_after_s=None)
        if credentials is None:
            raise unauthorized("missing run token: send Authorization: Bearer <AGENT_GRID_RUN_TOKEN>")
        try:
            token = verify_run_token(secret, credentials.credentials)
        except InvalidRunToken as error:
            raise unauthorized(str(error)) from None
        request.state.run_id = token.run_id
        run = await ledger.run_record(token.run_id)
        if run is None:
            raise run_over(f"the coordinator has no run {token.run_id}")
        if not run.active:
            ended = f"{run.state}: {run.exit_reason}" if run.exit_reason else run.state
            raise run_over(f"run {run.run_id} is over ({ended}); its tools act no more")
        return RunScope.of(run)

    return current_run


def _add_routes(router: APIRouter, tools: AgentTools, authenticate: RunCheck) -> None:
    run_dep = Annotated[RunScope, Depends(authenticate)]

    @router.get("/issue", summary="show: an issue of the run's tree")
    async def show(
        run: run_dep,
        issue: Annotated[str | None, Query(description="owner/repo#number; default: the run's issue")] = None,
    ) -> IssueDetail:
        return await tools.show(run, issue)

    @router.post("/subissues", status_code=status.HTTP_201_CREATED, summary="create-subissues")
    async def create_sub_issues(run: run_dep, request: SubIssuesRequest) -> SubIssuesResult:
        return await tools.create_sub_issues(run, request)

    @router.post("/comments", status_code=status.HTTP_201_CREATED, summary="comment")
    async def comment(run: run_dep, request: CommentRequest) -> CommentResult:
        return await tools.comment(run, request)

    @router.put("/workpad", summary="workpad: the run's one progress comment on an issue")
    async def workpad(run: run_dep, request: WorkpadRequest) -> WorkpadResult:
        return await tools.workpad(run, request)

    @router.post("/nudges", status_code=status.HTTP_202_ACCEPTED, summary="nudge")
    async def nudge(run: run_dep, request: NudgeRequest) -> NudgeResult:
        return await tools.nudge(run, request)

    @router.post("/finish", summary="finish: the run's outcome")
    async def finish(run: run_dep, request: FinishRequest) -> FinishResult:
        return await tools.finish(run, request)
