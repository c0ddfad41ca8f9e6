"""The queue topology of agent-grid and its idempotent bootstrap. Every service and the CLI use it.

Three work queues, each with its dead-letter queue and a redrive policy:
``nudges`` (→ coordinator), ``launches`` (→ execution_grid) and ``lifecycle`` (→ coordinator).
Each grid worker also owns a control queue, ``<prefix>-ctl-<worker>``, which it creates at start: a command
about a run (cancel it) must reach the one worker that holds the run, which a shared queue cannot promise.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum

import structlog

from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_transport import QueueTransport

__all__ = [
    "QueueName",
    "QueuePair",
    "QueueUrls",
    "control_queue_name",
    "ensure_control_queue",
    "queue_names",
    "resolve_queues",
]

_log = structlog.get_logger(__name__)

# Dead letters are evidence for an operator; keep them as long as SQS allows.
_DEAD_LETTER_RETENTION_S = 1_209_600
# A control command is about a run in flight; one that waited a day has nothing left to act on.
_CONTROL_RETENTION_S = 86_400
_SQS_NAME_MAX = 80
_NOT_IN_QUEUE_NAMES = re.compile(r"[^A-Za-z0-9_-]")


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


def control_queue_name(settings: QueueSettings, worker_id: str) -> str:
    """The physical name of a worker's control queue; producers derive it from ``AgentStarted.worker_id``.

    SQS names allow 80 characters of ``[A-Za-z0-9_-]``: other characters become ``-`` and a long worker id
    is shortened with a hash of the whole id, so two workers never share a queue.
    """
    base = f"{settings.prefix}-ctl-"
    slug = _NOT_IN_QUEUE_NAMES.sub("-", worker_id)
    room = _SQS_NAME_MAX - len(base)
    if len(slug) > room or slug != worker_id:
        digest = hashlib.sha256(worker_id.encode()).hexdigest()[:10]
        slug = f"{slug[: room - len(digest) - 1]}-{digest}"
    return base + slug


async def ensure_control_queue(transport: QueueTransport, settings: QueueSettings, worker_id: str) -> QueuePair:
    """Create (idempotently) the worker's control queue, dead-lettering to the shared ``<prefix>-ctl-dlq``.

    Raises:
        TransportError: the broker is unreachable.
    """
    dead_letter_url = await transport.ensure_queue(
        f"{settings.prefix}-ctl-dlq", {"MessageRetentionPeriod": str(_DEAD_LETTER_RETENTION_S)}
    )
    redrive = {
        "deadLetterTargetArn": await transport.queue_arn(dead_letter_url),
        "maxReceiveCount": str(settings.max_receive_count),
    }
    url = await transport.ensure_queue(
        control_queue_name(settings, worker_id),
        {
            "VisibilityTimeout": str(settings.visibility_timeout_s),
            "MessageRetentionPeriod": str(_CONTROL_RETENTION_S),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    return QueuePair(url=url, dead_letter_url=dead_letter_url)
