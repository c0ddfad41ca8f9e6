"""Queue and dead-letter depths as Prometheus gauges, read from the broker when ``/metrics`` is scraped."""

import asyncio
import time
from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry, Gauge

from agent_grid_runtime.public_queues import QueuePair
from agent_grid_runtime.public_transport import QueueDepth, QueueTransport, TransportError

_log = structlog.get_logger(__name__)


class QueueDepthGauges:
    """``GetQueueAttributes`` per queue, at most every ``max_age_s``, and never longer than ``timeout_s``.

    Scrapers come every 15-60 s, possibly several at once (replicated Prometheus): the cache keeps the
    broker's load flat, and the lock makes concurrent scrapes share one read. A broker that does not answer
    within ``timeout_s`` (down, or a black-holed connection that botocore would wait 40 s on) clears the
    depths rather than serving stale ones, and says so in ``agent_grid_broker_up``; the failure is cached
    too, so a scrape waits for a dead broker at most once per ``max_age_s``.
    """

    def __init__(
        self,
        transport: QueueTransport,
        pairs: Mapping[str, QueuePair],
        registry: CollectorRegistry,
        *,
        max_age_s: float = 10.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._transport = transport
        self._pairs = dict(pairs)
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._depth = Gauge(
            "agent_grid_queue_messages",
            "Approximate messages in a work queue, by state (GetQueueAttributes).",
            ["queue", "state"],
            registry=registry,
        )
        self._dead = Gauge(
            "agent_grid_dead_letter_messages",
            "Approximate messages in a work queue's dead-letter queue.",
            ["queue"],
            registry=registry,
        )
        self._up = Gauge(
            "agent_grid_broker_up", "1 when the latest read of the queue depths succeeded, else 0.", registry=registry
        )

    async def refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self._max_age_s:
                return
            try:
                async with asyncio.timeout(self._timeout_s):
                    depths = {label: await self._read(pair) for label, pair in self._pairs.items()}
            except (TransportError, TimeoutError) as error:
                _log.warning("queue_depths_unavailable", error=str(error) or type(error).__name__)
                self._depth.clear()
                self._dead.clear()
                self._up.set(0)
            else:
                for label, (work, dead) in depths.items():
                    self._depth.labels(label, "visible").set(work.visible)
                    self._depth.labels(label, "in_flight").set(work.in_flight)
                    self._depth.labels(label, "delayed").set(work.delayed)
                    self._dead.labels(label).set(dead.visible + dead.in_flight + dead.delayed)
                self._up.set(1)
            self._read_at = time.monotonic()

    async def _read(self, pair: QueuePair) -> tuple[QueueDepth, QueueDepth]:
        return await self._transport.depth(pair.url), await self._transport.depth(pair.dead_letter_url)
