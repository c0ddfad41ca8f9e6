"""Helpers of the grid integration tests: a worker in process, launches of the scripted agent, a lifecycle watcher."""

import asyncio
import json
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunLimits, RunMode
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted
from agent_grid_runtime.public_queues import QueueUrls, control_queue_name
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from execution_grid.settings import Settings
from execution_grid.worker import run_worker

Lifecycle = AgentStarted | AgentHeartbeat | AgentExited


def scripted_agent_path() -> str:
    found = shutil.which("agent-grid-scripted-agent") or str(Path(sys.executable).parent / "agent-grid-scripted-agent")
    assert Path(found).exists(), "the scripted agent is installed with the workspace (uv sync)"
    return found


class LifecycleWatcher:
    """Drains the lifecycle queue into per-run lists, as the coordinator would receive them."""

    def __init__(self, transport: QueueTransport, queue_url: str) -> None:
        self._transport = transport
        self._url = queue_url
        self.events: list[Lifecycle] = []

    def of(self, run_id: str) -> list[Lifecycle]:
        return [event for event in self.events if event.run_id == run_id]

    def exits(self, run_id: str) -> list[AgentExited]:
        return [event for event in self.of(run_id) if isinstance(event, AgentExited)]

    def kinds(self, run_id: str) -> list[str]:
        return [type(event).__name__ for event in self.of(run_id)]

    async def poll(self) -> None:
        messages = await self._transport.receive(self._url, max_messages=10, wait_time_s=1, visibility_timeout_s=30)
        for message in messages:
            envelope: Envelope[Any] = decode(message.body)
            self.events.append(envelope.body)
        if messages:
            await self._transport.delete_batch(self._url, [message.receipt_handle for message in messages])

    async def until(self, condition: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await self.poll()

    async def exited(self, run_id: str, *, timeout_s: float = 30.0) -> AgentExited:
        await self.until(lambda: bool(self.exits(run_id)), timeout_s=timeout_s)
        return self.exits(run_id)[0]


@asynccontextmanager
async def running_grid(settings: Settings, environ: dict[str, str] | None = None) -> AsyncIterator[asyncio.Event]:
    """A worker in this process; leaving the block stops it (draining and winding its agents down)."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, environ=environ))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await worker


def script_launch(script: dict[str, Any], *, run_id: str | None = None, **limits: Any) -> LaunchAgent:
    return LaunchAgent(
        run_id=run_id or f"run-{uuid.uuid4().hex[:12]}",
        issue=IssueRef(repo="demo/widgets", number=7),
        mode=RunMode.WORK,
        agent_kind="generic",
        limits=RunLimits(**limits),
        prompt_inputs={"script": json.dumps(script)},
    )


async def send_launch(transport: QueueTransport, queues: QueueUrls, launch: LaunchAgent) -> None:
    await Publisher(transport=transport, queue_url=queues.launches.url).publish(wrap(launch, producer="test"))


def records(path: Path) -> list[dict[str, Any]]:
    """The scripted agent's record_to lines."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited for every purpose here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def send_cancel(
    transport: QueueTransport, settings: Settings, run_id: str, *, grace_s: float | None = None
) -> None:
    url = await transport.queue_url(control_queue_name(settings.queues, settings.worker_id))
    command = CancelRun(run_id=run_id, reason="test", grace_s=grace_s)
    await Publisher(transport=transport, queue_url=url).publish(wrap(command, producer="test"))


async def wait_for(condition: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)
