"""Prometheus helpers for services: gauges whose samples are read from live state when ``/metrics`` is scraped.

For values a service already holds (slots in use, a library's snapshot of GitHub's rate limits): nothing to
keep in sync, and no metrics library in the code that holds them. Backward-compatible changes only.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GaugeReader", "register_callback_gauge"]

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
