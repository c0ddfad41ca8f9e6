"""The operator's commands against real services on 127.0.0.1: `agent-grid run-local --no-demo` (every service a
process), driven by alice's issues on the GitHub stand-in; and against nothing at all, for the errors."""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_grid_cli.main import app
from agent_grid_runtime.public_broker import find_free_port
from typer.testing import CliRunner, Result

from .local_grid_harness import ALICE, API, CLI, LocalGrid, healthy, running_local_grid

pytestmark = pytest.mark.connected

# The runaway agent would spend its way to the run's budget in seconds: here it runs until it is killed.
UNBOUNDED = {
    f"COORDINATOR_POLICY__CAPS__{cap}": "100000000"
    for cap in (
        "MAX_TOKENS_PER_RUN",
        "MAX_TOKENS_PER_TREE",
        "MAX_COST_USD_PER_RUN",
        "MAX_COST_USD_PER_TREE",
        "MAX_COST_USD_PER_REPO_PER_DAY",
    )
}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGrid]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in UNBOUNDED.items():
            patch.setenv(name, value)
        with running_local_grid(tmp_path_factory.mktemp("grid"), "--no-demo") as running:
            running.wait_for(lambda: all(healthy(port) for port in running.ports.values()), 90, "healthy services")
            yield running
            running.stop()


@pytest.fixture
def cli_env(grid: LocalGrid, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout
    return {
        "AGENT_GRID_SERVICES__ISSUE_TRACKER": f"http://127.0.0.1:{grid.ports['ISSUE_TRACKER_']}",
        "AGENT_GRID_SERVICES__COORDINATOR": grid.coordinator,
        "AGENT_GRID_SERVICES__EXECUTION_GRID": json.dumps([f"http://127.0.0.1:{grid.ports['EXECUTION_GRID_']}"]),
    }


def agent_grid(env: dict[str, str], *arguments: str) -> Result:
    return CliRunner().invoke(app, list(arguments), env=env)


def open_issue(grid: LocalGrid, title: str, body: str = "") -> int:
    opened = httpx.post(
        f"{grid.github}/repos/demo/widgets/issues",
        headers=ALICE,
        json={"title": title, "body": body, "labels": ["agent-grid"]},
        timeout=5,
    )
    assert opened.status_code == 201, opened.text
    number: int = opened.json()["number"]
    return number


def run_of(grid: LocalGrid, number: int, *, states: tuple[str, ...], timeout_s: float = 60) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def there() -> bool:
        found[:] = httpx.get(
            f"{grid.coordinator}/api/runs", params={"issue": f"demo/widgets#{number}"}, headers=API, timeout=5
        ).json()
        return bool(found) and found[0]["state"] in states

    grid.wait_for(there, timeout_s, f"a run of demo/widgets#{number} in {states}")
    return found[0]


def test_status_shows_every_service_healthy_the_queues_and_the_active_runs(cli_env: dict[str, str]) -> None:
    shown = agent_grid(cli_env, "status")
    as_json = agent_grid(cli_env, "status", "--json")

    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    for service in ("issue-tracker", "coordinator", "execution-grid"):
        assert any(line.startswith(service) and line.endswith(" ok") for line in lines), shown.output
    assert any(line.split()[:1] == ["nudges-dlq"] for line in lines), shown.output
    assert "active runs:" in shown.output
    document = json.loads(as_json.output)
    assert as_json.exit_code == 0
    assert [found["state"] for found in document["services"]] == ["ok", "ok", "ok"]
    assert set(document["queues"]) >= {"nudges", "nudges-dlq", "launches", "lifecycle-dlq"}
    assert document["paused"] is False


def test_runs_are_listed_filtered_and_their_logs_read_through_the_coordinator(
    grid: LocalGrid, cli_env: dict[str, str]
) -> None:
    number = open_issue(grid, "Write a note")
    run = run_of(grid, number, states=("exited",))
    run_id = run["run_id"]
    whole = httpx.get(f"{grid.coordinator}/api/runs/{run_id}/log", headers=API, timeout=10).text

    table = agent_grid(cli_env, "runs")
    by_issue = agent_grid(cli_env, "runs", "--issue", f"demo/widgets#{number}", "--json")
    running_only = agent_grid(cli_env, "runs", "--issue", f"demo/widgets#{number}", "--state", "running")
    log = agent_grid(cli_env, "logs", run_id)
    tail = agent_grid(cli_env, "logs", run_id, "--tail-bytes", "64")
    followed = agent_grid(cli_env, "logs", run_id, "--follow")  # the run is over: the whole log, then done

    assert table.exit_code == 0, table.output
    assert any(line.startswith(run_id) and f"demo/widgets#{number}" in line for line in table.output.splitlines())
    assert [found["run_id"] for found in json.loads(by_issue.output)] == [run_id]
    assert (running_only.exit_code, running_only.output) == (0, "no runs\n")
    assert whole, "the agent printed something"
    assert (log.exit_code, log.output) == (0, whole)
    assert (tail.exit_code, tail.output.encode()) == (0, whole.encode()[-64:])
    assert (followed.exit_code, followed.output) == (0, whole)


def test_logs_follow_a_running_agent_until_kill_stops_its_tree(grid: LocalGrid, cli_env: dict[str, str]) -> None:
    number = open_issue(grid, "Never stops", "demo-agent: runaway")
    run_id = run_of(grid, number, states=("launching", "running"))["run_id"]  # --follow waits for the start
    follower = subprocess.Popen(
        [CLI, "logs", run_id, "--follow", "--interval-s", "0.2"],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def printing() -> bool:
            log = httpx.get(f"{grid.coordinator}/api/runs/{run_id}/log", headers=API, timeout=10)
            return log.status_code == 200 and log.text != ""

        grid.wait_for(printing, 30, "the agent's first output")
        killed = agent_grid(cli_env, "kill", f"demo/widgets#{number}")
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    tree = httpx.get(f"{grid.coordinator}/api/trees/demo/widgets/{number}", headers=API, timeout=5).json()
    final = httpx.get(f"{grid.coordinator}/api/runs/{run_id}/log", headers=API, timeout=10).text
    revived = agent_grid(cli_env, "revive", f"demo/widgets#{number}")
    after = httpx.get(f"{grid.coordinator}/api/trees/demo/widgets/{number}", headers=API, timeout=5).json()

    assert killed.exit_code == 0, killed.output
    assert killed.output == f"killed the tree of demo/widgets#{number}: 1 run(s) told to stop\n"
    assert follower.returncode == 0, err.decode()
    assert out.decode() == final, "everything the agent printed, once, in order, and the follower stopped at its end"
    assert run_of(grid, number, states=("exited",))["exit_reason"] == "cancelled"
    assert tree["killed"] is True
    assert (revived.exit_code, revived.output) == (0, f"revived the tree of demo/widgets#{number}\n")
    assert after["killed"] is False


def test_a_wrong_token_is_refused_with_exit_code_4(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "AGENT_GRID_API_TOKEN": "not-the-token"}

    listed = agent_grid(env, "runs")
    status = agent_grid(env, "status")

    assert listed.exit_code == 4
    assert "refused the token" in listed.output
    assert "AGENT_GRID_API_TOKEN" in listed.output
    assert status.exit_code == 4


def test_an_unknown_run_or_a_malformed_issue_is_exit_code_1(cli_env: dict[str, str]) -> None:
    missing = agent_grid(cli_env, "logs", "run-nobody")
    malformed = agent_grid(cli_env, "kill", "demo/widgets")

    assert missing.exit_code == 1
    assert "no run run-nobody" in missing.output
    assert malformed.exit_code == 1
    assert "expected OWNER/REPO#NUMBER" in malformed.output


def test_a_service_that_is_down_is_exit_code_3(grid: LocalGrid, cli_env: dict[str, str]) -> None:
    nowhere = f"http://127.0.0.1:{find_free_port()}"
    grid_down = {**cli_env, "AGENT_GRID_SERVICES__EXECUTION_GRID": json.dumps([nowhere])}
    all_down = {
        "AGENT_GRID_SERVICES__ISSUE_TRACKER": nowhere,
        "AGENT_GRID_SERVICES__COORDINATOR": nowhere,
        "AGENT_GRID_SERVICES__EXECUTION_GRID": json.dumps([nowhere]),
        "AGENT_GRID_HTTP_TIMEOUT_S": "2",
    }

    one = agent_grid(grid_down, "status")
    started = time.monotonic()
    every = agent_grid(all_down, "status")
    runs = agent_grid(all_down, "runs")
    logs = agent_grid(all_down, "logs", "run-1")

    assert one.exit_code == 3
    assert f"execution-grid at {nowhere}: unreachable" in one.output
    assert any(line.startswith("coordinator") and line.endswith(" ok") for line in one.output.splitlines())
    assert every.exit_code == 3
    assert f"the coordinator at {nowhere} is unreachable" in every.output
    assert time.monotonic() - started < 10, "a refused connection is not waited for"
    assert (runs.exit_code, logs.exit_code) == (3, 3)
    assert f"the coordinator at {nowhere} is unreachable" in runs.output
