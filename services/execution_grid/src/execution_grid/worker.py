"""Composition root of the execution-grid worker: consumes launches, serves ``/healthz`` and ``/metrics``."""

import asyncio

import structlog
from agent_grid_contracts.public_envelope import Envelope
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_service import ServiceRuntime, StartupAborted, open_service_runtime
from agent_grid_runtime.public_sqs import Handlers, MessageContext
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import FastAPI

from execution_grid.settings import Settings

SERVICE = "execution-grid"
_log = structlog.get_logger(__name__)


# Supervised agent processes arrive with the execution-grid issue; until then a launch is logged and
# acknowledged so that the flow can be traced end to end.
async def handle_launch(envelope: Envelope[LaunchAgent], context: MessageContext) -> None:
    _log.info(
        "launch_received",
        run_id=envelope.body.run_id,
        issue=envelope.body.issue.key,
        mode=envelope.body.mode.value,
        receive_count=context.receive_count,
    )


async def run_worker(settings: Settings, stop: asyncio.Event, *, transport: QueueTransport | None = None) -> None:
    """Consume launches and serve ops HTTP until ``stop`` is set, then drain."""
    try:
        async with open_service_runtime(settings, service=SERVICE, transport=transport, stop=stop) as runtime:
            await _serve(runtime, settings, stop)
    except StartupAborted:
        _log.info("startup_aborted")


async def _serve(runtime: ServiceRuntime, settings: Settings, stop: asyncio.Event) -> None:
    consumer = runtime.consumer(QueueName.LAUNCHES, Handlers().on(LaunchAgent, handle_launch), settings.launch_consumer)

    async def consumer_running() -> bool:
        return consumer.running

    app = FastAPI(title="agent-grid execution-grid")
    app.include_router(runtime.ops_router({"consumer": consumer_running}))

    async def stop_consumer_on_signal() -> None:
        await stop.wait()
        consumer.stop()

    async with asyncio.TaskGroup() as group:
        group.create_task(consumer.run())
        group.create_task(stop_consumer_on_signal())
        group.create_task(serve_http(app, host=settings.http.host, port=settings.http.port, stop=stop))
