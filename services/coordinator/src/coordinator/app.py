"""Composition root of the coordinator: the FastAPI app, whose lifespan runs the consumers and the sweep."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import structlog
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_metrics import register_rate_limit_gauges
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_service import open_service_runtime, running_consumers
from agent_grid_runtime.public_sqs import CoalescingPublisher, Consumer, Handlers
from agent_grid_runtime.public_stopping import server_stopping
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import Tracker
from fastapi import FastAPI

from coordinator.api.public_api import build_api_router
from coordinator.api.public_auth import ApiAuth
from coordinator.api.public_run_logs import open_run_logs
from coordinator.dashboard.public_dashboard import build_dashboard_router
from coordinator.handling.public_cancelling import RunCanceller
from coordinator.handling.public_coordinator import Coordinator
from coordinator.handling.public_outbox import OutboxWriter
from coordinator.handling.public_records import RecordKey
from coordinator.ledger.public_ledger import open_ledger
from coordinator.metrics.public_metrics import CoordinatorCounters, LedgerGauges
from coordinator.settings import Settings
from coordinator.tools.public_api import build_tools_router

SERVICE = "coordinator"
_log = structlog.get_logger(__name__)


def create_app(
    settings: Settings, *, transport: QueueTransport | None = None, tracker: Tracker | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            the_tracker: Tracker
            if tracker is not None:
                the_tracker = tracker
            elif settings.github is not None:
                the_tracker = await stack.enter_async_context(open_github_tracker(settings.github))
            else:
                raise RuntimeError("the coordinator needs the tracker: set COORDINATOR_GITHUB__TOKEN (or __APP__…)")
            ledger = await stack.enter_async_context(open_ledger(settings.ledger_url))
            records = _record_key(settings)
            runtime = await stack.enter_async_context(
                open_service_runtime(settings, service=SERVICE, transport=transport)
            )
            # GitHub writes leave the handlers' path: the writer makes them, at the tracker's pace, from the
            # ledger's outbox (stopped after the consumers, so it takes what their last messages wished for).
            writer = await stack.enter_async_context(
                OutboxWriter(ledger, the_tracker, settings.policy, settings.outbox, records=records).running()
            )
            # Concurrent handlers' launches share SendMessageBatch calls; each handler still returns only once
            # its own launch is on the broker. A launch may wait 10 ms for company (a run lasts minutes), which
            # fills batches where a 2 ms linger sent most launches alone (make bench-coordinator).
            launches = await stack.enter_async_context(
                CoalescingPublisher(runtime.publisher(QueueName.LAUNCHES), linger_s=0.01).running()
            )
            coordinator = Coordinator(
                tracker=the_tracker,
                ledger=ledger,
                launches=launches,
                nudges=runtime.publisher(QueueName.NUDGES),
                policy=settings.policy,
                cancels=RunCanceller(transport=runtime.transport, queues=settings.queues, producer=SERVICE),
                wake_writer=writer.wake,
                counters=CoordinatorCounters(runtime.registry),
                records=records,
            )
            nudges = runtime.consumer(
                QueueName.NUDGES, Handlers().on(Nudge, coordinator.on_nudge), settings.nudge_consumer
            )
            lifecycle = runtime.consumer(
                QueueName.LIFECYCLE,
                Handlers()
                .on(AgentStarted, coordinator.on_started)
                .on(AgentHeartbeat, coordinator.on_heartbeat)
                .on(AgentExited, coordinator.on_exited),
                settings.lifecycle_consumer,
            )
            ledger_gauges = LedgerGauges(
                runtime.registry, ledger.stats, settings.policy.caps, max_age_s=settings.metrics_max_age_s
            )
            if isinstance(the_tracker, GitHubTracker):
                register_rate_limit_gauges(runtime.registry, upstream="github", read=the_tracker.rate_limits.snapshot)
            app.include_router(
                runtime.ops_router(
                    {"consumers": lambda: _all_running(nudges, lifecycle)}, before_scrape=[ledger_gauges.refresh]
                )
            )
            app.include_router(
                build_api_router(
                    ledger,
                    settings.policy,
                    settings.api,
                    runtime.transport,
                    runtime.queues,
                    cancel_tree=coordinator.cancel_tree,
                    run_logs=await stack.enter_async_context(open_run_logs(settings.grid_api)),
                )
            )
            app.include_router(
                build_dashboard_router(
                    ledger=ledger,
                    policy=settings.policy,
                    auth=ApiAuth(settings.api.token),
                    settings=settings.dashboard,
                    transport=runtime.transport,
                    queues=runtime.queues,
                    stopping=server_stopping(app),
                )
            )
            app.include_router(
                build_tools_router(
                    ledger=ledger,
                    tracker=the_tracker,
                    # An HTTP handler answers while the agent waits: few attempts, then 503.
                    nudges=runtime.publisher(QueueName.NUDGES, max_attempts=3),
                    policy=settings.policy,
                    settings=settings.tools,
                )
            )
            await stack.enter_async_context(_sweeping(coordinator, settings))
            async with running_consumers([nudges, lifecycle]):
                yield

    return FastAPI(title="agent-grid coordinator", lifespan=lifespan)


def _record_key(settings: Settings) -> RecordKey:
    """The key the records on GitHub are signed with: configured, derived from the tracker's credential, or random.

    Random only for a tracker handed in without credentials (tests): its records are read back by this process
    alone, so a ledger lost meanwhile is rebuilt from nothing rather than from records anyone could have written.
    """
    key = RecordKey.configured(settings.records, settings.github)
    if key is not None and settings.records.secret is None and settings.github and settings.github.app is None:
        # Whoever holds the token can derive the key: agents given this same token could forge records.
        _log.warning("records_key_from_token", hint="set COORDINATOR_RECORDS__SECRET if agents act with this token")
    if key is None:
        _log.warning("records_key_ephemeral", reason="no COORDINATOR_RECORDS__SECRET and no tracker credential")
        return RecordKey.ephemeral()
    return key


@asynccontextmanager
async def _sweeping(coordinator: Coordinator, settings: Settings) -> AsyncIterator[None]:
    """Every ``sweep_interval_s``: declare silent runs lost, make late follow-ups of run ends, resume parents.

    Declaring a run lost releases its lease; a run end's follow-ups not made in time (a failed publish, a stopped
    coordinator) are made by whichever coordinator sweeps first.
    """
    stop = asyncio.Event()

    async def sweep() -> None:
        while not stop.is_set():
            try:
                await coordinator.sweep_lost_runs(silent_for=timedelta(seconds=settings.lost_after_s))
                await coordinator.sweep_follow_ups()
                await coordinator.sweep_management()
            except Exception:
                _log.exception("sweep_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_s)

    task = asyncio.create_task(sweep(), name="lost-run-sweep")
    try:
        yield
    finally:
        stop.set()
        await task


async def _all_running(*consumers: Consumer) -> bool:
    return all(consumer.running for consumer in consumers)
