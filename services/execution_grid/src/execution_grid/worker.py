"""Composition root of the execution-grid worker: launches in, supervised agents, lifecycle events out.

Start-up settles what a previous incarnation left (its agents are killed, their exits published) before
the first launch is received. Stop ends receiving first, then winds the running agents down (each reports
``lost`` so the coordinator re-decides its issue), then stops the control queue and the HTTP API.
"""

import asyncio
import contextlib
import os

import structlog
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import QueueName, ensure_control_queue
from agent_grid_runtime.public_service import ServiceRuntime, StartupAborted, open_service_runtime
from agent_grid_runtime.public_sqs import Consumer, Handlers
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import FastAPI

from execution_grid.api import build_runs_router
from execution_grid.grid import Grid
from execution_grid.run_store import RunStore
from execution_grid.runner.public_runner import BubblewrapRunner, LocalProcessRunner, Runner
from execution_grid.settings import Settings
from execution_grid.workspaces.public_workspaces import WorkspaceManager

SERVICE = "execution-grid"
_log = structlog.get_logger(__name__)


def build_runner(settings: Settings) -> Runner:
    """The runner the settings ask for; bubblewrap hides the worker's state directory from its agents."""
    if settings.sandbox.runner == "bubblewrap":
        return BubblewrapRunner(hide=(settings.state_dir.resolve() / "secrets",))
    return LocalProcessRunner()


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    transport: QueueTransport | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    """Run launches and serve the API until ``stop`` is set, then drain and wind the agents down."""
    try:
        async with open_service_runtime(settings, service=SERVICE, transport=transport, stop=stop) as runtime:
            await _serve(runtime, settings, stop, dict(os.environ) if environ is None else environ)
    except StartupAborted:
        _log.info("startup_aborted")


async def _serve(runtime: ServiceRuntime, settings: Settings, stop: asyncio.Event, environ: dict[str, str]) -> None:
    state = settings.state_dir.resolve()
    store = RunStore(state / "runs")
    workspaces = WorkspaceManager(
        root=state / "workspaces",
        cache_dir=state / "git-cache",
        min_refetch_interval_s=settings.workspace.min_refetch_interval_s,
    )
    runner = build_runner(settings)
    public_url = settings.public_url.rstrip("/") if settings.public_url else None
    grid = Grid(
        settings,
        runner=runner,
        workspaces=workspaces,
        store=store,
        events=runtime.publisher(QueueName.LIFECYCLE),
        environ=environ,
        log_url=lambda run_id: f"{public_url}/runs/{run_id}/log" if public_url else None,
    )
    await grid.recover()
    # Workspaces kept for inspection live as long as their run's record (logs, exit) does.
    await workspaces.prune(keep=store.run_ids())
    control = await ensure_control_queue(runtime.transport, settings.queues, settings.worker_id)
    launches = runtime.consumer(
        QueueName.LAUNCHES,
        Handlers().on(LaunchAgent, grid.on_launch),
        settings.launch_consumer.model_copy(update={"max_in_flight": settings.slots}),
    )
    controls = Consumer(
        runtime.transport,
        queue_url=control.url,
        dead_letter_url=control.dead_letter_url,
        handlers=Handlers().on(CancelRun, grid.on_cancel),
        settings=settings.control_consumer,
        queue_label="control",
        registry=runtime.registry,
    )

    async def consuming() -> bool:
        return launches.running and controls.running

    app = FastAPI(title="agent-grid execution-grid", description="Runs agent CLIs; its runs, their logs.")
    app.include_router(runtime.ops_router({"consumer": consuming}))
    app.include_router(
        build_runs_router(grid, store, token=settings.api_token, slots=settings.slots, runner=runner.name)
    )
    http_stop = asyncio.Event()
    _log.info("grid_ready", worker_id=settings.worker_id, slots=settings.slots, runner=runner.name)

    async with asyncio.TaskGroup() as group:
        heartbeats = group.create_task(grid.heartbeat_forever())
        receiving = group.create_task(launches.run())
        group.create_task(controls.run())
        group.create_task(serve_http(app, host=settings.http.host, port=settings.http.port, stop=http_stop))
        await stop.wait()
        launches.stop()
        await receiving
        await grid.shutdown()  # cancels still reach runs while they wind down
        controls.stop()
        http_stop.set()
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats
