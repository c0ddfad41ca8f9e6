"""The queue transport port: the few SQS operations the runtime needs.

The aiobotocore adapter (``open_sqs_transport``) and ``public_testing.InMemoryBroker`` implement it.
Backward-compatible changes only.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent_grid_runtime.public_settings import AwsSettings

__all__ = [
    "MAX_BATCH",
    "MAX_MESSAGE_BYTES",
    "OutgoingMessage",
    "QueueDepth",
    "QueueTransport",
    "ReceivedMessage",
    "TransportError",
    "open_sqs_transport",
]

# SQS's limit on entries per SendMessageBatch / DeleteMessageBatch and messages per ReceiveMessage.
MAX_BATCH = 10
# SQS's limit on one message and on the sum of a batch's messages (the conservative, long-standing value).
MAX_MESSAGE_BYTES = 256 * 1024


class TransportError(Exception):
    """The broker refused or could not be reached. Callers retry with backoff."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send; ``entry_id`` is unique within its batch."""

    entry_id: str
    body: str
    delay_s: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One received message with its transport facts. Handlers never see the receipt handle.

    ``sent_at`` is when the broker first accepted it (SQS's ``SentTimestamp``), None where a broker does
    not say.
    """

    transport_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: Mapping[str, str] = field(default_factory=dict)
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Approximate counts, as SQS reports them."""

    visible: int
    in_flight: int
    delayed: int


class QueueTransport(Protocol):
    """The operations the publisher, the consumer and the queue bootstrap need."""

    async def send_batch(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Send up to ``MAX_BATCH`` messages; returns the entry ids that failed."""
        ...

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_time_s: int, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        """Long-poll for up to ``max_messages`` messages."""
        ...

    async def delete_batch(self, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
        """Delete up to ``MAX_BATCH`` messages; returns the receipt handles that failed."""
        ...

    async def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        """Hide a received message for ``timeout_s`` more seconds (0 makes it visible now)."""
        ...

    async def ensure_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        """Create the queue if missing, converge its attributes, return its URL."""
        ...

    async def queue_url(self, name: str) -> str:
        """Look up an existing queue's URL; raises TransportError when it does not exist."""
        ...

    async def queue_arn(self, queue_url: str) -> str:
        """The queue's ARN, for redrive policies."""
        ...

    async def depth(self, queue_url: str) -> QueueDepth:
        """Approximate message counts."""
        ...


@asynccontextmanager
async def open_sqs_transport(aws: AwsSettings, *, max_connections: int = 50) -> AsyncIterator[QueueTransport]:
    """Open an aiobotocore SQS client for the lifetime of the context (a lifespan or ``main``)."""
    from agent_grid_runtime.sqs_transport import SqsTransport, create_sqs_client

    async with create_sqs_client(aws, max_connections=max_connections) as client:
        yield SqsTransport(client)
