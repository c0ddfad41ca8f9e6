"""``agent-grid run-local``: the whole grid as plain processes on the embedded broker (what ``make run`` starts)."""

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO

from agent_grid_runtime.public_broker import EmbeddedBroker

_STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class LocalService:
    name: str
    module: str
    env_prefix: str
    port: int


SERVICES = (
    LocalService("issue-tracker", "issue_tracker", "ISSUE_TRACKER_", 8001),
    LocalService("coordinator", "coordinator", "COORDINATOR_", 8002),
    LocalService("execution-grid", "execution_grid", "EXECUTION_GRID_", 8003),
)


def service_environment(service: LocalService, endpoint_url: str, base: dict[str, str]) -> dict[str, str]:
    prefix = service.env_prefix
    return {
        **base,
        f"{prefix}AWS__ENDPOINT_URL": endpoint_url,
        f"{prefix}AWS__REGION": base.get(f"{prefix}AWS__REGION", "us-east-1"),
        f"{prefix}HTTP__PORT": base.get(f"{prefix}HTTP__PORT", str(service.port)),
        f"{prefix}LOG__FORMAT": base.get(f"{prefix}LOG__FORMAT", "console"),
        "PYTHONUNBUFFERED": "1",
    }


def run_local_grid(broker: EmbeddedBroker, *, keep_broker: bool = False) -> int:
    """Start the broker and the three services; stream their output; stop everything on SIGINT/SIGTERM."""
    print(f"broker: starting LocalStack SQS on {broker.endpoint_url} (log: {broker.log_path})", flush=True)
    broker.start()
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    selector = selectors.DefaultSelector()
    exit_code = 0
    try:
        for service in SERVICES:
            process = subprocess.Popen(
                [sys.executable, "-m", service.module],
                env=service_environment(service, broker.endpoint_url, dict(os.environ)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches only this runner, which then stops each service
                # once, with SIGTERM. A second signal would make the grid worker force its exit.
                start_new_session=True,
            )
            processes[service.name] = process
            assert process.stdout is not None
            selector.register(process.stdout, selectors.EVENT_READ, service.name)
            print(f"{service.name}: started (pid {process.pid}) on http://127.0.0.1:{service.port}", flush=True)
        print("grid: running; Ctrl-C stops it", flush=True)
        while not stopping:
            _pump(selector, timeout=0.5)
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name}: exited with {process.returncode}; stopping the grid", flush=True)
                    exit_code = 1
                    stopping = True
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
            _pump(selector, timeout=0.2)
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        _pump(selector, timeout=0)
        if not keep_broker:
            broker.stop()
        print("grid: stopped", flush=True)
    return exit_code


def _pump(selector: selectors.BaseSelector, *, timeout: float) -> None:
    for key, _ in selector.select(timeout):
        stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
        line = stream.readline()
        if not line:
            selector.unregister(stream)
            continue
        print(f"{key.data:>14} | {line.decode(errors='replace').rstrip()}", flush=True)
