"""Workers as a fleet: three share one launch queue, and a worker killed with SIGKILL loses and duplicates nothing."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_grid_contracts.public_lifecycle import AgentExited, AgentStarted, ExitReason
from agent_grid_runtime.public_queues import QueueUrls
from agent_grid_runtime.public_transport import QueueTransport
from execution_grid.settings import Settings

from .grid_harness import (
    LifecycleWatcher,
    process_alive,
    records,
    running_grid,
    script_launch,
    send_launch,
    wait_for,
)

pytestmark = pytest.mark.connected

MakeSettings = Callable[..., Settings]


async def test_three_workers_share_one_queue_and_each_run_starts_exactly_once(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launches = [script_launch({"sleep_s": 1.0, "record_to": str(record)}) for _ in range(9)]
    async with (
        running_grid(make_settings("w1", slots=2)),
        running_grid(make_settings("w2", slots=2)),
        running_grid(make_settings("w3", slots=2)),
    ):
        for launch in launches:
            await send_launch(sqs, grid_queues, launch)
        await lifecycle.until(lambda: all(lifecycle.exits(launch.run_id) for launch in launches), timeout_s=60)
        await asyncio.sleep(1.0)
        await lifecycle.poll()

    starts = [entry["run_id"] for entry in records(record) if entry["event"] == "start"]
    assert sorted(starts) == sorted(launch.run_id for launch in launches), "every run started once, none twice"
    workers = {event.worker_id for event in lifecycle.events if isinstance(event, AgentStarted)}
    assert len(workers) >= 2, f"the queue was shared, yet only {workers} took launches"
    for launch in launches:
        assert [exit_.reason for exit_ in lifecycle.exits(launch.run_id)] == [ExitReason.SUCCESS]


def _worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ["PATH"],
        "EXECUTION_GRID_WORKER_ID": settings.worker_id,
        "EXECUTION_GRID_STATE_DIR": str(settings.state_dir),
        "EXECUTION_GRID_SLOTS": "2",
        "EXECUTION_GRID_HTTP__PORT": "0",
        "EXECUTION_GRID_AWS__ENDPOINT_URL": str(settings.aws.endpoint_url),
        "EXECUTION_GRID_QUEUES__PREFIX": settings.queues.prefix,
        "EXECUTION_GRID_AGENTS__GENERIC__EXECUTABLE": str(settings.agents["generic"].executable),
        "EXECUTION_GRID_WORKSPACE": '{"clone_base_url": null}',
        "EXECUTION_GRID_SUPERVISION__HEARTBEAT_INTERVAL_S": "0.5",
        "EXECUTION_GRID_LAUNCH_CONSUMER__WAIT_TIME_S": "1",
        "EXECUTION_GRID_LOG__FORMAT": "json",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "execution_grid"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def test_a_worker_killed_mid_run_takes_its_agent_with_it_and_its_successor_reports_the_run_lost(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    launch = script_launch({"sleep_s": 120, "spawn_child": True, "record_to": str(record)})
    settings = make_settings("doomed")
    worker = _worker_process(settings)
    try:
        await send_launch(sqs, grid_queues, launch)
        await lifecycle.until(lambda: "AgentStarted" in lifecycle.kinds(launch.run_id), timeout_s=60)
        await wait_for(lambda: any(entry["event"] == "child" for entry in records(record)))
        agent = records(record)[0]["pid"]
        child = next(entry["pid"] for entry in records(record) if entry["event"] == "child")

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        await wait_for(lambda: not process_alive(agent), timeout_s=10)
        assert process_alive(child), "only the agent had the parent-death signal; its group is the successor's job"

        successor = _worker_process(settings)
        try:
            exited: AgentExited = await lifecycle.exited(launch.run_id, timeout_s=60)
            await wait_for(lambda: not process_alive(child), timeout_s=10)
            # The launch was acknowledged once the agent started: the successor must not start it again,
            # even when the same launch is delivered once more.
            await send_launch(sqs, grid_queues, launch)
            await asyncio.sleep(3.0)
            await lifecycle.poll()
        finally:
            successor.send_signal(signal.SIGTERM)
            successor.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()

    assert exited.reason is ExitReason.LOST
    assert [entry["event"] for entry in records(record)].count("start") == 1, "no duplicate process"
    assert len(lifecycle.exits(launch.run_id)) == 1
