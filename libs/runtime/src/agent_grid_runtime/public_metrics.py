"""Prometheus helpers for services: gauges whose samples are read from live state when ``/metrics`` is scraped.

For values a service already holds (slots in use, a library's snapshot of GitHub's rate limits): nothing to
keep in sync, and no metrics library in the code that holds them. Backward-compatible changes only.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GaugeReader", "RateWindow", "register_callback_gauge", "register_rate_limit_gauges"]

type GaugeReader = Callable[[], Mapping[tuple[str, ...], float]]
"""Returns the current samples: label values (in ``labelnames`` order) to value; ``()`` for an unlabelled gauge."""

_log = structlog.get_logger(__name__)


class _CallbackGauge(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], read: GaugeReader) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        try:
            samples = self._read()
        except Exception:  # one broken reader must not fail the whole scrape
            _log.exception("gauge_read_failed", metric=self._name)
            samples = {}
        for labels, value in samples.items():
            family.add_metric(list(labels), value)
        return [family]


def register_callback_gauge(
    registry: CollectorRegistry, name: str, documentation: str, labelnames: Sequence[str], read: GaugeReader
) -> None:
    """Register a gauge whose samples are ``read()`` at every scrape (it must be quick and not block).

    Args:
        registry: the service's registry.
        name: the metric name.
        documentation: its help text.
        labelnames: its label names; each key ``read`` returns has one value per name.
        read: the current samples. One that raises is logged and yields no samples for that scrape.
    """
    registry.register(_CallbackGauge(name, documentation, labelnames, read))


class RateWindow(Protocol):
    """An upstream API's current rate-limit window (e.g. the tracker's ``RateLimitStatus``)."""

    @property
    def limit(self) -> int:
        """Requests allowed per window."""
        ...

    @property
    def remaining(self) -> int:
        """Requests left in this window."""
        ...

    @property
    def reset_at(self) -> datetime:
        """When the window resets."""
        ...


def register_rate_limit_gauges(
    registry: CollectorRegistry, *, upstream: str, read: Callable[[], Mapping[str, RateWindow]]
) -> None:
    """``agent_grid_<upstream>_rate_limit_{remaining,limit,reset_timestamp_seconds}{resource}``, read at scrape time.

    Args:
        registry: the service's registry.
        upstream: the API's name in the metric names (``github``).
        read: the latest window per resource (``core``, ``graphql``...), as the service's client last saw it.
    """
    name = f"agent_grid_{upstream}_rate_limit"
    register_callback_gauge(
        registry,
        f"{name}_remaining",
        f"Requests left in {upstream}'s current rate-limit window.",
        ["resource"],
        lambda: {(resource,): window.remaining for resource, window in read().items()},
    )
    register_callback_gauge(
        registry,
        f"{name}_limit",
        f"Requests {upstream} allows per rate-limit window.",
        ["resource"],
        lambda: {(resource,): window.limit for resource, window in read().items()},
    )
    register_callback_gauge(
        registry,
        f"{name}_reset_timestamp_seconds",
        f"When {upstream}'s current rate-limit window resets (Unix time).",
        ["resource"],
        lambda: {(resource,): window.reset_at.timestamp() for resource, window in read().items()},
    )
