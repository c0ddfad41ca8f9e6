"""The grid worker's core: launches become supervised agent processes, processes become lifecycle events.

One :class:`Grid` per worker process. A launch is claimed on disk (one process per run id, across
redeliveries and restarts), given a workspace, started through the runner, and acknowledged only once
``AgentStarted`` is on the broker; its consumer slot stays taken until the agent exits. Each run then has a
supervisor task that applies the pure rules of :mod:`execution_grid.supervision.public_supervision`, and
ends with exactly one ``AgentExited``, written to disk before it is published.
"""

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted, ExitReason
from agent_grid_runtime.public_backoff import Backoff
from agent_grid_runtime.public_sqs import DropMessage, MessageContext, Publisher, PublishError

from execution_grid.agents.public_agents import AgentAdapter, AgentRequest, OutputReader
from execution_grid.agents.public_registry import UnknownAgentKind, adapter_for
from execution_grid.environment import RunSecrets, agent_environment
from execution_grid.prompts import render_prompt
from execution_grid.run_log import RunLog
from execution_grid.run_store import RunRecord, RunStore, safe_run_id
from execution_grid.runner.public_runner import AgentProcess, ProcessSpec, ResourceLimits, Runner, RunnerUnavailable
from execution_grid.settings import Settings
from execution_grid.supervision.public_supervision import Action, Watch, exit_reason, next_step
from execution_grid.workspaces.public_workspaces import Workspace, WorkspaceError, WorkspaceManager, git_auth_env

_log = structlog.get_logger(__name__)

PRODUCER = "execution-grid"
_MAX_LINE = 1024 * 1024
_MAX_SUMMARY = 4000
# A process that left our process group (setsid) can hold the output pipe open after the agent exited;
# the run ends anyway after this long.
_OUTPUT_DRAIN_S = 5.0
_STOP_TEXT = {
    ExitReason.TIMED_OUT: "stopped at the wall-clock limit",
    ExitReason.STALLED: "stopped: no output within the stall limit",
    ExitReason.BUDGET_EXHAUSTED: "stopped: the run's cost or token budget was spent",
    ExitReason.CANCELLED: "cancelled",
    ExitReason.LOST: "stopped because the grid worker shut down",
    ExitReason.LOST_WORKSPACE: "the run's workspace disappeared",
}


@dataclass
class ActiveRun:
    """A run whose agent process this worker started and has not yet reported as exited."""

    launch: LaunchAgent
    directory: Path
    process: AgentProcess
    adapter: AgentAdapter
    reader: OutputReader
    log: RunLog
    workspace: Workspace
    watch: Watch
    started_at: datetime
    release_slot: Callable[[], None]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    started_sent: asyncio.Event = field(default_factory=asyncio.Event)
    last_output_at: datetime | None = None
    heartbeats: int = 0
    task: "asyncio.Task[None] | None" = None

    @property
    def wind_down_file(self) -> Path:
        return self.directory / "wind-down"


class Grid:
    """Runs launches on this worker. Its handlers are the launch and control consumers' handlers."""

    def __init__(
        self,
        settings: Settings,
        *,
        runner: Runner,
        workspaces: WorkspaceManager,
        store: RunStore,
        events: Publisher,
        environ: dict[str, str],
        log_url: Callable[[str], str | None] = lambda _run_id: None,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._workspaces = workspaces
        self._store = store
        self._events = events
        self._environ = environ
        self._log_url = log_url
        self.active: dict[str, ActiveRun] = {}
        self._exits_in_flight: set[asyncio.Task[None]] = set()

    @property
    def worker_id(self) -> str:
        return self._settings.worker_id

    # -- launches -------------------------------------------------------------------------------------------

    async def on_launch(self, envelope: Envelope[LaunchAgent], context: MessageContext) -> None:
        """Start the launch's agent unless this run id was seen here before; return once AgentStarted is out."""
        launch = envelope.body
        if not safe_run_id(launch.run_id):
            raise DropMessage(f"run id {launch.run_id!r} is not a safe directory name")
        with structlog.contextvars.bound_contextvars(run_id=launch.run_id, issue=launch.issue.key):
            directory = self._store.claim(launch)
            if directory is None:
                _log.info("launch_duplicate", receive_count=context.receive_count, reason="run id already claimed")
                return
            try:
                adapter = adapter_for(launch.agent_kind)
            except UnknownAgentKind as error:
                await self._launch_failed(launch, f"unknown agent kind: {error}")
                return
            release_slot = context.hold_slot()
            try:
                run = await self._start(launch, directory, adapter, release_slot)
            except BaseException:
                release_slot()
                raise
            if run is None:
                release_slot()
                return
            # Acknowledge only once the coordinator can know the run started (or it already ended).
            assert run.task is not None
            announced = asyncio.create_task(run.started_sent.wait())
            await asyncio.wait({announced, run.task}, return_when=asyncio.FIRST_COMPLETED)
            announced.cancel()

    async def _start(
        self, launch: LaunchAgent, directory: Path, adapter: AgentAdapter, release_slot: Callable[[], None]
    ) -> ActiveRun | None:
        try:
            workspace = await self._workspaces.prepare(
                launch.run_id,
                clone_url=self._clone_url(launch),
                ref=launch.workspace.ref,
                branch=launch.workspace.branch,
                token=_secret(self._settings.workspace.token),
            )
        except WorkspaceError as error:
            await self._launch_failed(launch, f"workspace: {error}")
            return None
        try:
            process, reader = await self._spawn(launch, directory, adapter, workspace)
        except (RunnerUnavailable, ValueError) as error:  # ValueError: the adapter cannot build the command
            await self._workspaces.release(workspace, keep=False)
            await self._launch_failed(launch, str(error))
            return None
        self._store.record_process(launch.run_id, process.pid)
        limits = launch.limits.model_copy(
            update={"wall_clock_s": min(launch.limits.wall_clock_s, self._settings.supervision.max_wall_clock_s)}
        )
        run = ActiveRun(
            launch=launch,
            directory=directory,
            process=process,
            adapter=adapter,
            reader=reader,
            log=RunLog(directory, max_bytes=self._settings.supervision.log_max_bytes),
            workspace=workspace,
            watch=Watch(
                started_at=time.monotonic(), limits=limits, term_grace_s=self._settings.supervision.term_grace_s
            ),
            started_at=datetime.now(UTC),
            release_slot=release_slot,
        )
        self.active[launch.run_id] = run
        run.task = asyncio.create_task(self._supervise(run), name=f"run-{launch.run_id}")
        asyncio.create_task(self._announce_start(run), name=f"started-{launch.run_id}")  # noqa: RUF006
        _log.info("agent_started", pid=process.pid, agent_kind=launch.agent_kind, runner=self._runner.name)
        return run

    async def _spawn(
        self, launch: LaunchAgent, directory: Path, adapter: AgentAdapter, workspace: Workspace
    ) -> tuple[AgentProcess, OutputReader]:
        kind = self._settings.agents.get(launch.agent_kind)
        wind_down_file = directory / "wind-down"
        prompt = render_prompt(launch, wind_down_file=str(wind_down_file), branch=workspace.branch)
        prompt_file = directory / "prompt.md"
        prompt_file.write_text(prompt)
        home = directory / "home"
        home.mkdir(exist_ok=True)
        command = adapter.command(
            AgentRequest(
                run_id=launch.run_id,
                mode=launch.mode,
                prompt=prompt,
                prompt_file=prompt_file,
                workspace=workspace.path,
                limits=launch.limits,
                executable=kind.executable if kind else None,
                model=kind.model if kind else None,
                extra_args=tuple(kind.extra_args) if kind else (),
            )
        )
        run_variables = {
            "HOME": str(home),
            "AGENT_GRID_RUN_ID": launch.run_id,
            "AGENT_GRID_ISSUE": str(launch.issue),
            "AGENT_GRID_MODE": launch.mode.value,
            "AGENT_GRID_WORKSPACE": str(workspace.path),
            "AGENT_GRID_PROMPT_FILE": str(prompt_file),
            "AGENT_GRID_WIND_DOWN_FILE": str(wind_down_file),
        }
        if self._settings.tools_url:
            run_variables["AGENT_GRID_TOOLS_URL"] = self._settings.tools_url
        if workspace.branch:
            run_variables["AGENT_GRID_BRANCH"] = workspace.branch
        clone_url, token = self._clone_url(launch), _secret(self._settings.tracker_token)
        if clone_url and token and clone_url.startswith(("https://", "http://")):
            # The agent pushes its branch with its own scoped token, passed the way git reads config from
            # the environment: never on a command line, never in a file of the workspace.
            run_variables.update(git_auth_env(clone_url, token))
        env = agent_environment(
            self._environ,
            passthrough=self._settings.passthrough_env,
            run_variables=run_variables,
            adapter_variables=command.env,
            secrets=RunSecrets(
                tracker_token=_secret(self._settings.tracker_token),
                api_key_env=(kind.api_key_env if kind else None) or adapter.api_key_env,
                api_key=_secret(kind.api_key) if kind else None,
            ),
        )
        sandbox = self._settings.sandbox
        process = await self._runner.start(
            ProcessSpec(
                argv=command.argv,
                cwd=workspace.path,
                env=env,
                stdin=command.stdin,
                limits=ResourceLimits(
                    address_space_bytes=sandbox.address_space_bytes,
                    max_processes=sandbox.max_processes,
                    max_open_files=sandbox.max_open_files,
                ),
                writable=(workspace.path, directory, *((workspace.cache,) if workspace.cache else ())),
            )
        )
        return process, adapter.reader()

    def _clone_url(self, launch: LaunchAgent) -> str | None:
        if launch.workspace.clone_url:
            return launch.workspace.clone_url
        base = self._settings.workspace.clone_base_url
        return f"{base.rstrip('/')}/{launch.issue.repo}.git" if base else None

    async def _announce_start(self, run: ActiveRun) -> None:
        started = AgentStarted(
            run_id=run.launch.run_id,
            issue=run.launch.issue,
            worker_id=self.worker_id,
            attempt=run.launch.attempt,
            pid=run.process.pid,
            started_at=run.started_at,
            log_url=self._log_url(run.launch.run_id),
        )
        if await self._publish_until_sent(wrap(started, producer=PRODUCER), stop=run.task):
            run.started_sent.set()

    async def _launch_failed(self, launch: LaunchAgent, why: str) -> None:
        _log.warning("launch_failed", reason=why)
        exited = AgentExited(
            run_id=launch.run_id,
            issue=launch.issue,
            worker_id=self.worker_id,
            reason=ExitReason.LAUNCH_FAILED,
            summary=why[:_MAX_SUMMARY],
        )
        await self._report_exit(exited)

    # -- supervision ----------------------------------------------------------------------------------------

    async def _supervise(self, run: ActiveRun) -> None:
        reading = asyncio.create_task(self._read_output(run))
        exiting = asyncio.create_task(run.process.wait())
        try:
            while not exiting.done():
                step = next_step(run.watch, time.monotonic())
                self._act(run, step.action)
                run.changed.clear()
                changed = asyncio.create_task(run.changed.wait())
                timeout = None if step.wake_at is None else max(0.0, step.wake_at - time.monotonic())
                await asyncio.wait({exiting, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
            exit_code = exiting.result()
            try:
                await asyncio.wait_for(reading, _OUTPUT_DRAIN_S)
            except TimeoutError:
                _log.warning("output_left_open", reason="a process outside the run's group holds its output")
            await self._finish(run, exit_code)
        finally:
            exiting.cancel()
            reading.cancel()
            run.log.close()
            self.active.pop(run.launch.run_id, None)
            run.release_slot()

    def _act(self, run: ActiveRun, action: Action) -> None:
        if action is Action.NOTHING:
            return
        _log.info("supervision_step", run_id=run.launch.run_id, action=action.value, reason=_value(run.watch))
        if action is Action.WIND_DOWN:
            run.wind_down_file.write_text(f"wind down: {_value(run.watch) or 'wall clock'}\n")
            if run.adapter.wind_down_signal is not None:
                run.process.signal_leader(run.adapter.wind_down_signal)
        elif action is Action.TERMINATE:
            run.process.signal_group(signal.SIGTERM)
        elif action is Action.KILL:
            run.process.signal_group(signal.SIGKILL)

    async def _read_output(self, run: ActiveRun) -> None:
        pending = b""
        reported = run.reader.usage
        async for chunk in run.process.output():
            run.log.write(chunk)
            now = time.monotonic()
            run.watch.last_output_at = now
            run.last_output_at = datetime.now(UTC)
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > _MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                run.reader.feed(line[:_MAX_LINE].decode("utf-8", errors="replace").rstrip("\r"))
            if run.reader.usage != reported:
                reported = run.watch.usage = run.reader.usage
                run.changed.set()  # the supervisor re-checks the budget now, not at its next deadline
        if pending:
            run.reader.feed(pending[:_MAX_LINE].decode("utf-8", errors="replace"))
            run.watch.usage = run.reader.usage

    async def _finish(self, run: ActiveRun, exit_code: int) -> None:
        workspace_present = run.workspace.path.is_dir()
        reason = exit_reason(
            run.watch.stop_reason, exit_code, run.reader.reported_end, workspace_present=workspace_present
        )
        exited = AgentExited(
            run_id=run.launch.run_id,
            issue=run.launch.issue,
            worker_id=self.worker_id,
            reason=reason,
            exit_code=exit_code,
            duration_s=round(time.monotonic() - run.watch.started_at, 3),
            usage=run.reader.usage,
            summary=_summary(reason, run),
        )
        _log.info(
            "agent_exited",
            run_id=exited.run_id,
            reason=reason.value,
            exit_code=exit_code,
            duration_s=exited.duration_s,
            cost_usd=exited.usage.cost_usd,
        )
        keep = self._settings.workspace.keep
        if workspace_present:
            await self._workspaces.release(
                run.workspace, keep=keep == "always" or (keep == "on_failure" and reason is not ExitReason.SUCCESS)
            )
        await self._report_exit(exited)

    async def _report_exit(self, exited: AgentExited) -> None:
        """Write the exit down, then publish it; if the broker is away, keep trying in the background."""
        self._store.record_exit(exited)
        try:
            await self._events.publish(wrap(exited, producer=PRODUCER))
        except PublishError as error:
            _log.warning("exit_publish_deferred", run_id=exited.run_id, error=str(error))
            task = asyncio.create_task(self._publish_exit_eventually(exited))
            self._exits_in_flight.add(task)
            task.add_done_callback(self._exits_in_flight.discard)
            return
        self._store.mark_exit_sent(exited.run_id)

    async def _publish_exit_eventually(self, exited: AgentExited) -> None:
        if await self._publish_until_sent(wrap(exited, producer=PRODUCER)):
            self._store.mark_exit_sent(exited.run_id)

    async def _publish_until_sent(self, envelope: Envelope[Any], *, stop: "asyncio.Task[None] | None" = None) -> bool:
        backoff = Backoff(initial_s=0.5, max_s=30.0)
        while True:
            try:
                await self._events.publish(envelope)
            except PublishError as error:
                if stop is not None and stop.done():
                    return False
                delay = backoff.next_delay()
                _log.warning("publish_retrying", kind=envelope.kind, error=str(error), retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
                continue
            return True

    # -- control --------------------------------------------------------------------------------------------

    async def on_cancel(self, envelope: Envelope[CancelRun], _context: MessageContext) -> None:
        """Stop a run this worker holds; a run it does not hold is already over (or never was) here."""
        command = envelope.body
        grace = command.grace_s if command.grace_s is not None else self._settings.supervision.cancel_grace_s
        if not self.cancel(command.run_id, grace_s=grace, why=command.reason):
            _log.info("cancel_ignored", run_id=command.run_id, reason="no such run in flight on this worker")

    def cancel(self, run_id: str, *, grace_s: float, why: str, reason: ExitReason = ExitReason.CANCELLED) -> bool:
        """Start stopping one run; False when this worker holds no such run."""
        run = self.active.get(run_id)
        if run is None:
            return False
        _log.info("run_cancel_requested", run_id=run_id, why=why, grace_s=grace_s, reason=reason.value)
        run.watch.request_cancel(time.monotonic(), grace_s, reason)
        run.changed.set()
        return True

    async def shutdown(self) -> None:
        """Wind every run down and wait for all of them to end (each reports ``lost``, to be re-decided)."""
        grace = self._settings.supervision.shutdown_grace_s
        for run_id in list(self.active):
            self.cancel(run_id, grace_s=grace, why="worker shutting down", reason=ExitReason.LOST)
        tasks = [run.task for run in self.active.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        if self._exits_in_flight:
            await asyncio.wait(set(self._exits_in_flight), timeout=10)

    # -- heartbeats -----------------------------------------------------------------------------------------

    async def send_heartbeats(self) -> int:
        """One heartbeat per started run, in as few broker calls as possible; returns how many."""
        now = time.monotonic()
        beats = []
        for run in self.active.values():
            if not run.started_sent.is_set():
                continue
            beats.append(
                wrap(
                    AgentHeartbeat(
                        run_id=run.launch.run_id,
                        issue=run.launch.issue,
                        worker_id=self.worker_id,
                        sequence=run.heartbeats,
                        elapsed_s=round(now - run.watch.started_at, 3),
                        last_output_at=run.last_output_at,
                        usage=run.reader.usage,
                    ),
                    producer=PRODUCER,
                )
            )
            run.heartbeats += 1
        if beats:
            try:
                await self._events.publish_many(beats)
            except PublishError as error:
                # Heartbeats are best effort: the coordinator tolerates gaps up to its lost-run timeout.
                _log.warning("heartbeats_not_sent", count=len(beats), error=str(error))
        return len(beats)

    async def heartbeat_forever(self) -> None:
        """Send heartbeats every interval until cancelled."""
        while True:
            await asyncio.sleep(self._settings.supervision.heartbeat_interval_s)
            await self.send_heartbeats()

    # -- restart --------------------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Settle what a previous incarnation of this worker left: kill its agents, publish their exits.

        Returns how many runs were settled. Runs that never started are forgotten, so that their launch,
        still unacknowledged on the broker, starts them when it comes back.
        """
        settled = 0
        for record in self._store.unfinished():
            if record.exit is not None:
                await self._report_exit(record.exit)
            elif record.process is None or record.launch is None:
                self._store.release_claim(record.run_id)
            else:
                await self._settle_orphan(record)
            settled += 1
        removed = self._store.forget_finished(older_than_s=self._settings.supervision.keep_run_records_s)
        if settled or removed:
            _log.info("runs_recovered", settled=settled, forgotten=removed)
        return settled

    async def _settle_orphan(self, record: RunRecord) -> None:
        assert record.process is not None
        assert record.launch is not None
        if record.process.alive():
            # setpriv's parent-death signal normally got there first; this covers a kernel without it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.process.pid, signal.SIGKILL)
        await self._report_exit(
            AgentExited(
                run_id=record.run_id,
                issue=record.launch.issue,
                worker_id=self.worker_id,
                reason=ExitReason.LOST,
                summary="the grid worker restarted while the run was in flight; its agent was stopped",
            )
        )


def _summary(reason: ExitReason, run: ActiveRun) -> str:
    said = run.reader.summary.strip()
    stop = _STOP_TEXT.get(reason) if reason is not ExitReason.SUCCESS else None
    if run.watch.wound_down_at is not None and reason in {ExitReason.SUCCESS, ExitReason.FAILED}:
        stop = "wound down before the wall-clock limit and handed off"
    text = f"{stop}. {said}" if stop and said else stop or said
    return text[:_MAX_SUMMARY]


def _value(watch: Watch) -> str | None:
    return watch.stop_reason.value if watch.stop_reason else None


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None
