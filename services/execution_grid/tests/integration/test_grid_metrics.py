"""A real grid worker on the real broker, scraped: agents running, slots free, exits by reason, its queues."""

import asyncio
from collections.abc import Callable

import httpx
import pytest
from agent_grid_contracts.public_lifecycle import AgentStarted
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_queues import QueueUrls
from agent_grid_runtime.public_settings import HttpSettings
from agent_grid_runtime.public_transport import QueueTransport
from execution_grid.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from .grid_harness import LifecycleWatcher, running_grid, script_launch, send_launch

pytestmark = pytest.mark.connected


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


async def scrape_when_serving(client: httpx.AsyncClient) -> str:
    async with asyncio.timeout(20):
        while True:
            try:
                return (await client.get("/metrics")).text
            except httpx.ConnectError:  # the worker's HTTP server is still starting
                await asyncio.sleep(0.05)


async def test_a_worker_reports_its_agents_its_free_slots_and_its_exits_by_reason(
    sqs: QueueTransport,
    grid_queues: QueueUrls,
    lifecycle: LifecycleWatcher,
    make_settings: Callable[..., Settings],
) -> None:
    port = find_free_port()
    settings = make_settings(slots=3, http=HttpSettings(port=port))
    settings.supervision.shutdown_grace_s = 2
    long = script_launch({"sleep_s": 60})
    failing = script_launch({"sleep_s": 0.1, "exit_code": 3})
    succeeding = script_launch({"sleep_s": 0.1})

    async with running_grid(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        idle = await scrape_when_serving(client)
        for launch in (long, failing, succeeding):
            await send_launch(sqs, grid_queues, launch)
        await lifecycle.exited(failing.run_id)
        await lifecycle.exited(succeeding.run_id)
        await lifecycle.until(lambda: any(isinstance(event, AgentStarted) for event in lifecycle.of(long.run_id)))
        busy = (await client.get("/metrics")).text

    assert sample(idle, "agent_grid_agents_running") == 0
    assert sample(idle, "agent_grid_launch_slots_free") == 3
    assert sample(idle, "agent_grid_agent_exits_total", reason="success") == 0
    assert sample(busy, "agent_grid_agents_running") == 1
    assert sample(busy, "agent_grid_launch_slots") == 3
    assert sample(busy, "agent_grid_launch_slots_free") == 2
    assert sample(busy, "agent_grid_agent_exits_total", reason="success") == 1
    assert sample(busy, "agent_grid_agent_exits_total", reason="failed") == 1
    assert sample(busy, "agent_grid_agent_exits_total", reason="timed_out") == 0
    # The worker's own control queue is watched with the work queues.
    assert sample(busy, "agent_grid_queue_messages", queue="control", state="visible") == 0
    assert sample(busy, "agent_grid_dead_letter_messages", queue="launches") == 0
    assert sample(busy, "agent_grid_broker_up") == 1
    assert sample(busy, "agent_grid_queue_oldest_message_age_seconds", queue="launches") is not None
