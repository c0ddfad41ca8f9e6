"""Composition root of the execution-grid worker: launches in, supervised agents, lifecycle events out.

Start-up settles what a previous incarnation left (its agents are killed, their exits published) before
the first launch is received. Stop ends receiving first, then winds the running agents down (each reports
``lost`` so the coordinator re-decides its issue), then stops the control queue and the HTTP API.
"""

import asyncio
import contextlib
import ctypes
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import ExitReason
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_metrics import register_callback_gauge
from agent_grid_runtime.public_queues import QueueName, ensure_control_queue
from agent_grid_runtime.public_service import ServiceRuntime, StartupAborted, open_service_runtime
from agent_grid_runtime.public_sqs import Consumer, Handlers
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from execution_grid.api import build_runs_router
from execution_grid.grid import Grid
from execution_grid.run_store import RunStore
from execution_grid.runner.public_runner import BubblewrapRunner, LocalProcessRunner, Runner
from execution_grid.settings import Settings
from execution_grid.workspaces.public_workspaces import WorkspaceManager

SERVICE = "execution-grid"
_PR_SET_DUMPABLE = 4
_log = structlog.get_logger(__name__)


# Where the worker's user keeps credentials an agent has no business reading. Not the whole home: the
# interpreter or the agent CLI often lives there (pyenv, nvm, ~/.local/bin).
_HOME_SECRETS = (
    ".aws",
    ".ssh",
    ".gnupg",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".config/gh",
    ".config/gcloud",
    ".terraformrc",
)
# The platform's own credentials for this worker: Kubernetes' service-account (and IRSA) tokens, Docker and
# systemd secrets. An agent holding them could act as the worker (receive launches, forge lifecycle events).
_SYSTEM_SECRETS = (Path("/var/run/secrets"), Path("/run/secrets"), Path("/run/credentials"))


def build_runner(settings: Settings) -> Runner:
    """The runner the settings ask for.

    Under bubblewrap the worker's state directory (other runs' logs, workspaces and caches), the credential
    stores in its home, the platform's secrets (``/var/run/secrets``…) and ``sandbox.hidden_paths`` are empty
    to the agent; its own workspace and files are bound back on top.
    """
    if settings.sandbox.runner == "bubblewrap":
        home = Path.home()
        secrets = [home / name for name in _HOME_SECRETS if (home / name).exists()]
        secrets += [path for path in _SYSTEM_SECRETS if path.exists()]
        state_dir = settings.state_dir.resolve()
        return BubblewrapRunner(
            hide=(state_dir, *secrets, *settings.sandbox.hidden_paths),
            keep_readable=installation_paths(state_dir),
        )
    return LocalProcessRunner()


def installation_paths(state_dir: Path) -> list[Path]:
    """Where this worker's Python and its packages are, and the PATH: the agents' tools come from there.

    Editable installs (a uv workspace) put the sources themselves on ``sys.path``. Never the working directory
    (``python -m`` puts it first on ``sys.path``: a whole checkout, its ``.env`` and local state), ``/tmp``
    itself, or anything holding the state directory.
    """
    cwd = Path.cwd().resolve()
    entries = [sys.prefix, *sys.path[1:], *os.environ.get("PATH", "").split(os.pathsep)]
    paths = [Path(entry).resolve() for entry in entries if entry and os.path.isabs(entry)]
    return [
        path
        for path in paths
        if path != cwd and path != Path("/tmp") and not state_dir.is_relative_to(path) and path.is_dir()
    ]


def protect_worker_memory() -> None:
    """Make this process non-dumpable, so that its own agents cannot read its secrets.

    Same-user processes can then no longer read its ``/proc/<pid>/environ`` or its memory. Linux only.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        _log.warning("worker_memory_unprotected", errno=ctypes.get_errno())


@contextlib.contextmanager
def exclusive_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold a lock on the state directory: two workers sharing one would settle each other's live runs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another grid worker uses {state_dir}: give each worker its own state dir") from None
        yield


def _exit_counter(registry: CollectorRegistry) -> Counter:
    exits = Counter(
        "agent_grid_agent_exits_total", "Runs ended on this worker, by exit reason.", ["reason"], registry=registry
    )
    for reason in ExitReason:  # every reason from the start, so that a rate() sees the first one of each
        exits.labels(reason.value)
    return exits


def _report_slots(registry: CollectorRegistry, grid: Grid, launches: Consumer, slots: int) -> None:
    register_callback_gauge(
        registry,
        "agent_grid_agents_running",
        "Agent processes this worker supervises.",
        [],
        lambda: {(): len(grid.active)},
    )
    register_callback_gauge(
        registry,
        "agent_grid_launch_slots",
        "Agents this worker runs at once (EXECUTION_GRID_SLOTS).",
        [],
        lambda: {(): slots},
    )
    # A slot is taken from the launch's receipt (workspace, start) until its agent exits.
    register_callback_gauge(
        registry,
        "agent_grid_launch_slots_free",
        "Slots free for new launches on this worker.",
        [],
        lambda: {(): slots - launches.busy_slots},
    )


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    transport: QueueTransport | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    """Run launches and serve the API until ``stop`` is set, then drain and wind the agents down."""
    try:
        with exclusive_state_dir(settings.state_dir.resolve()):
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
    exits = _exit_counter(runtime.registry)
    grid = Grid(
        settings,
        runner=runner,
        workspaces=workspaces,
        store=store,
        events=runtime.publisher(QueueName.LIFECYCLE),
        environ=environ,
        log_url=lambda run_id: f"{public_url}/runs/{run_id}/log" if public_url else None,
        on_exit=lambda exited: exits.labels(exited.reason.value).inc(),
    )
    await grid.recover()
    # Workspaces kept for inspection live as long as their run's record (logs, exit) does.
    await grid.housekeeping()
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
    _report_slots(runtime.registry, grid, launches, settings.slots)
    app.include_router(runtime.ops_router({"consumer": consuming}, extra_queues={"control": control}))
    app.include_router(
        build_runs_router(grid, store, token=settings.api_token, slots=settings.slots, runner=runner.name)
    )
    http_stop = asyncio.Event()
    _log.info("grid_ready", worker_id=settings.worker_id, slots=settings.slots, runner=runner.name)

    async with asyncio.TaskGroup() as group:
        periodic = [group.create_task(grid.heartbeat_forever()), group.create_task(grid.housekeeping_forever())]
        receiving = group.create_task(launches.run())
        group.create_task(controls.run())
        group.create_task(serve_http(app, host=settings.http.host, port=settings.http.port, stop=http_stop))
        try:
            await stop.wait()
            launches.stop()
            await receiving
        finally:
            # Also when a sibling failed and the group is cancelling us: the agents must not be left running.
            await asyncio.shield(grid.shutdown())  # cancels still reach runs while they wind down
            controls.stop()
            http_stop.set()
            for task in periodic:
                task.cancel()
