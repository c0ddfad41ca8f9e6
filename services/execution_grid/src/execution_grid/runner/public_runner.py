"""Runners start an agent's process and own its process group. Local subprocesses today, MicroVMs later.

A runner is the isolation boundary: the worker hands it a :class:`ProcessSpec` and gets back an
:class:`AgentProcess` it can read, signal and wait for. The worker never touches a pid itself.
"""

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

__all__ = [
    "AgentProcess",
    "BubblewrapRunner",
    "LocalProcessRunner",
    "ProcessSpec",
    "ResourceLimits",
    "Runner",
    "RunnerUnavailable",
]

_log = structlog.get_logger(__name__)
_CHUNK = 64 * 1024


class RunnerUnavailable(Exception):
    """The process could not be started (missing executable, sandbox refused); the message says why."""


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """rlimits applied to the agent process and inherited by its children. None: not limited."""

    address_space_bytes: int | None = None
    max_processes: int | None = None
    """RLIMIT_NPROC counts every process of the user, not of the run: size it for all runs of the worker."""
    max_open_files: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One agent process: ``argv`` in ``cwd`` with exactly ``env``; ``stdin`` is written then closed."""

    argv: Sequence[str]
    cwd: Path
    env: dict[str, str]
    stdin: bytes | None = None
    limits: ResourceLimits = ResourceLimits()
    writable: Sequence[Path] = field(default_factory=tuple)
    """Directories the agent may write (its workspace, its run directory); sandboxing runners enforce it."""


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol, plus an event set the moment the leader is reaped.

    ``Process.wait()`` returns only once every pipe is closed too, so a background process that inherited
    the agent's stdout would hide the agent's exit for as long as it lives; this event does not wait.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class AgentProcess:
    """A started agent: its output as chunks, signals to its whole process group, and its exit code."""

    # Under a sandbox the leader is the sandbox itself: a signal meant for the agent would kill the sandbox.
    signals_reach_agent = True

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        protocol: _ExitAwareProtocol,
        stdin: bytes | None,
        *,
        signals_reach_agent: bool = True,
    ) -> None:
        self._process = process
        self._protocol = protocol
        self.signals_reach_agent = signals_reach_agent
        self.pid = process.pid
        # start_new_session made the child a session and group leader: its pgid is its pid, and every
        # descendant that does not leave the group is reached by one killpg.
        self.pgid = process.pid
        self._stdin_task = asyncio.create_task(self._feed(stdin)) if process.stdin is not None else None

    async def _feed(self, data: bytes | None) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            if data:
                stdin.write(data)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent exited or closed its stdin without reading it all: its choice
        finally:
            stdin.close()

    async def output(self) -> AsyncIterator[bytes]:
        """Raw output chunks (stdout and stderr merged) until the agent closes them."""
        stdout = self._process.stdout
        assert stdout is not None
        while chunk := await stdout.read(_CHUNK):
            yield chunk

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the process group; False when the group is already gone."""
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            # Only possible if the pgid was recycled by another user's process: not ours to signal.
            _log.warning("signal_refused", pgid=self.pgid, signal=signal.Signals(signum).name)
            return False
        return True

    def signal_leader(self, signum: int) -> bool:
        """Send ``signum`` to the agent process only (wind-down signals go to the agent, not its tools)."""
        if self._process.returncode is not None or not self.signals_reach_agent:
            return False
        try:
            self._process.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal), as soon as the leader is reaped.

        Survivors of its group are killed then: a finished run never leaves an orphan behind, and whatever
        held its output open lets go. The group cannot have been recycled: its members keep it.
        """
        await self._protocol.exited.wait()
        self.signal_group(signal.SIGKILL)
        if self._stdin_task is not None:
            await self._stdin_task
        code = self._process.returncode
        assert code is not None  # set before process_exited is called
        return code

    def close(self) -> None:
        """Release the pipes (the transport); call once the output is drained or abandoned."""
        transport = self._process._transport  # type: ignore[attr-defined] # asyncio keeps it private
        transport.close()


class Runner(Protocol):
    """Starts agent processes in some isolation."""

    @property
    def name(self) -> str:
        """For logs and the API."""
        ...

    async def start(self, spec: ProcessSpec) -> AgentProcess:
        """Start the process.

        Raises:
            RunnerUnavailable: it could not be started.
        """
        ...


class LocalProcessRunner:
    """A plain subprocess in its own session, with rlimits, that dies with the worker.

    The environment is exactly the spec's, but the process runs as the worker's user: it could read the
    worker's ``/proc/<pid>/environ``. Where that matters, use :class:`BubblewrapRunner` (own PID namespace)
    or, later, a MicroVM.
    """

    name = "subprocess"

    def __init__(self) -> None:
        self._prlimit = shutil.which("prlimit")
        self._setpriv = shutil.which("setpriv")

    def wrapper(self, limits: ResourceLimits) -> list[str]:
        """The exec chain in front of the agent's argv: rlimits, then the parent-death signal.

        Both are util-linux tools that set their attribute and exec, so the agent keeps the pid we started;
        doing it in a ``preexec_fn`` instead would fork the threaded worker with the GIL held.
        """
        chain: list[str] = []
        flags = _prlimit_flags(limits)
        if flags and self._prlimit:
            chain += [self._prlimit, *flags, "--"]
        if self._setpriv:
            # If the worker dies (even SIGKILL), the kernel kills the agent: no run outlives its supervisor.
            chain += [self._setpriv, "--pdeathsig", "KILL", "--"]
        return chain

    async def start(self, spec: ProcessSpec) -> AgentProcess:
        """See Runner."""
        return await _spawn([*self.wrapper(spec.limits), *spec.argv], spec)


class BubblewrapRunner(LocalProcessRunner):
    """The local runner inside bubblewrap: own PID and IPC namespaces, a read-only root, writable run dirs.

    The agent sees no other process (so no other process's environment), cannot write outside its workspace
    and run directory, gets a private ``/tmp``, and the whole sandbox dies with the worker. The network stays
    shared: agents need their model API.
    """

    name = "bubblewrap"

    def __init__(self, bwrap: str = "bwrap", *, hide: Sequence[Path] = (), keep_readable: Sequence[Path] = ()) -> None:
        """A runner that hides ``hide`` (trees and files the agent sees empty) from its agents.

        ``keep_readable``: what must stay readable under the private ``/tmp`` (the worker's own installation,
        when it lives there); never a hidden path.
        """
        super().__init__()
        found = shutil.which(bwrap)
        if found is None:
            raise RunnerUnavailable(f"bubblewrap ({bwrap!r}) is not installed: apt-get install bubblewrap")
        self._bwrap = found
        self._hide = tuple(hide)
        tmp = Path("/tmp")
        self._keep = tuple(
            path
            for path in _outermost(keep_readable)
            if path.is_relative_to(tmp) and path.is_dir() and not any(path.is_relative_to(h) for h in self._hide)
        )

    def sandbox(self, spec: ProcessSpec) -> list[str]:
        """The bwrap argv prefix for ``spec``."""
        argv = [
            self._bwrap,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",  # a private tmpfs inside the sandbox, not the host's
        ]
        # ... except the worker's own installation if it lives under /tmp (a checkout there): the agent's tools
        # and interpreter run from it.
        for kept in self._keep:
            argv += ["--ro-bind", str(kept), str(kept)]
        # An empty tmpfs over each hidden tree (the worker's state: other runs' logs, workspaces and caches;
        # credential stores), an empty file over each hidden file, parents first; the run's own directories
        # are bound back on top below.
        for hidden in sorted(self._hide, key=lambda path: len(path.parts)):
            if hidden.is_dir():
                argv += ["--tmpfs", str(hidden)]
            elif hidden.exists():
                argv += ["--ro-bind", "/dev/null", str(hidden)]
        for path in spec.writable:
            argv += ["--bind", str(path), str(path)]
        return [*argv, "--chdir", str(spec.cwd), "--"]

    async def start(self, spec: ProcessSpec) -> AgentProcess:
        """See Runner."""
        # rlimits outside (inherited through bwrap's exec), sandbox inside. bwrap dies of the signals it does
        # not forward, taking the sandbox with it: wind-down goes through the file alone.
        argv = [*self.wrapper(spec.limits), *self.sandbox(spec), *spec.argv]
        return await _spawn(argv, spec, signals_reach_agent=False)


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The paths, resolved, without those inside another of them."""
    resolved = sorted({path.resolve() for path in paths}, key=lambda path: len(path.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


def _prlimit_flags(limits: ResourceLimits) -> list[str]:
    flags = []
    if limits.address_space_bytes is not None:
        flags.append(f"--as={limits.address_space_bytes}")
    if limits.max_processes is not None:
        flags.append(f"--nproc={limits.max_processes}")
    if limits.max_open_files is not None:
        flags.append(f"--nofile={limits.max_open_files}")
    return flags


async def _spawn(argv: Sequence[str], spec: ProcessSpec, *, signals_reach_agent: bool = True) -> AgentProcess:
    # The wrappers exec the agent, so a missing executable would surface as exit code 127 of a started run;
    # checking first turns it into a clear launch failure.
    if shutil.which(spec.argv[0], path=spec.env.get("PATH", os.defpath)) is None:
        raise RunnerUnavailable(f"agent executable {spec.argv[0]!r} not found on the run's PATH")
    loop = asyncio.get_running_loop()
    try:
        # What asyncio.create_subprocess_exec does, with a protocol that reports the exit without waiting
        # for the pipes.
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitAwareProtocol(limit=_CHUNK, loop=loop),
            *argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=asyncio.subprocess.PIPE if spec.stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        raise RunnerUnavailable(f"cannot start {spec.argv[0]!r}: {error.strerror or error}") from error
    process = asyncio.subprocess.Process(transport, protocol, loop)
    return AgentProcess(process, protocol, spec.stdin, signals_reach_agent=signals_reach_agent)
