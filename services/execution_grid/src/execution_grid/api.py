"""The worker's HTTP API: its runs, one run's record, its log, and cancelling it.

Token-protected (``Authorization: Bearer <EXECUTION_GRID_API_TOKEN>``): logs show what agents printed,
which may include what they read. Without a configured token the API answers 401 to everything.
"""

import asyncio
import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, SecretStr

from execution_grid.grid import ActiveRun, Grid
from execution_grid.run_log import read_run_log
from execution_grid.run_store import RunStore


class RunOut(BaseModel):
    """A run as this worker knows it."""

    run_id: str
    issue: str
    agent_kind: str | None
    mode: str | None
    state: str
    """``running`` or ``exited`` (or ``unknown`` for a record without a launch)."""
    pid: int | None = None
    started_at: datetime | None = None
    last_output_at: datetime | None = None
    stop_reason: str | None = None
    exit: dict[str, Any] | None = None


class WorkerOut(BaseModel):
    """This worker and what it runs now."""

    worker_id: str
    slots: int
    runner: str
    running: list[RunOut]


def build_runs_router(grid: Grid, store: RunStore, *, token: SecretStr | None, slots: int, runner: str) -> APIRouter:
    """``/runs`` routes over the grid's active runs and the run store."""

    def authorised(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API is disabled: set EXECUTION_GRID_API_TOKEN")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token")

    router = APIRouter(prefix="/runs", dependencies=[Depends(authorised)], tags=["execution-grid"])

    @router.get("")
    async def list_runs() -> WorkerOut:
        return WorkerOut(
            worker_id=grid.worker_id,
            slots=slots,
            runner=runner,
            running=[_active_out(run) for run in grid.active.values()],
        )

    @router.get("/{run_id}")
    async def get_run(run_id: str) -> RunOut:
        active = grid.active.get(run_id)
        if active is not None:
            return _active_out(active)
        record = store.load(run_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r} on this worker")
        launch = record.launch
        return RunOut(
            run_id=run_id,
            issue=str(launch.issue) if launch else "",
            agent_kind=launch.agent_kind if launch else None,
            mode=launch.mode.value if launch else None,
            state="exited" if record.exit else "unknown",
            pid=record.process.pid if record.process else None,
            exit=record.exit.model_dump(mode="json") if record.exit else None,
        )

    @router.get("/{run_id}/log", response_class=PlainTextResponse)
    async def get_log(
        run_id: str, tail_bytes: Annotated[int | None, Query(ge=1, le=50 * 1024 * 1024)] = None
    ) -> PlainTextResponse:
        if store.load(run_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r} on this worker")
        # Up to a whole capped log from disk: not on the event loop that supervises the agents.
        text = await asyncio.to_thread(read_run_log, store.directory(run_id), tail_bytes=tail_bytes)
        return PlainTextResponse(text.decode("utf-8", errors="replace"))

    @router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
    async def cancel_run(run_id: str, grace_s: Annotated[float, Query(ge=0, le=3600)] = 0.0) -> dict[str, str]:
        if not grid.cancel(run_id, grace_s=grace_s, why="cancelled through the worker API"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r} in flight on this worker")
        return {"run_id": run_id, "state": "cancelling"}

    return router


def _active_out(run: ActiveRun) -> RunOut:
    return RunOut(
        run_id=run.launch.run_id,
        issue=str(run.launch.issue),
        agent_kind=run.launch.agent_kind,
        mode=run.launch.mode.value,
        state="running",
        pid=run.process.pid,
        started_at=run.started_at,
        last_output_at=run.last_output_at,
        stop_reason=run.watch.stop_reason.value if run.watch.stop_reason else None,
    )
