"""The coordinator's HTTP API (under ``/api``): runs, trees, the rules in force, queues, and the controls.

Token-protected (``Authorization: Bearer <COORDINATOR_API__TOKEN>``, or the dashboard's session cookie: see
``public_auth``); without a configured token every call is refused. OpenAPI at ``/docs``.
"""

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from agent_grid_contracts.public_issues import IssueRef, parse_issue_ref
from agent_grid_runtime.public_queues import QueueName, QueueUrls
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, computed_field

from coordinator.api.public_auth import ApiAuth
from coordinator.api.public_run_logs import RunLogs, RunLogUnavailable
from coordinator.decisions.public_policy import Policy
from coordinator.ledger.public_ledger import Ledger, RunRecord

__all__ = ["ApiSettings", "RunOut", "TreeCanceller", "build_api_router"]

# Stops every active run of a tree (by its root's key); returns how many CancelRun commands were delivered.
type TreeCanceller = Callable[[str], Awaitable[int]]
# GET /api/outbox lists the most recently parked writes, at most this many (the count says how many there are).
_PARKED_SHOWN = 50


class ApiSettings(BaseModel):
    """``token``: the bearer token every ``/api`` call must carry; unset refuses them all."""

    token: SecretStr | None = None


class RunOut(BaseModel):
    """A run as the API shows it (read straight from the ledger's record)."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    run_id: str
    issue: str = Field(validation_alias="issue_key")
    repo: str
    root: str = Field(validation_alias="root_key")
    mode: str
    agent_kind: str
    state: str
    authorised_by: str
    created_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    exit_reason: str | None
    cost_usd: float
    tokens: int
    sub_issues_created: int
    log_url: str | None = None
    # What the run was allotted of its tree's budget (its launch's limits); None for runs from before they were kept.
    max_cost_usd: float | None = None
    max_tokens: int | None = None


class RunDetail(RunOut):
    """A run with its transitions."""

    events: list[dict[str, Any]]


class Spend(BaseModel):
    """What a repository (today) or a tree has spent against its cap."""

    name: str
    cost_usd: float
    cap_usd: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def left_usd(self) -> float:
        """What is left before the cap (never below zero)."""
        return max(0.0, self.cap_usd - self.cost_usd)


class BudgetsOut(BaseModel):
    """Spend against the budgets, the runs in flight, and every cap in force."""

    day: str
    repos_today: list[Spend]
    active_trees: list[Spend]
    active_runs: dict[str, int]
    paused: bool
    caps: dict[str, Any]


class ParkedWriteOut(BaseModel):
    """A GitHub write given up after failing ``attempts`` times, kept until a newer wish of its row replaces it."""

    issue: str
    key: str
    attempts: int
    last_error: str | None
    parked_at: datetime


class OutboxOut(BaseModel):
    """The GitHub writes not yet written: how many, how many failed at least once, since when the oldest waits.

    ``parked``: how many were given up after too many failed attempts; ``parked_writes``: the latest of them.
    """

    pending: int
    failing: int
    oldest_enqueued_at: datetime | None
    parked: int = 0
    parked_writes: list[ParkedWriteOut] = []


class TreeOut(BaseModel):
    """An issue tree's roll-up against its budget."""

    root: str
    authorised_by: str | None
    runs: int
    active_runs: int
    cost_usd: float
    tokens: int
    killed: bool
    budget: dict[str, float | int]


def build_api_router(
    ledger: Ledger,
    policy: Policy,
    settings: ApiSettings,
    transport: QueueTransport,
    queues: QueueUrls,
    *,
    cancel_tree: TreeCanceller,
    run_logs: RunLogs | None = None,
) -> APIRouter:
    """The ``/api`` routes over the ledger and the queues.

    Args:
        ledger: the run ledger.
        policy: the rules in force.
        settings: the API's own settings.
        transport: the broker, for queue depths.
        queues: the work queues.
        cancel_tree: stops the runs of a tree whose kill switch was just turned on.
        run_logs: reads run logs from the grid workers; None answers every log request 502.
    """
    auth = ApiAuth(settings.token)

    def authorised(request: Request) -> None:
        auth.check(request)

    router = APIRouter(prefix="/api", dependencies=[Depends(authorised)], tags=["coordinator"])
    _add_run_routes(router, ledger)
    _add_log_route(router, ledger, run_logs)
    _add_tree_routes(router, ledger, policy, cancel_tree)
    _add_control_routes(router, ledger, policy, transport, queues)
    return router


def _add_run_routes(router: APIRouter, ledger: Ledger) -> None:
    @router.get("/runs")
    async def list_runs(
        repo: str | None = None,
        issue: Annotated[str | None, Query(description="owner/repo#number")] = None,
        state: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[RunOut]:
        issue_key = _issue_key(issue) if issue else None
        found = await ledger.runs(repo=repo, issue_key=issue_key, states=state or (), limit=limit)
        return [_run_out(run) for run in found]

    @router.get("/runs/{run_id}")
    async def get_run(run_id: str) -> RunDetail:
        found = await ledger.run(run_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
        run, events = found
        return RunDetail(**_run_out(run).model_dump(), events=[asdict(event) for event in events])


def _add_log_route(router: APIRouter, ledger: Ledger, run_logs: RunLogs | None) -> None:
    @router.get("/runs/{run_id}/log", response_class=PlainTextResponse)
    async def get_run_log(
        run_id: str,
        tail_bytes: Annotated[int | None, Query(ge=1, le=50 * 1024 * 1024, description="only the last N bytes")] = None,
    ) -> PlainTextResponse:
        """The run's log as its grid worker keeps it (head and tail of a capped log), as plain text.

        404: no such run, the run never started (no log yet), or its worker no longer has the log. 502: the
        worker is unreachable, refuses the coordinator's token, or fails. 504: the worker did not answer in time.
        """
        run = await ledger.run_record(run_id)
        if run is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
        if run.log_url is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"run {run_id} has no log: it has not started, or its worker has no EXECUTION_GRID_PUBLIC_URL",
            )
        if run_logs is None:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "the coordinator does not read grid workers' logs")
        try:
            text = await run_logs.fetch(run_id, run.log_url, tail_bytes=tail_bytes)
        except RunLogUnavailable as error:
            raise HTTPException(error.status, error.detail) from None
        return PlainTextResponse(text)


def _add_tree_routes(router: APIRouter, ledger: Ledger, policy: Policy, cancel_tree: TreeCanceller) -> None:
    @router.get("/trees/{owner}/{repo}/{number}")
    async def get_tree(owner: str, repo: str, number: int) -> TreeOut:
        root = IssueRef(repo=f"{owner}/{repo}", number=number)
        tree = await ledger.tree(root.key)
        if tree is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run ever happened in the tree of {root}")
        caps = policy.caps
        return TreeOut(
            root=tree.root_key,
            authorised_by=tree.authorised_by,
            runs=tree.runs,
            active_runs=tree.active_runs,
            cost_usd=tree.cost_usd,
            tokens=tree.tokens,
            killed=tree.killed,
            budget={
                "max_cost_usd_per_tree": caps.max_cost_usd_per_tree,
                "max_tokens_per_tree": caps.max_tokens_per_tree,
                "max_runs_per_tree": caps.max_runs_per_tree,
                "max_active_runs_per_tree": caps.max_active_runs_per_tree,
            },
        )

    async def set_killed(owner: str, repo: str, number: int, killed: bool) -> dict[str, Any]:
        root = IssueRef(repo=f"{owner}/{repo}", number=number)
        await ledger.set_tree_killed(root.key, killed)
        return {"root": root.key, "killed": killed}

    @router.post("/trees/{owner}/{repo}/{number}/kill")
    async def kill_tree(owner: str, repo: str, number: int) -> dict[str, Any]:
        # The switch first, then the runs: a run that launches meanwhile sees the switch when it starts.
        killed = await set_killed(owner, repo, number, True)
        return {**killed, "cancels_sent": await cancel_tree(killed["root"])}

    @router.post("/trees/{owner}/{repo}/{number}/revive")
    async def revive_tree(owner: str, repo: str, number: int) -> dict[str, Any]:
        return await set_killed(owner, repo, number, False)


def _add_control_routes(
    router: APIRouter, ledger: Ledger, policy: Policy, transport: QueueTransport, queues: QueueUrls
) -> None:
    @router.get("/policy")
    async def get_policy() -> dict[str, Any]:
        return {**policy.model_dump(mode="json"), "paused": await ledger.paused()}

    @router.post("/pause")
    async def pause() -> dict[str, bool]:
        await ledger.set_paused(True)
        return {"paused": True}

    @router.post("/resume")
    async def resume() -> dict[str, bool]:
        await ledger.set_paused(False)
        return {"paused": False}

    @router.get("/queues")
    async def queue_depths() -> dict[str, dict[str, int]]:
        depths: dict[str, dict[str, int]] = {}
        for name in QueueName:
            pair = queues.pair(name)
            for label, url in ((name.value, pair.url), (f"{name.value}-dlq", pair.dead_letter_url)):
                depth = await transport.depth(url)
                depths[label] = {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed}
        return depths

    @router.get("/budgets")
    async def budgets() -> BudgetsOut:
        """Spend against the budgets, the runs in flight, and the caps.

        Each repository's spend today (UTC) against its daily cap; each tree with runs in flight against its tree
        cap (finished runs plus what active ones reported).
        """
        today = datetime.now(UTC).date()
        view = await ledger.stats.read(today=today)
        caps = policy.caps
        return BudgetsOut(
            day=today.isoformat(),
            repos_today=[
                Spend(name=repo, cost_usd=cost, cap_usd=caps.max_cost_usd_per_repo_per_day)
                for repo, cost in sorted(view.repo_spend_today_usd.items())
            ],
            active_trees=[
                Spend(name=root, cost_usd=cost, cap_usd=caps.max_cost_usd_per_tree)
                for root, cost in sorted(view.active_tree_spend_usd.items())
            ],
            active_runs=view.active_runs,
            paused=view.paused,
            caps=caps.model_dump(mode="json"),
        )

    @router.get("/outbox")
    async def outbox() -> OutboxOut:
        """GitHub writes decided and not yet written (status comments, assignees, labels, roll-ups), and parked."""
        backlog = await ledger.outbox.backlog()
        parked = await ledger.outbox.parked(limit=_PARKED_SHOWN) if backlog.parked else []
        return OutboxOut(
            pending=backlog.pending,
            failing=backlog.failing,
            oldest_enqueued_at=backlog.oldest_enqueued_at,
            parked=backlog.parked,
            parked_writes=[
                ParkedWriteOut(
                    issue=write.issue_key,
                    key=write.key,
                    attempts=write.attempts,
                    last_error=write.last_error,
                    parked_at=write.parked_at,
                )
                for write in parked
            ],
        )


def _issue_key(text: str) -> str:
    try:
        return parse_issue_ref(text).key
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None


def _run_out(run: RunRecord) -> RunOut:
    return RunOut.model_validate(run)
