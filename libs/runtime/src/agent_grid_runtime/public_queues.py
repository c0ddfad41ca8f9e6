"""The queue topology of agent-grid and its idempotent bootstrap. Every service and the CLI use it.

Three work queues, each with its dead-letter queue and a redrive policy:
``nudges`` (→ coordinator), ``launches`` (→ execution_grid) and ``lifecycle`` (→ coordinator).
"""

import json
from dataclasses import dataclass
from enum import StrEnum

import structlog

from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_transport import QueueTransport

__all__ = ["QueueName", "QueuePair", "QueueUrls", "queue_names", "resolve_queues"]

_log = structlog.get_logger(__name__)

# Dead letters are evidence for an operator; keep them as long as SQS allows.
_DEAD_LETTER_RETENTION_S = 1_209_600


class QueueName(StrEnum):
    """The logical queues; the physical name is ``<prefix>-<logical>``."""

    NUDGES = "nudges"
    LAUNCHES = "launches"
    LIFECYCLE = "lifecycle"


@dataclass(frozen=True, slots=True)
class QueuePair:
    """A work queue and its dead-letter queue."""

    url: str
    dead_letter_url: str


@dataclass(frozen=True, slots=True)
class QueueUrls:
    """Resolved URLs of every queue."""

    nudges: QueuePair
    launches: QueuePair
    lifecycle: QueuePair

    def pair(self, name: QueueName) -> QueuePair:
        """The pair of a logical queue."""
        pair: QueuePair = getattr(self, name.value)
        return pair


def queue_names(settings: QueueSettings, name: QueueName) -> tuple[str, str]:
    """Physical names of a logical queue and of its dead-letter queue."""
    base = f"{settings.prefix}-{name.value}"
    return base, f"{base}-dlq"


async def resolve_queues(transport: QueueTransport, settings: QueueSettings) -> QueueUrls:
    """Return every queue's URLs, creating missing queues first when ``settings.bootstrap`` is on.

    Idempotent: running it again (any service, any number of replicas) converges to the same topology.

    Raises:
        TransportError: the broker is unreachable, or (without bootstrap) a queue does not exist.
    """
    pairs = {name: await _resolve_pair(transport, settings, name) for name in QueueName}
    return QueueUrls(
        nudges=pairs[QueueName.NUDGES], launches=pairs[QueueName.LAUNCHES], lifecycle=pairs[QueueName.LIFECYCLE]
    )


async def _resolve_pair(transport: QueueTransport, settings: QueueSettings, name: QueueName) -> QueuePair:
    work_name, dead_letter_name = queue_names(settings, name)
    if not settings.bootstrap:
        return QueuePair(
            url=await transport.queue_url(work_name), dead_letter_url=await transport.queue_url(dead_letter_name)
        )
    dead_letter_url = await transport.ensure_queue(
        dead_letter_name, {"MessageRetentionPeriod": str(_DEAD_LETTER_RETENTION_S)}
    )
    dead_letter_arn = await transport.queue_arn(dead_letter_url)
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(settings.max_receive_count)}
    url = await transport.ensure_queue(
        work_name,
        {
            "VisibilityTimeout": str(settings.visibility_timeout_s),
            "MessageRetentionPeriod": str(settings.message_retention_s),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    _log.debug("queue_ready", queue=work_name, dead_letter_queue=dead_letter_name)
    return QueuePair(url=url, dead_letter_url=dead_letter_url)
