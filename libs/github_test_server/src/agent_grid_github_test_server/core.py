"""The server's parts in one place: the store, its renderer, limits, faults, request log and webhooks."""

import time
from collections.abc import Callable
from datetime import UTC, datetime

from agent_grid_github_test_server.limits import Faults, RateLimits
from agent_grid_github_test_server.public_models import LoggedRequest
from agent_grid_github_test_server.render import Renderer, Urls
from agent_grid_github_test_server.store import Store
from agent_grid_github_test_server.webhook_delivery import WebhookDispatcher
from agent_grid_github_test_server.webhook_payloads import payload_for


def utc_now() -> datetime:
    return datetime.now(UTC)


class Core:
    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = utc_now,
        wall: Callable[[], float] = time.time,
        rate_limit: int = 5000,
    ) -> None:
        self.wall = wall
        self.clock = clock
        self.rate_limit = rate_limit
        self.webhooks = WebhookDispatcher()
        self.render = Renderer(Store(clock), Urls(api="http://127.0.0.1/", web="http://127.0.0.1/"))
        self.reset()

    def reset(self, clock: Callable[[], datetime] | None = None) -> None:
        """Forget all state, faults, the request log, hooks and deliveries; the served app keeps running."""
        self.store = Store(clock or self.clock)
        self.limits = RateLimits(self.wall, default_limit=self.rate_limit)
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []
        self.webhooks.reset()
        self.render = Renderer(self.store, self.render.urls)

    def bind(self, urls: Urls) -> None:
        # The app is built after the port is known; everything rendered from then on points at it.
        self.render = Renderer(self.store, urls)

    def publish(self) -> None:
        """Turn the store's pending changes into webhook deliveries (call right after each mutation)."""
        for change in self.store.take_changes():
            self.webhooks.enqueue(change.event, change.action, payload_for(change, self.render))

    def discard_changes(self) -> None:
        """Seeding is silent: what tests set up beforehand is history, not news."""
        self.store.take_changes()
