"""`agent-grid run-local` (what `make run` starts): the broker and the three services as processes, healthy,
handling a nudge end to end, and stopping cleanly on Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from agent_grid_runtime.public_broker import find_free_port

pytestmark = [pytest.mark.connected, pytest.mark.slow]

REPO_ROOT = Path(__file__).parents[4]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_run_local_starts_a_working_grid_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    broker_port = find_free_port()
    ports = {"ISSUE_TRACKER_": find_free_port(), "COORDINATOR_": find_free_port(), "EXECUTION_GRID_": find_free_port()}
    github_port = find_free_port()
    env = {
        **os.environ,
        "AGENT_GRID_BROKER_PORT": str(broker_port),
        "AGENT_GRID_GITHUB_PORT": str(github_port),
        "AGENT_GRID_AWS__ENDPOINT_URL": f"http://127.0.0.1:{broker_port}",
        **{f"{prefix}HTTP__PORT": str(port) for prefix, port in ports.items()},
    }
    cli = str(Path(sys.executable).parent / "agent-grid")
    log_path = tmp_path / "grid.log"
    with log_path.open("wb") as log:
        grid = subprocess.Popen([cli, "run-local"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: all(healthy(port) for port in ports.values()), 60, "three healthy services", log_path)
            nudged = subprocess.run(
                [cli, "nudge", "octo/widgets#7"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
            )
            assert nudged.returncode == 0, nudged.stderr
            wait_for(lambda: b"nudge_dropped" in log_path.read_bytes(), 20, "the coordinator to consume it", log_path)

            # The whole loop through the GitHub stand-in: alice opens an opted-in issue, its signed webhook
            # becomes a nudge, the coordinator launches a run, the grid runs the agent (the scripted stand-in
            # for Claude Code) in a clone of the demo repository, and the run's end is told on the issue.
            github = f"http://127.0.0.1:{github_port}"
            opened = httpx.post(
                f"{github}/repos/demo/widgets/issues",
                headers={"Authorization": "token local-dev-alice-token"},
                json={"title": "Hello grid", "labels": ["agent-grid"]},
                timeout=5,
            )
            assert opened.status_code == 201, opened.text
            number = opened.json()["number"]
            wait_for(lambda: b"run_launched" in log_path.read_bytes(), 30, "a launch", log_path)

            def status_says_it_succeeded() -> bool:
                comments = httpx.get(
                    f"{github}/repos/demo/widgets/issues/{number}/comments",
                    headers={"Authorization": "token local-dev-alice-token"},
                    timeout=5,
                ).json()
                return any("ended: **success**" in comment["body"] for comment in comments)

            wait_for(status_says_it_succeeded, 30, "the status comment of the finished run", log_path)
            assert b"agent_exited" in log_path.read_bytes()

            grid.send_signal(signal.SIGINT)
            assert grid.wait(timeout=60) == 0
        finally:
            if grid.poll() is None:
                grid.kill()
                grid.wait()
    output = log_path.read_text()
    assert "grid: stopped" in output
    # nudges, lifecycle, launches and the grid's control queue: each drained
    assert output.count("consumer_stopped") == 4, output
    assert not any(healthy(port) for port in ports.values())
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{broker_port}/_localstack/health", timeout=1)
