"""A real grid worker on the real broker, running the scripted agent: every way a run can end."""

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted, ExitReason
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_queues import QueueUrls
from agent_grid_runtime.public_settings import HttpSettings
from agent_grid_runtime.public_transport import OutgoingMessage, QueueTransport
from execution_grid.settings import AgentKindSettings, SandboxSettings, Settings, WorkspaceSettings
from execution_grid.workspaces.public_workspaces import WorkspaceError, WorkspaceManager
from pydantic import SecretStr

from .grid_harness import (
    LifecycleWatcher,
    process_alive,
    records,
    running_grid,
    script_launch,
    send_cancel,
    send_launch,
    wait_for,
)

pytestmark = pytest.mark.connected

MakeSettings = Callable[..., Settings]


async def test_a_successful_run_starts_beats_and_exits_once_with_its_usage_and_log(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    usage = {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.12, "turns": 3}
    launch = script_launch(
        {"sleep_s": 1.5, "progress_every_s": 0.3, "usage": usage, "summary": "fixed it", "record_to": str(record)}
    )
    port = find_free_port()
    settings = make_settings(http=HttpSettings(port=port), api_token=SecretStr("grid-token"))
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            headers = {"authorization": "Bearer grid-token"}
            log = await client.get(f"/runs/{launch.run_id}/log", headers=headers)
            run = await client.get(f"/runs/{launch.run_id}", headers=headers)
            refused = await client.get(f"/runs/{launch.run_id}/log")
        # The same launch again (a redelivery): no second process, no second exit.
        await send_launch(sqs, grid_queues, launch)
        await asyncio.sleep(2.0)
        await lifecycle.poll()

    kinds = lifecycle.kinds(launch.run_id)
    assert kinds[0] == "AgentStarted"
    assert "AgentHeartbeat" in kinds
    assert kinds.count("AgentExited") == 1
    assert exited.reason is ExitReason.SUCCESS
    assert exited.exit_code == 0
    assert exited.usage.cost_usd == pytest.approx(0.12)
    assert exited.usage.total_tokens == 1500
    assert "fixed it" in exited.summary
    beats = [event for event in lifecycle.of(launch.run_id) if isinstance(event, AgentHeartbeat)]
    assert [beat.sequence for beat in beats] == sorted(beat.sequence for beat in beats)
    assert [entry["event"] for entry in records(record)].count("start") == 1
    assert log.status_code == 200
    assert "progress: step" in log.text
    assert run.json()["state"] == "exited"
    assert refused.status_code == 401


async def test_a_failing_agent_is_reported_failed_with_its_exit_code(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    launch = script_launch({"sleep_s": 0.2, "exit_code": 3, "summary": "tests fail"})
    async with running_grid(make_settings()):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.FAILED
    assert exited.exit_code == 3


async def test_the_wall_clock_ends_a_run_that_would_go_on(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    launch = script_launch({"sleep_s": 60}, wall_clock_s=2, wind_down_s=0, stall_s=60)
    async with running_grid(make_settings()):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.TIMED_OUT
    assert 2.0 <= exited.duration_s < 8.0


async def test_a_silent_agent_is_stalled_and_one_that_ignores_sigterm_is_killed(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launch = script_launch({"hang": True, "ignore_sigterm": True, "record_to": str(record)}, stall_s=1)
    async with running_grid(make_settings()):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.STALLED
    assert exited.exit_code == -9, "SIGTERM was ignored, so the grid had to SIGKILL"
    assert not process_alive(records(record)[0]["pid"])


async def test_a_cancel_winds_the_agent_down_then_stops_it_and_kills_its_children(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launch = script_launch({"sleep_s": 60, "spawn_child": True, "record_to": str(record)})
    settings = make_settings(workspace=WorkspaceSettings(clone_base_url=None, keep="always"))
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        await lifecycle.until(lambda: any(isinstance(e, AgentStarted) for e in lifecycle.of(launch.run_id)))
        await wait_for(lambda: any(entry["event"] == "child" for entry in records(record)))
        await send_cancel(sqs, settings, launch.run_id, grace_s=5)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.CANCELLED
    assert exited.duration_s < 5, "the agent handed off at once instead of waiting out the grace period"
    entries = records(record)
    child = next(entry["pid"] for entry in entries if entry["event"] == "child")
    assert not process_alive(child), "the agent's child went with the process group"
    workspace = Path(entries[0]["cwd"])
    assert (workspace / "HANDOFF.md").exists(), "the wind-down asked the agent to hand off"


async def test_a_run_near_its_wall_clock_is_asked_to_hand_off_and_may_finish_cleanly(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launch = script_launch({"sleep_s": 60, "record_to": str(record)}, wall_clock_s=6, wind_down_s=3)
    settings = make_settings(workspace=WorkspaceSettings(clone_base_url=None, keep="always"))
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
    assert "handed off" in exited.summary
    assert exited.duration_s < 10
    assert (Path(records(record)[0]["cwd"]) / "HANDOFF.md").exists()


async def test_a_run_over_its_cost_budget_is_stopped(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    launch = script_launch(
        {"sleep_s": 20, "progress_every_s": 0.2, "usage": {"cost_usd": 10.0, "output_tokens": 1000}}, max_cost_usd=1.0
    )
    async with running_grid(make_settings()):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.BUDGET_EXHAUSTED
    assert 1.0 < exited.usage.cost_usd < 10.0
    assert exited.duration_s < 10


async def test_the_agent_sees_only_what_its_run_needs(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launch = script_launch({"sleep_s": 0.1, "record_to": str(record)})
    worker_environ = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "AWS_SECRET_ACCESS_KEY": "grid-aws-secret",
        "AWS_ACCESS_KEY_ID": "grid-aws-key",
        "ISSUE_TRACKER_WEBHOOK_SECRET": "webhook-secret",
        "COORDINATOR_API__TOKEN": "coordinator-token",
        "EXECUTION_GRID_API_TOKEN": "grid-api-token",
        "HTTPS_PROXY": "http://proxy.internal:3128",
    }
    settings = make_settings(tracker_token=SecretStr("scoped-run-token"), passthrough_env=["HTTPS_PROXY"])
    async with running_grid(settings, environ=worker_environ):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
    seen = set(records(record)[0]["env"])
    assert {"PATH", "HOME", "HTTPS_PROXY", "GH_TOKEN", "AGENT_GRID_RUN_ID", "AGENT_GRID_WIND_DOWN_FILE"} <= seen
    leaked = seen & {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "ISSUE_TRACKER_WEBHOOK_SECRET"}
    assert not leaked
    assert not seen & {"COORDINATOR_API__TOKEN", "EXECUTION_GRID_API_TOKEN"}


async def test_launches_that_cannot_start_end_as_launch_failed(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    unknown_kind = script_launch({}).model_copy(update={"agent_kind": "no_such_agent"})
    missing = script_launch({})
    settings = make_settings()
    settings.agents["generic"] = settings.agents["generic"].model_copy(update={"executable": "/nonexistent/agent"})
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, unknown_kind)
        await send_launch(sqs, grid_queues, missing)
        first = await lifecycle.exited(unknown_kind.run_id)
        second = await lifecycle.exited(missing.run_id)

    assert first.reason is ExitReason.LAUNCH_FAILED
    assert "no_such_agent" in first.summary
    assert second.reason is ExitReason.LAUNCH_FAILED
    assert "/nonexistent/agent" in second.summary


async def test_poison_launches_are_dead_lettered_and_the_queue_keeps_moving(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    traversal = script_launch({}).model_copy(update={"run_id": "../../etc"})
    good = script_launch({"sleep_s": 0.1})
    async with running_grid(make_settings()):
        await sqs.send_batch(grid_queues.launches.url, [OutgoingMessage(entry_id="0", body="{not json")])
        await send_launch(sqs, grid_queues, traversal)
        await send_launch(sqs, grid_queues, good)
        exited = await lifecycle.exited(good.run_id)
        async with asyncio.timeout(15):
            while (await sqs.depth(grid_queues.launches.dead_letter_url)).visible < 2:
                await asyncio.sleep(0.1)

    assert exited.reason is ExitReason.SUCCESS


async def test_a_worker_never_runs_more_agents_than_its_slots(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    launches = [script_launch({"sleep_s": 1.0}) for _ in range(5)]
    port = find_free_port()
    settings = make_settings(slots=2, http=HttpSettings(port=port), api_token=SecretStr("t"))
    peak = 0
    async with running_grid(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for launch in launches:
            await send_launch(sqs, grid_queues, launch)
        async with asyncio.timeout(40):
            while len([e for e in lifecycle.events if isinstance(e, AgentExited)]) < 5:
                try:
                    running = (await client.get("/runs", headers={"authorization": "Bearer t"})).json()["running"]
                    peak = max(peak, len(running))
                except httpx.ConnectError:
                    pass
                await lifecycle.poll()

    assert peak == 2
    assert all(lifecycle.exits(launch.run_id)[0].reason is ExitReason.SUCCESS for launch in launches)


async def test_a_stopping_worker_winds_its_agents_down_and_reports_them_lost(
    sqs: QueueTransport, grid_queues: QueueUrls, lifecycle: LifecycleWatcher, make_settings: MakeSettings
) -> None:
    launch = script_launch({"sleep_s": 60})
    settings = make_settings()
    settings.supervision.shutdown_grace_s = 5
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        await lifecycle.until(lambda: bool(lifecycle.of(launch.run_id)))
    exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.LOST
    assert exited.duration_s < 5, "the agent handed off when asked instead of being killed at the grace's end"


async def test_a_run_works_in_a_fresh_worktree_of_its_repository_on_its_own_branch(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    _seed_upstream(tmp_path / "upstream" / "demo" / "widgets.git", tmp_path / "seed")
    record = tmp_path / "record.jsonl"
    launch = script_launch({"sleep_s": 0.1, "record_to": str(record)})
    settings = make_settings(workspace=WorkspaceSettings(clone_base_url=str(tmp_path / "upstream"), keep="always"))
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
    workspace = Path(records(record)[0]["cwd"])
    assert (workspace / "README.md").read_text() == "widgets\n"
    assert workspace.is_relative_to(settings.state_dir.resolve())


@pytest.mark.skipif(shutil.which("bwrap") is None and not os.environ.get("CI"), reason="bubblewrap is not installed")
async def test_the_bubblewrap_runner_runs_agents_in_their_own_pid_namespace_and_stops_them_whole(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(sandbox=SandboxSettings(runner="bubblewrap"))
    launch = script_launch({})
    record = settings.state_dir.resolve() / "runs" / launch.run_id / "agent" / "record.jsonl"
    launch = launch.model_copy(
        update={"prompt_inputs": {"script": json.dumps({"sleep_s": 60, "spawn_child": True, "record_to": str(record)})}}
    )
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        await lifecycle.until(lambda: "AgentStarted" in lifecycle.kinds(launch.run_id))
        await wait_for(lambda: any(entry["event"] == "child" for entry in records(record)))
        await send_cancel(sqs, settings, launch.run_id, grace_s=0)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.CANCELLED
    entries = records(record)
    assert entries[0]["pid"] < 10, "inside its own PID namespace the agent is one of the first processes"
    sandbox_pids = {entry["pid"] for entry in entries if entry["event"] == "child"}
    assert all(pid < 10 for pid in sandbox_pids)


@pytest.mark.skipif(shutil.which("bwrap") is None and not os.environ.get("CI"), reason="bubblewrap is not installed")
async def test_the_bubblewrap_runner_hides_the_workers_secrets_but_not_its_interpreter(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "aws-credentials").write_text("aws_secret_access_key = hunter2\n")
    token_file = tmp_path / "token.txt"
    token_file.write_text("ghp_do-not-leak\n")
    settings = make_settings(sandbox=SandboxSettings(runner="bubblewrap", hidden_paths=(secrets, token_file)))
    launch = script_launch({})
    seen = settings.state_dir.resolve() / "runs" / launch.run_id / "agent" / "seen.txt"
    result = json.dumps({"type": "agent_grid.result", "success": True, "summary": "looked around"})
    # A shell agent, and the interpreter of the scripted agent (it may live under the worker's home, as
    # pyenv's does): both must still run.
    script = (
        f"cat {secrets}/aws-credentials {token_file} > {seen} 2>&1; echo listing: $(ls -A {secrets}) >> {seen}; "
        f"{shutil.which('python3') or 'python3'} -c 'print(1)' >> {seen}; echo '{result}'"
    )
    settings.agents["generic"] = AgentKindSettings(executable="/bin/sh", extra_args=["-c", script])
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
    text = seen.read_text()
    assert "hunter2" not in text
    assert "ghp_do-not-leak" not in text
    assert "\nlisting:\n" in text, "the hidden directory is empty inside the sandbox"
    assert text.rstrip().endswith("1"), text


def _seed_upstream(upstream: Path, seed: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(upstream)], check=True)
    subprocess.run(["git", "clone", "-q", str(upstream), str(seed)], check=True, capture_output=True)
    (seed / "README.md").write_text("widgets\n")
    subprocess.run([*git, "-C", str(seed), "add", "."], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "-qm", "first"], check=True)
    subprocess.run([*git, "-C", str(seed), "push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)


async def test_an_agent_that_leaves_a_background_process_holding_its_output_still_ends_when_it_exits(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "background.pid"
    result = json.dumps({"type": "agent_grid.result", "success": True, "summary": "left a daemon"})
    script = f"sleep 300 & echo $! > {pid_file}; echo '{result}'"
    settings = make_settings()
    settings.agents["generic"] = AgentKindSettings(executable="/bin/sh", extra_args=["-c", script])
    launch = script_launch({})
    async with running_grid(settings):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
    assert exited.duration_s < 5, "the exit was seen at once, not when the background process let go"
    assert not process_alive(int(pid_file.read_text())), "the leftover in the run's group was killed"


async def test_a_failure_while_finishing_a_run_still_reports_its_exit(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_release(*_args: object, **_kwargs: object) -> None:
        raise WorkspaceError("git worktree remove timed out")

    monkeypatch.setattr(WorkspaceManager, "release", broken_release)
    launch = script_launch({"sleep_s": 0.1, "summary": "fine"})
    async with running_grid(make_settings()):
        await send_launch(sqs, grid_queues, launch)
        exited = await lifecycle.exited(launch.run_id)

    assert exited.reason is ExitReason.SUCCESS
