"""Composition root of the coordinator: the FastAPI app, whose lifespan runs the nudge and lifecycle consumers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from agent_grid_contracts.public_envelope import Envelope
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_service import open_service_runtime, running_consumers
from agent_grid_runtime.public_sqs import Consumer, Handlers, MessageContext
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import FastAPI

from coordinator.settings import Settings

SERVICE = "coordinator"
_log = structlog.get_logger(__name__)


# The decision logic (eligibility, budgets, leases, launches) arrives with the coordinator issue; until then
# the coordinator acknowledges what it receives and records it in its logs and metrics.
async def handle_nudge(envelope: Envelope[Nudge], context: MessageContext) -> None:
    _log.info(
        "nudge_received",
        issue=envelope.body.issue.key,
        reason=envelope.body.reason.value,
        receive_count=context.receive_count,
    )


async def handle_lifecycle(
    envelope: Envelope[AgentStarted] | Envelope[AgentHeartbeat] | Envelope[AgentExited], context: MessageContext
) -> None:
    _log.info("lifecycle_received", run_id=envelope.body.run_id, receive_count=context.receive_count)


def create_app(settings: Settings, *, transport: QueueTransport | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_service_runtime(settings, service=SERVICE, transport=transport) as runtime:
            nudges = runtime.consumer(QueueName.NUDGES, Handlers().on(Nudge, handle_nudge), settings.nudge_consumer)
            lifecycle = runtime.consumer(
                QueueName.LIFECYCLE,
                Handlers()
                .on(AgentStarted, handle_lifecycle)
                .on(AgentHeartbeat, handle_lifecycle)
                .on(AgentExited, handle_lifecycle),
                settings.lifecycle_consumer,
            )
            app.include_router(runtime.ops_router({"consumers": lambda: _all_running(nudges, lifecycle)}))
            async with running_consumers([nudges, lifecycle]):
                yield

    return FastAPI(title="agent-grid coordinator", lifespan=lifespan)


async def _all_running(*consumers: Consumer) -> bool:
    return all(consumer.running for consumer in consumers)
