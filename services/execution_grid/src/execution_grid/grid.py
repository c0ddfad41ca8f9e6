"""The grid worker's core: launches become supervised agent processes, processes become lifecycle events.

One :class:`Grid` per worker process. A launch is claimed on disk (one process per run id, across
redeliveries and restarts), given a workspace, started through the runner, and acknowledged only once
``AgentStarted`` is on the broker; its consumer slot stays taken until the agent exits. Each run then has a
supervisor task that applies the pure rules of :mod:`execution_grid.supervision.public_supervision`, and
ends with exactly one ``AgentExited``, written to disk before it is published. Whatever fails along the
way (a full disk, a git error, a bug), the run still ends with an exit and its process group is killed:
an agent never runs unsupervised.
"""

import asyncio
import contextlib
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
from agent_grid_runtime.public_sqs import DropMessage, MessageContext, Publisher, PublishError, RetryLater

from execution_grid.agents.public_agents import AgentAdapter, OutputReader
from execution_grid.agents.public_registry import UnknownAgentKind, adapter_for
from execution_grid.launching import RunFiles, clone_url, prepare_command, process_spec, wall_clock_s
from execution_grid.procfs import kill_group_members
from execution_grid.run_log import RunLog
from execution_grid.run_store import RunRecord, RunStore, safe_run_id
from execution_grid.runner.public_runner import AgentProcess, Runner
from execution_grid.settings import Settings
from execution_grid.supervision.public_supervision import Action, Watch, exit_reason, next_step
from execution_grid.workspaces.public_workspaces import Workspace, WorkspaceError, WorkspaceManager

_log = structlog.get_logger(__name__)

PRODUCER = "execution-grid"
_MAX_LINE = 1024 * 1024
_MAX_SUMMARY = 4000
# A process that left our process group (setsid) can hold the output pipe open after the agent exited;
# the run ends anyway after this long.
_OUTPUT_DRAIN_S = 5.0
# A launch seen again while its first copy is still being prepared here comes back after this long.
_PREPARING_RETRY_S = 30
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
    files: RunFiles
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
    log_failed: bool = False
    task: "asyncio.Task[None] | None" = None
    announcing: "asyncio.Task[None] | None" = None


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
        on_exit: Callable[[AgentExited], None] = lambda _exited: None,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._workspaces = workspaces
        self._store = store
        self._events = events
        self._environ = environ
        self._log_url = log_url
        self._on_exit = on_exit
        self.active: dict[str, ActiveRun] = {}
        self._preparing: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def worker_id(self) -> str:
        return self._settings.worker_id

    # -- launches -------------------------------------------------------------------------------------------

    async def on_launch(self, envelope: Envelope[LaunchAgent], context: MessageContext) -> None:
        """Start the launch's agent unless this run id was seen here before; return once AgentStarted is out."""
        launch = envelope.body
        if not safe_run_id(launch.run_id):
            # The coordinator must still learn that this run will never start; then the message is poison.
            await self._launch_failed(launch, "the run id is not a safe directory name", record=False)
            raise DropMessage(f"run id {launch.run_id!r} is not a safe directory name")
        with structlog.contextvars.bound_contextvars(run_id=launch.run_id, issue=launch.issue.key):
            directory = self._store.claim(launch)
            if directory is None:
                self._on_duplicate(launch, context)
                return
            release_slot = context.hold_slot()
            self._preparing.add(launch.run_id)
            try:
                run = await self._start(launch, directory, release_slot)
            except BaseException:
                release_slot()
                raise
            finally:
                self._preparing.discard(launch.run_id)
            if run is None:
                release_slot()
                return
            await self._until_announced(run)

    def _on_duplicate(self, launch: LaunchAgent, context: MessageContext) -> None:
        if launch.run_id in self._preparing:
            # A copy of a launch whose first copy is still cloning: acknowledging it would lose the launch if
            # this worker then died before the start; it comes back later instead.
            raise RetryLater(_PREPARING_RETRY_S, "the first copy of this launch is still being prepared")
        _log.info("launch_duplicate", receive_count=context.receive_count, reason="run id already claimed")

    async def _until_announced(self, run: ActiveRun) -> None:
        # Acknowledge only once the coordinator can know the run started (or it already ended).
        assert run.task is not None
        announced = asyncio.create_task(run.started_sent.wait())
        try:
            await asyncio.wait({announced, run.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            announced.cancel()

    async def _start(self, launch: LaunchAgent, directory: Path, release_slot: Callable[[], None]) -> ActiveRun | None:
        try:
            adapter = adapter_for(launch.agent_kind)
        except UnknownAgentKind as error:
            await self._launch_failed(launch, f"unknown agent kind: {error}")
            return None
        workspace = await self._prepare_workspace(launch)
        if workspace is None:
            return None
        files = RunFiles(self._store.agent_directory(launch.run_id))
        log: RunLog | None = None
        try:
            log = RunLog(directory, max_bytes=self._settings.supervision.log_max_bytes)
            command, token = prepare_command(launch, self._settings, adapter, workspace, files)
            spec = process_spec(
                launch, self._settings, adapter, command, workspace, files, token=token, inherited=self._environ
            )
            process = await self._runner.start(spec)
        except Exception as error:  # RunnerUnavailable, an adapter's ValueError, a full disk: no process
            if log is not None:
                log.close()
            await self._release_workspace(workspace, keep=False)
            await self._launch_failed(launch, f"{type(error).__name__}: {error}")
            return None
        return self._supervise_new(launch, files, process, adapter, log, workspace, release_slot)

    async def _prepare_workspace(self, launch: LaunchAgent) -> Workspace | None:
        try:
            return await self._workspaces.prepare(
                launch.run_id,
                clone_url=clone_url(launch, self._settings),
                ref=launch.workspace.ref,
                branch=launch.workspace.branch,
                token=_secret(self._settings.workspace.token),
            )
        except WorkspaceError as error:
            await self._launch_failed(launch, f"workspace: {error}")
        except Exception as error:  # a git timeout in cleanup, a disk error: still a launch that cannot start
            _log.exception("workspace_failed")
            await self._launch_failed(launch, f"workspace: {type(error).__name__}: {error}")
        return None

    def _supervise_new(
        self,
        launch: LaunchAgent,
        files: RunFiles,
        process: AgentProcess,
        adapter: AgentAdapter,
        log: RunLog,
        workspace: Workspace,
        release_slot: Callable[[], None],
    ) -> ActiveRun:
        # From here on the process exists: nothing may keep it from being supervised, so the record on disk
        # (for a restart's recovery) is best effort rather than a reason to abandon the run.
        try:
            self._store.record_process(launch.run_id, process.pid, worker_id=self.worker_id)
        except OSError:
            _log.exception("process_record_failed")
        limits = launch.limits.model_copy(update={"wall_clock_s": wall_clock_s(launch, self._settings)})
        run = ActiveRun(
            launch=launch,
            files=files,
            process=process,
            adapter=adapter,
            reader=adapter.reader(),
            log=log,
            workspace=workspace,
            watch=Watch(
                started_at=time.monotonic(), limits=limits, term_grace_s=self._settings.supervision.term_grace_s
            ),
            started_at=datetime.now(UTC),
            release_slot=release_slot,
        )
        self.active[launch.run_id] = run
        run.task = asyncio.create_task(self._supervise(run), name=f"run-{launch.run_id}")
        run.announcing = self._in_background(self._announce_start(run), name=f"started-{launch.run_id}")
        _log.info("agent_started", pid=process.pid, agent_kind=launch.agent_kind, runner=self._runner.name)
        return run

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

    async def _launch_failed(self, launch: LaunchAgent, why: str, *, record: bool = True) -> None:
        _log.warning("launch_failed", reason=why)
        exited = AgentExited(
            run_id=launch.run_id,
            issue=launch.issue,
            worker_id=self.worker_id,
            reason=ExitReason.LAUNCH_FAILED,
            summary=why[:_MAX_SUMMARY],
        )
        await self._report_exit(exited, record=record)

    # -- supervision ----------------------------------------------------------------------------------------

    async def _supervise(self, run: ActiveRun) -> None:
        reading = asyncio.create_task(self._read_output(run))
        exiting = asyncio.create_task(run.process.wait())
        exit_code: int | None = None
        try:
            await self._watch_until_exit(run, exiting)
            exit_code = exiting.result()
            await self._drain(reading)
        except Exception:
            _log.exception("supervision_failed", run_id=run.launch.run_id)
            run.process.signal_group(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                exit_code = await asyncio.wait_for(asyncio.shield(exiting), _OUTPUT_DRAIN_S)
        finally:
            reading.cancel()
            exiting.cancel()
            run.process.close()
            run.log.close()
            try:
                await self._finish(run, exit_code)
            finally:
                self.active.pop(run.launch.run_id, None)
                run.release_slot()

    async def _watch_until_exit(self, run: ActiveRun, exiting: "asyncio.Task[int]") -> None:
        while not exiting.done():
            step = next_step(run.watch, time.monotonic())
            try:
                self._act(run, step.action)
            except Exception:
                # The rules asked for something the worker could not do (write the wind-down file, signal):
                # end the run the one way that cannot fail.
                _log.exception("supervision_step_failed", run_id=run.launch.run_id, action=step.action.value)
                run.process.signal_group(signal.SIGKILL)
            run.changed.clear()
            timeout = None if step.wake_at is None else max(0.0, step.wake_at - time.monotonic())
            changed = asyncio.create_task(run.changed.wait())
            try:
                await asyncio.wait({exiting, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()

    @staticmethod
    async def _drain(reading: "asyncio.Task[None]") -> None:
        try:
            await asyncio.wait_for(asyncio.shield(reading), _OUTPUT_DRAIN_S)
        except TimeoutError:
            _log.warning("output_left_open", reason="a process outside the run's group holds its output")

    def _act(self, run: ActiveRun, action: Action) -> None:
        if action is Action.NOTHING:
            return
        reason = run.watch.stop_reason.value if run.watch.stop_reason else None
        _log.info("supervision_step", run_id=run.launch.run_id, action=action.value, reason=reason)
        if action is Action.WIND_DOWN:
            run.files.wind_down.write_text(f"wind down: {reason or 'wall clock'}\n")
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
            self._log_output(run, chunk)
            run.watch.last_output_at = time.monotonic()
            run.last_output_at = datetime.now(UTC)
            if b"\n" not in chunk and len(pending) + len(chunk) <= _MAX_LINE:
                pending += chunk
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > _MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                run.reader.feed(line[:_MAX_LINE].decode("utf-8", errors="replace").rstrip("\r"))
            # Usage is read only after complete lines: a reader may total many steps to answer.
            if run.reader.reported_end is not None:
                run.watch.agent_reported_end = True
            usage = run.reader.usage
            if usage != reported:
                reported = run.watch.usage = usage
                run.changed.set()  # the supervisor re-checks the budget now, not at its next deadline
        if pending:
            run.reader.feed(pending[:_MAX_LINE].decode("utf-8", errors="replace"))
            run.watch.usage = run.reader.usage

    @staticmethod
    def _log_output(run: ActiveRun, chunk: bytes) -> None:
        if run.log_failed:
            return
        try:
            run.log.write(chunk)
        except OSError:
            # A full disk loses the log, not the run: supervision reads the output all the same.
            run.log_failed = True
            _log.exception("run_log_failed", run_id=run.launch.run_id)

    async def _finish(self, run: ActiveRun, exit_code: int | None) -> None:
        workspace_present = run.workspace.path.is_dir()
        reason = exit_reason(
            run.watch.stop_reason,
            exit_code if exit_code is not None else -1,
            run.reader.reported_end,
            workspace_present=workspace_present,
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
        await self._report_exit(exited)
        if workspace_present:
            keep = self._settings.workspace.keep
            success = reason is ExitReason.SUCCESS
            await self._release_workspace(
                run.workspace, keep=keep == "always" or (keep == "on_failure" and not success)
            )

    async def _release_workspace(self, workspace: Workspace, *, keep: bool) -> None:
        try:
            await self._workspaces.release(workspace, keep=keep)
        except Exception:  # a workspace left behind is housekeeping's to remove, never a reason to lose an exit
            _log.exception("workspace_release_failed", run_id=workspace.run_id)

    async def _report_exit(self, exited: AgentExited, *, record: bool = True, republish: bool = False) -> None:
        """Write the exit down, then publish it; if the broker is away, keep trying in the background.

        ``republish``: an exit a previous incarnation decided and wrote down but did not get out (counted then).
        """
        if not republish:
            self._on_exit(exited)
        recorded = False
        if record:
            try:
                self._store.record_exit(exited)
                recorded = True
            except OSError:
                _log.exception("exit_record_failed", run_id=exited.run_id)
        try:
            await self._events.publish(wrap(exited, producer=PRODUCER))
        except PublishError as error:
            _log.warning("exit_publish_deferred", run_id=exited.run_id, error=str(error))
            self._in_background(self._publish_exit_eventually(exited, recorded=recorded), name="exit-retry")
            return
        if recorded:
            self._mark_exit_sent(exited.run_id)

    async def _publish_exit_eventually(self, exited: AgentExited, *, recorded: bool) -> None:
        if await self._publish_until_sent(wrap(exited, producer=PRODUCER)) and recorded:
            self._mark_exit_sent(exited.run_id)

    def _mark_exit_sent(self, run_id: str) -> None:
        try:
            self._store.mark_exit_sent(run_id)
        except OSError:  # the next start republishes it; the coordinator takes the first exit only
            _log.exception("exit_mark_failed", run_id=run_id)

    async def _publish_until_sent(self, envelope: Envelope[Any], *, stop: "asyncio.Task[None] | None" = None) -> bool:
        backoff = Backoff(initial_s=0.5, max_s=30.0)
        while stop is None or not stop.done():
            try:
                await self._events.publish(envelope)
            except PublishError as error:
                delay = backoff.next_delay()
                _log.warning("publish_retrying", kind=envelope.kind, error=str(error), retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
                continue
            return True
        return False

    def _in_background(self, coroutine: Any, *, name: str) -> "asyncio.Task[None]":
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: "asyncio.Task[None]") -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())

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
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)

    # -- heartbeats and housekeeping ------------------------------------------------------------------------

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

    async def housekeeping_forever(self) -> None:
        """Remove old run records and leftover workspaces every interval until cancelled."""
        while True:
            await asyncio.sleep(self._settings.supervision.housekeeping_interval_s)
            try:
                await self.housekeeping()
            except Exception:  # a failed sweep waits for the next one
                _log.exception("housekeeping_failed")

    async def housekeeping(self) -> None:
        """Forget runs older than the retention, and remove workspaces no run record or live run still needs."""
        # rmtree of whole run directories (homes, caches): off the event loop that supervises the agents.
        keep_s = self._settings.supervision.keep_run_records_s
        forgotten = await asyncio.to_thread(self._store.forget_finished, older_than_s=keep_s)
        removed = await self._workspaces.prune(keep=self._store.run_ids() | set(self.active) | self._preparing)
        if forgotten or removed:
            _log.info("housekeeping", runs_forgotten=forgotten, workspaces_removed=len(removed))

    # -- restart --------------------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Settle what a previous incarnation of this worker left: kill its agents, publish their exits.

        Returns how many runs were settled. Runs that never started are forgotten, so that their launch,
        still unacknowledged on the broker, starts them when it comes back.
        """
        settled = 0
        for record in self._store.unfinished():
            if record.exit is not None:
                await self._report_exit(record.exit, republish=True)
            elif record.process is None or record.launch is None:
                self._store.release_claim(record.run_id)
            else:
                await self._settle_orphan(record)
            settled += 1
        if settled:
            _log.info("runs_recovered", settled=settled)
        return settled

    async def _settle_orphan(self, record: RunRecord) -> None:
        assert record.process is not None
        assert record.launch is not None
        # The parent-death signal took the leader; what it started may live on in its process group.
        killed = kill_group_members(record.process.pid, started_since=record.process.start_ticks)
        await self._report_exit(
            AgentExited(
                run_id=record.run_id,
                issue=record.launch.issue,
                # In the name of the worker that held the run: the coordinator counts only the holder's word.
                worker_id=record.process.worker_id or self.worker_id,
                reason=ExitReason.LOST,
                summary=(
                    "the grid worker restarted while the run was in flight; its agent was stopped"
                    + (f" ({killed} leftover process(es) killed)" if killed else "")
                ),
            )
        )


def _summary(reason: ExitReason, run: ActiveRun) -> str:
    said = run.reader.summary.strip()
    stop = _STOP_TEXT.get(reason) if reason is not ExitReason.SUCCESS else None
    if run.watch.wound_down_at is not None and reason in {ExitReason.SUCCESS, ExitReason.FAILED}:
        stop = "wound down before the wall-clock limit and handed off"
    text = f"{stop}. {said}" if stop and said else stop or said
    return text[:_MAX_SUMMARY]


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None
