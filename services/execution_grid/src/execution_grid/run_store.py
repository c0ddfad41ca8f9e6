"""Each run's directory on the worker's disk: the claim that makes a run id start once, and the exit outbox.

``runs/<run_id>/`` holds ``launch.json`` (written at claim), ``process.json`` (the pid, once started),
``exit.json`` (the exit event, written before it is published) and ``exit.sent`` (once the broker took it),
plus the capped log. Its ``agent/`` subdirectory is the only part a sandboxed agent may write: its home,
its temporary files, the prompt and the wind-down file. The records stay out of its reach, so an agent
cannot forge the exit the worker will report. After a restart the worker reads these to kill what its
previous incarnation left running and to publish exits it never got out.
"""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import AgentExited
from pydantic import ValidationError

_log = structlog.get_logger(__name__)
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
LAUNCH, PROCESS, EXIT, EXIT_SENT, AGENT = "launch.json", "process.json", "exit.json", "exit.sent", "agent"
_CORRUPT = ".corrupt"


def safe_run_id(run_id: str) -> bool:
    """A run id usable as a directory name (the contract allows any text; a path must not)."""
    return bool(_SAFE_RUN_ID.fullmatch(run_id))


class CorruptRecord(Exception):
    """A run's records cannot be read (a torn write, a disk error, tampering)."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process as the kernel knows it: the pid alone could have been recycled since."""

    pid: int
    start_ticks: int | None
    worker_id: str | None = None
    """The worker that started it: a recovered exit is reported in its name, the run's holder."""

    def alive(self) -> bool:
        """True if this very process (same pid, same start time) still exists."""
        return self.start_ticks is not None and _start_ticks(self.pid) == self.start_ticks


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the disk says of one run."""

    run_id: str
    directory: Path
    launch: LaunchAgent | None
    process: ProcessIdentity | None
    exit: AgentExited | None
    exit_sent: bool


class RunStore:
    """Run directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def directory(self, run_id: str) -> Path:
        """The run's directory (it may not exist)."""
        return self.root / run_id

    def claim(self, launch: LaunchAgent) -> Path | None:
        """Create the run's directory; None when it exists already (this run id was seen here before)."""
        directory = self.directory(launch.run_id)
        try:
            directory.mkdir()
        except FileExistsError:
            return None
        (directory / AGENT).mkdir()
        _write_atomic(directory / LAUNCH, launch.model_dump_json())
        return directory

    def agent_directory(self, run_id: str) -> Path:
        """The part of the run's directory its agent may write."""
        return self.directory(run_id) / AGENT

    def release_claim(self, run_id: str) -> None:
        """Forget a run that never started, so that its redelivered launch starts it."""
        shutil.rmtree(self.directory(run_id), ignore_errors=True)

    def record_process(self, run_id: str, pid: int, *, worker_id: str) -> None:
        """The run's process exists from now on."""
        payload = {"pid": pid, "start_ticks": _start_ticks(pid), "worker_id": worker_id}
        _write_atomic(self.directory(run_id) / PROCESS, json.dumps(payload))

    def record_exit(self, exited: AgentExited) -> None:
        """The run ended; written before publishing, so a crash in between republishes instead of forgetting."""
        _write_atomic(self.directory(exited.run_id) / EXIT, exited.model_dump_json())

    def mark_exit_sent(self, run_id: str) -> None:
        """The broker accepted the exit event."""
        (self.directory(run_id) / EXIT_SENT).touch()

    def load(self, run_id: str) -> RunRecord | None:
        """The record of one run, or None when there is none.

        Raises:
            CorruptRecord: its files exist but cannot be read, or contradict its directory.
        """
        directory = self.directory(run_id)
        if not safe_run_id(run_id) or not directory.is_dir():
            return None
        try:
            return self._read_record(run_id, directory)
        except (OSError, ValueError, KeyError, ValidationError) as error:
            raise CorruptRecord(f"run {run_id}: {type(error).__name__}: {error}") from error

    def _read_record(self, run_id: str, directory: Path) -> RunRecord:
        launch_text, process_text, exit_text = (_read(directory / name) for name in (LAUNCH, PROCESS, EXIT))
        process = None
        if process_text:
            raw = json.loads(process_text)
            process = ProcessIdentity(
                pid=int(raw["pid"]), start_ticks=raw.get("start_ticks"), worker_id=raw.get("worker_id")
            )
        launch = LaunchAgent.model_validate_json(launch_text) if launch_text else None
        exited = AgentExited.model_validate_json(exit_text) if exit_text else None
        if (launch and launch.run_id != run_id) or (exited and exited.run_id != run_id):
            raise ValueError("a record names another run than its directory")
        return RunRecord(
            run_id=run_id,
            directory=directory,
            launch=launch,
            process=process,
            exit=exited,
            exit_sent=(directory / EXIT_SENT).exists(),
        )

    def run_ids(self) -> set[str]:
        """Every run with a directory here."""
        return {entry.name for entry in self.root.iterdir() if entry.is_dir()}

    def unfinished(self) -> list[RunRecord]:
        """Runs whose exit was never published: left running, or ended while the broker was away.

        A record that cannot be read is set aside as ``<run_id>.corrupt`` (logged), so that one torn file
        does not stop the worker from starting.
        """
        records = []
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or directory.name.endswith(_CORRUPT) or (directory / EXIT_SENT).exists():
                continue
            try:
                record = self.load(directory.name)
            except CorruptRecord as error:
                _log.error("run_record_corrupt", run_id=directory.name, error=str(error))
                directory.rename(directory.with_name(directory.name + _CORRUPT))
                continue
            if record is not None:
                records.append(record)
        return records

    def forget_finished(self, *, older_than_s: float) -> int:
        """Delete directories of runs whose exit was published more than ``older_than_s`` ago."""
        cutoff = time.time() - older_than_s
        removed = 0
        for directory in self.root.iterdir():
            sent = directory / EXIT_SENT
            if sent.exists() and sent.stat().st_mtime < cutoff:
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
        return removed


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the command name, which may contain spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    # Write, flush to disk, then rename: after a crash the record is either the old one or the new one.
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
