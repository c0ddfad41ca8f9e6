"""Start `agent-grid run-local` as a process on free ports, and watch it (shared by the local grid's tests)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from agent_grid_runtime.public_broker import find_free_port

REPO_ROOT = Path(__file__).parents[4]
CLI = str(Path(sys.executable).parent / "agent-grid")
ALICE = {"Authorization": "token local-dev-alice-token"}
API = {"Authorization": "Bearer local-dev-api-token"}


@dataclass(frozen=True)
class LocalGrid:
    process: "subprocess.Popen[bytes]"
    log_path: Path
    env: dict[str, str]
    broker_port: int
    github_port: int
    ports: dict[str, int]  # by env prefix

    @property
    def github(self) -> str:
        return f"http://127.0.0.1:{self.github_port}"

    @property
    def coordinator(self) -> str:
        return f"http://127.0.0.1:{self.ports['COORDINATOR_']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-6000:]}")

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_local_grid(tmp_path: Path, *arguments: str) -> Iterator[LocalGrid]:
    """`agent-grid run-local ARGUMENTS` on free ports, its output in ``tmp_path / grid.log``; killed if left running."""
    broker_port, github_port = find_free_port(), find_free_port()
    ports = {"ISSUE_TRACKER_": find_free_port(), "COORDINATOR_": find_free_port(), "EXECUTION_GRID_": find_free_port()}
    env = {
        **os.environ,
        "AGENT_GRID_BROKER_PORT": str(broker_port),
        "AGENT_GRID_GITHUB_PORT": str(github_port),
        "AGENT_GRID_AWS__ENDPOINT_URL": f"http://127.0.0.1:{broker_port}",
        **{f"{prefix}HTTP__PORT": str(port) for prefix, port in ports.items()},
    }
    log_path = tmp_path / "grid.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CLI, "run-local", *arguments], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield LocalGrid(process, log_path, env, broker_port, github_port, ports)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
