"""`agent-grid run-local` (what `make run` starts): the broker and the three services as processes, healthy,
handling a nudge end to end, and stopping cleanly on Ctrl-C."""

import subprocess
from pathlib import Path

import httpx
import pytest

from .local_grid_harness import ALICE, CLI, healthy, running_local_grid

pytestmark = [pytest.mark.connected, pytest.mark.slow]


def test_run_local_starts_a_working_grid_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    with running_local_grid(tmp_path, "--no-demo") as grid:
        grid.wait_for(lambda: all(healthy(port) for port in grid.ports.values()), 60, "three healthy services")
        nudged = subprocess.run(
            [CLI, "nudge", "octo/widgets#7"], cwd=tmp_path, env=grid.env, capture_output=True, text=True, check=False
        )
        assert nudged.returncode == 0, nudged.stderr
        grid.wait_for(lambda: "nudge_dropped" in grid.log(), 20, "the coordinator to consume it")

        # The whole loop through the GitHub stand-in: alice opens an opted-in issue, its signed webhook
        # becomes a nudge, the coordinator launches a run, the grid runs the agent (the demo stand-in for
        # Claude Code, acting through the agent tools) in a clone of the demo repository, and the run's end
        # is told on the issue.
        opened = httpx.post(
            f"{grid.github}/repos/demo/widgets/issues",
            headers=ALICE,
            json={"title": "Hello grid", "labels": ["agent-grid"]},
            timeout=5,
        )
        assert opened.status_code == 201, opened.text
        number = opened.json()["number"]
        grid.wait_for(lambda: "run_launched" in grid.log(), 30, "a launch")

        def status_says_it_succeeded() -> bool:
            comments = httpx.get(
                f"{grid.github}/repos/demo/widgets/issues/{number}/comments", headers=ALICE, timeout=5
            ).json()
            return any("ended: **success**" in comment["body"] for comment in comments)

        grid.wait_for(status_says_it_succeeded, 30, "the status comment of the finished run")
        assert "agent_exited" in grid.log()
        assert "alice opened" not in grid.log(), "--no-demo opens no demo issues"
        assert grid.stop() == 0

    output = grid.log()
    assert "grid: stopped" in output
    # nudges, lifecycle, launches and the grid's control queue: each drained
    assert output.count("consumer_stopped") == 4, output
    assert not any(healthy(port) for port in grid.ports.values())
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{grid.broker_port}/_localstack/health", timeout=1)
