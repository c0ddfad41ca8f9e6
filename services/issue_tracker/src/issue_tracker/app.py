"""Composition root of the issue-tracker: builds the FastAPI app and its lifespan."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from agent_grid_runtime.public_metrics import register_rate_limit_gauges
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_service import open_service_runtime
from agent_grid_runtime.public_sqs import CoalescingPublisher
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import Tracker
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from issue_tracker.deliveries.public_api import DeliveryStore, open_delivery_store
from issue_tracker.polling.public_api import IssuePoller
from issue_tracker.settings import Settings
from issue_tracker.webhooks.public_api import TranslationConfig, WebhookIntake, build_webhook_router

SERVICE = "issue-tracker"
_log = structlog.get_logger(__name__)


def create_app(
    settings: Settings,
    *,
    transport: QueueTransport | None = None,
    deliveries: DeliveryStore | None = None,
    tracker: Tracker | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        webhook = settings.webhook
        if webhook.secret is None:
            _log.warning("webhook_secret_missing", consequence="every webhook delivery is refused with 401")
        store = deliveries or await open_delivery_store(webhook.deliveries_url)
        try:
            async with open_service_runtime(settings, service=SERVICE, transport=transport) as runtime:
                nudges = CoalescingPublisher(
                    runtime.publisher(QueueName.NUDGES, max_attempts=webhook.publish_attempts),
                    linger_s=webhook.linger_ms / 1000,
                )
                intake = WebhookIntake(
                    secret=webhook.secret.get_secret_value().encode() if webhook.secret else None,
                    deliveries=store,
                    enqueue=nudges.publish,
                    config=TranslationConfig(bot_logins=webhook.bot_logins, mention=webhook.mention),
                    max_body_bytes=webhook.max_body_bytes,
                )
                app.include_router(runtime.ops_router())
                app.include_router(build_webhook_router(intake, registry=runtime.registry))
                async with nudges.running(), AsyncExitStack() as polling:
                    if settings.polling.repos:
                        poll_tracker = (
                            tracker
                            if tracker is not None
                            else await polling.enter_async_context(_open_tracker(settings))
                        )
                        _report_rate_limits(runtime.registry, poll_tracker)
                        poller = IssuePoller(
                            tracker=poll_tracker,
                            store=store,
                            enqueue=runtime.publisher(QueueName.NUDGES).publish,
                            settings=settings.polling,
                        )
                        await polling.enter_async_context(_running(poller))
                    yield
        finally:
            await store.close()

    return FastAPI(title="agent-grid issue-tracker", lifespan=lifespan)


def _report_rate_limits(registry: CollectorRegistry, tracker: Tracker) -> None:
    """GitHub's latest rate-limit window per resource as gauges, when the tracker is GitHub's."""
    if isinstance(tracker, GitHubTracker):
        register_rate_limit_gauges(registry, upstream="github", read=tracker.rate_limits.snapshot)


@asynccontextmanager
async def _open_tracker(settings: Settings) -> AsyncIterator[Tracker]:
    if settings.github is None:
        raise RuntimeError("polling needs the tracker's credentials: set ISSUE_TRACKER_GITHUB__TOKEN (or __APP__…)")
    async with open_github_tracker(settings.github) as tracker:
        yield tracker


@asynccontextmanager
async def _running(poller: IssuePoller) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop), name="issue-poller")
    _log.info("polling_started", repos=list(poller.settings.repos), interval_s=poller.settings.interval_s)
    try:
        yield
    finally:
        stop.set()
        await task
