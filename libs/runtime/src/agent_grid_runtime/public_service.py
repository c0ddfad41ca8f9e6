"""The scaffold every service is built on.

Open the SQS transport, resolve the queues (riding out a broker that is not up yet), hand out publishers
and consumers, run consumers for the lifetime of a context, and report health. Composition roots
(``app.py`` / ``worker.py``) use it; domain code never does.
"""

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from agent_grid_runtime.public_backoff import Backoff
from agent_grid_runtime.public_http import HealthCheck, ScrapeHook, build_ops_router
from agent_grid_runtime.public_queues import QueueName, QueuePair, QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import BaseServiceSettings, ConsumerSettings
from agent_grid_runtime.public_sqs import Consumer, Handlers, Publisher
from agent_grid_runtime.public_stopping import StopAwareServer
from agent_grid_runtime.public_transport import QueueTransport, TransportError, open_sqs_transport
from agent_grid_runtime.queue_depths import QueueDepthGauges

__all__ = [
    "BrokerUnavailableError",
    "ServiceRuntime",
    "StartupAborted",
    "open_service_runtime",
    "run_http_service",
    "running_consumers",
]

_log = structlog.get_logger(__name__)
# What ``uvicorn.run`` exits with when the server never started (the port taken, the lifespan failed).
_STARTUP_FAILURE = 3


class BrokerUnavailableError(Exception):
    """The broker did not answer within ``startup_timeout_s`` of a service's start."""


class StartupAborted(Exception):  # named as an instruction to the caller, not a fault
    """Stop was requested while the service was still waiting for the broker."""


@dataclass
class ServiceRuntime:
    """What a service needs from the messaging layer, built once at start."""

    service: str
    transport: QueueTransport
    queues: QueueUrls
    registry: CollectorRegistry
    _depths: QueueDepthGauges | None = field(default=None, init=False, repr=False)

    def publisher(self, queue: QueueName, *, max_attempts: int = 5) -> Publisher:
        """A publisher to one of the work queues."""
        return Publisher(
            transport=self.transport,
            queue_url=self.queues.pair(queue).url,
            queue_label=queue.value,
            max_attempts=max_attempts,
            registry=self.registry,
        )

    def consumer(self, queue: QueueName, handlers: Handlers, settings: ConsumerSettings) -> Consumer:
        """A consumer of one of the work queues, dead-lettering to its DLQ."""
        pair = self.queues.pair(queue)
        return Consumer(
            self.transport,
            queue_url=pair.url,
            dead_letter_url=pair.dead_letter_url,
            handlers=handlers,
            settings=settings,
            queue_label=queue.value,
            registry=self.registry,
        )

    async def broker_reachable(self) -> bool:
        """Health probe: the broker answers a cheap call on the nudges queue."""
        await self.transport.depth(self.queues.nudges.url)
        return True

    def ops_router(
        self,
        extra_checks: dict[str, HealthCheck] | None = None,
        *,
        extra_queues: Mapping[str, QueuePair] | None = None,
        before_scrape: Sequence[ScrapeHook] = (),
    ) -> APIRouter:
        """``/healthz`` (broker reachable plus ``extra_checks``) and ``/metrics``.

        ``/metrics`` includes the depth of every work queue and dead-letter queue (plus ``extra_queues``, by
        label), read from the broker at scrape time with a short cache, and whatever ``before_scrape`` updates.
        """
        if self._depths is None:  # one set of gauges per registry, however many routers
            pairs = {name.value: self.queues.pair(name) for name in QueueName} | dict(extra_queues or {})
            self._depths = QueueDepthGauges(self.transport, pairs, self.registry)
        return build_ops_router(
            service=self.service,
            registry=self.registry,
            checks={"broker": self.broker_reachable, **(extra_checks or {})},
            before_scrape=[self._depths.refresh, *before_scrape],
        )


@asynccontextmanager
async def open_service_runtime(
    settings: BaseServiceSettings,
    *,
    service: str,
    transport: QueueTransport | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[ServiceRuntime]:
    """Open the transport and resolve the queues, retrying with capped backoff while the broker is down.

    Args:
        settings: the service's settings.
        service: its name, for logs and health.
        transport: use this transport instead of opening SQS (unit tests pass an InMemoryBroker).
        stop: set by the caller's signal handling; waiting for the broker ends when it is set.

    Raises:
        BrokerUnavailableError: no broker within ``settings.startup_timeout_s``.
        StartupAborted: ``stop`` was set while waiting.
    """
    registry = CollectorRegistry()
    if transport is not None:
        yield ServiceRuntime(service, transport, await _resolve_with_retry(transport, settings, stop), registry)
        return
    async with open_sqs_transport(settings.aws) as sqs:
        yield ServiceRuntime(service, sqs, await _resolve_with_retry(sqs, settings, stop), registry)


async def _resolve_with_retry(
    transport: QueueTransport, settings: BaseServiceSettings, stop: asyncio.Event | None
) -> QueueUrls:
    backoff = Backoff(initial_s=0.5, max_s=15.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_timeout_s
    stop = stop or asyncio.Event()
    while True:
        try:
            return await resolve_queues(transport, settings.queues)
        except TransportError as error:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BrokerUnavailableError(
                    f"no broker at {settings.aws.endpoint_url or 'AWS'} after {settings.startup_timeout_s:.0f}s: "
                    f"{error}"
                ) from error
            delay = min(backoff.next_delay(), remaining)
            _log.warning(
                "broker_unreachable",
                endpoint=settings.aws.endpoint_url or "aws",
                error=str(error),
                retry_in_s=round(delay, 2),
            )
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                continue
            raise StartupAborted("stop requested while waiting for the broker") from error


@asynccontextmanager
async def running_consumers(consumers: Sequence[Consumer]) -> AsyncIterator[None]:
    """Run consumers in the background for the lifetime of the context; on exit, drain them.

    Each consumer bounds its own drain with ``drain_timeout_s``: lifespan shutdown has no deadline of its own.
    A consumer that crashes is logged; the others keep running, and ``/healthz`` reports it.
    """
    tasks = [asyncio.create_task(consumer.run(), name="consumer") for consumer in consumers]
    for task in tasks:
        task.add_done_callback(_log_crash)
    try:
        yield
    finally:
        for consumer in consumers:
            consumer.stop()
        # gather, not a TaskGroup: the consumers outlive this frame across the `yield`, and one crashing must not
        # cancel the lifespan task that hosts them (health reports it instead).
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_crash(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("consumer_crashed", exc_info=task.exception())


def run_http_service(app: FastAPI, settings: BaseServiceSettings) -> None:
    """Serve ``app`` until SIGTERM/SIGINT. uvicorn owns the signals (STYLE.md S3).

    On a signal uvicorn sets ``server_stopping(app)`` (long-lived responses end on it), closes connections
    (within 10 s), then runs lifespan shutdown, where the consumers drain under their own ``drain_timeout_s``:
    lifespan shutdown has no deadline of its own.
    """
    # Everything imported so far lives until exit: keep it out of the collector's full passes, whose pauses
    # otherwise land on request latency (measured by bench-webhooks).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    config = uvicorn.Config(
        app, host=settings.http.host, port=settings.http.port, log_config=None, timeout_graceful_shutdown=10
    )
    server = StopAwareServer(config, app)
    server.run()
    if not server.started:
        sys.exit(_STARTUP_FAILURE)
