"""Prometheus instruments of the messaging runtime, registered per service registry."""

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class MessagingMetrics:
    handled: Counter
    duration: Histogram
    in_flight: Gauge
    receive_errors: Counter
    published: Counter
    publish_errors: Counter
    oldest_age: Gauge


_BY_REGISTRY: dict[int, MessagingMetrics] = {}


def messaging_metrics(registry: CollectorRegistry) -> MessagingMetrics:
    # One set of instruments per registry: several consumers and publishers of a service share them.
    existing = _BY_REGISTRY.get(id(registry))
    if existing is not None:
        return existing
    metrics = MessagingMetrics(
        handled=Counter(
            "agent_grid_messages_total",
            "Messages consumed, by outcome.",
            ["queue", "kind", "outcome"],
            registry=registry,
        ),
        duration=Histogram(
            "agent_grid_message_duration_seconds",
            "Handler time per message.",
            ["queue", "kind"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
        ),
        in_flight=Gauge("agent_grid_messages_in_flight", "Messages being handled.", ["queue"], registry=registry),
        receive_errors=Counter(
            "agent_grid_receive_errors_total", "Failed receive calls (broker errors).", ["queue"], registry=registry
        ),
        published=Counter(
            "agent_grid_messages_published_total", "Messages published.", ["queue", "kind"], registry=registry
        ),
        publish_errors=Counter(
            "agent_grid_publish_errors_total", "Publish attempts that failed.", ["queue"], registry=registry
        ),
        oldest_age=Gauge(
            "agent_grid_queue_oldest_message_age_seconds",
            "Age (since SentTimestamp) of the oldest message in the consumer's latest receive; 0 when it was empty.",
            ["queue"],
            registry=registry,
        ),
    )
    _BY_REGISTRY[id(registry)] = metrics
    return metrics
