"""Composition root of the issue-tracker: builds the FastAPI app and its lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_service import ServiceRuntime, open_service_runtime
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from fastapi import FastAPI

from issue_tracker.settings import Settings

SERVICE = "issue-tracker"


@dataclass
class AppState:
    runtime: ServiceRuntime
    nudges: Publisher


def create_app(settings: Settings, *, transport: QueueTransport | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_service_runtime(settings, service=SERVICE, transport=transport) as runtime:
            app.state.services = AppState(
                runtime=runtime, nudges=runtime.publisher(QueueName.NUDGES, max_attempts=settings.publish_attempts)
            )
            app.include_router(runtime.ops_router())
            yield

    return FastAPI(title="agent-grid issue-tracker", lifespan=lifespan)
