"""Spacing of content-creating writes, as GitHub asks: at least 1 s apart and at most 80 a minute.

GitHub's secondary rate limits punish bursts of writes (and concurrent requests) with 403s that can last
minutes; githubkit does not pace writes, so the adapter does, before a request leaves the process.
:class:`WriteSchedule` is the pure rule (a clock in, a delay out); :class:`PacingThrottler` applies it to
githubkit's requests.
"""

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from githubkit.throttling import BaseThrottler

_WINDOW_S = 60.0
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class WriteSchedule:
    """When the next write may start, given when the previous ones did."""

    min_interval_s: float = 1.0
    max_per_minute: int = 80
    _starts: deque[float] = field(default_factory=deque)

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next write may start (0 when it may start at once)."""
        while self._starts and self._starts[0] <= now - _WINDOW_S:
            self._starts.popleft()
        wait = 0.0
        if self._starts:
            wait = max(wait, self._starts[-1] + self.min_interval_s - now)
        if len(self._starts) >= self.max_per_minute:
            # The oldest write in the window must leave it before another may enter.
            wait = max(wait, self._starts[-self.max_per_minute] + _WINDOW_S - now)
        return wait

    def record(self, started_at: float) -> None:
        """Note that a write started at ``started_at``."""
        self._starts.append(started_at)


def is_paced_write(request: httpx.Request) -> bool:
    """Writes that create or change content; GraphQL queries and token exchanges are not content."""
    if request.method not in _WRITE_METHODS:
        return False
    path = request.url.path
    return not (path.endswith("/graphql") or path.endswith("/access_tokens"))


class PacingThrottler(BaseThrottler):
    """githubkit throttler: reads run concurrently up to a bound; writes go one at a time, paced."""

    def __init__(
        self,
        schedule: WriteSchedule,
        *,
        max_concurrent_reads: int = 8,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._schedule = schedule
        self._clock = clock
        self._on_wait = on_wait
        self._reads = asyncio.Semaphore(max_concurrent_reads)
        self._writes = asyncio.Lock()

    @contextmanager
    def acquire(self, request: httpx.Request) -> Generator[None, Any, Any]:  # noqa: ARG002 - githubkit's signature
        raise NotImplementedError("agent-grid uses githubkit's async API only")
        yield  # pragma: no cover

    @asynccontextmanager
    async def async_acquire(self, request: httpx.Request) -> AsyncGenerator[None, Any]:
        if not is_paced_write(request):
            async with self._reads:
                yield
            return
        async with self._writes:
            delay = self._schedule.delay(self._clock())
            if delay > 0:
                if self._on_wait is not None:
                    self._on_wait(delay)
                await asyncio.sleep(delay)
            self._schedule.record(self._clock())
            yield
