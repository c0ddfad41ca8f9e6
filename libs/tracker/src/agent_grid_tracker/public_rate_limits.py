"""GitHub's rate-limit headers as the GitHub adapter last saw them, for services to report (gauges, logs).

No metrics library here: a service reads :meth:`RateLimitBook.snapshot` when it is scraped. Backward-compatible
changes only.
"""

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["RateLimitBook", "RateLimitStatus"]


@dataclass(frozen=True)
class RateLimitStatus:
    """One rate-limit window of one resource (``core``, ``graphql``, ``search``...), from a response's headers."""

    resource: str
    limit: int
    remaining: int
    used: int | None
    reset_at: datetime
    observed_at: datetime


class RateLimitBook:
    """The latest ``X-RateLimit-*`` headers per resource.

    GitHub counts REST and GraphQL separately (``X-RateLimit-Resource``), so each resource keeps its own
    latest window.
    """

    def __init__(self) -> None:
        """An empty book: nothing observed yet."""
        self._latest: dict[str, RateLimitStatus] = {}
        # Responses arrive on the event loop, scrapes may read from a collector thread.
        self._lock = threading.Lock()

    def observe(self, headers: Mapping[str, str], *, now: datetime | None = None) -> RateLimitStatus | None:
        """Record the window a response reports; None when it carries no (or malformed) rate-limit headers."""
        try:
            limit = int(headers["x-ratelimit-limit"])
            remaining = int(headers["x-ratelimit-remaining"])
            reset_at = datetime.fromtimestamp(int(headers["x-ratelimit-reset"]), tz=UTC)
            used = int(headers["x-ratelimit-used"]) if "x-ratelimit-used" in headers else None
        except (KeyError, ValueError, OverflowError):
            return None
        status = RateLimitStatus(
            resource=headers.get("x-ratelimit-resource", "core"),
            limit=limit,
            remaining=remaining,
            used=used,
            reset_at=reset_at,
            observed_at=now or datetime.now(UTC),
        )
        with self._lock:
            self._latest[status.resource] = status
        return status

    def snapshot(self) -> dict[str, RateLimitStatus]:
        """The latest window of every resource seen, by resource name."""
        with self._lock:
            return dict(self._latest)
