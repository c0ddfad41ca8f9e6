import asyncio
from pathlib import Path

import httpx
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunMode
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import HttpSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_testing import InMemoryBroker
from execution_grid.settings import Settings, WorkspaceSettings
from execution_grid.worker import run_worker


async def test_worker_consumes_launches_serves_health_and_stops_on_request(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    port = find_free_port()
    settings = Settings(
        queues=QueueSettings(prefix="unit"),
        http=HttpSettings(port=port),
        state_dir=tmp_path,
        workspace=WorkspaceSettings(clone_base_url=None),
    )
    queues = await resolve_queues(broker, settings.queues)
    await Publisher(transport=broker, queue_url=queues.launches.url).publish(
        wrap(
            LaunchAgent(run_id="r1", issue=IssueRef(repo="a/b", number=1), mode=RunMode.WORK, agent_kind="generic"),
            producer="test",
        )
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, transport=broker))

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client, asyncio.timeout(10):
        while True:
            try:
                health = await client.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        while broker.messages(queues.launches.url):
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(10):
        await worker

    assert health.status_code == 200
    assert health.json()["checks"] == {"broker": "ok", "consumer": "ok"}
