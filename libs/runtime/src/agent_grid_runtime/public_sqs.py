"""Messaging API for every service: publish envelopes and consume them with handlers.

A handler tells the consumer what to do with a message by returning or raising. Import from here only.
Backward-compatible changes only.

Handler outcomes:

==========================  ================================================================
handler does                consumer does
==========================  ================================================================
returns                     deletes the message (batched)
raises ``RetryLater(s)``    hides it for ``s`` seconds (ChangeMessageVisibility)
raises ``DropMessage(r)``   sends it to the dead-letter queue with reason ``r``, deletes it
invalid contract            same as ``DropMessage``, with the validation error as the reason
raises anything else        logs once and leaves it; after ``max_receive_count`` SQS redrives it
cancelled (shutdown)        leaves it; it comes back after the visibility timeout
==========================  ================================================================
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from agent_grid_contracts.public_codec import encode
from agent_grid_contracts.public_envelope import BodyModel, Envelope
from prometheus_client import CollectorRegistry

from agent_grid_runtime.consumer_loop import Consumer
from agent_grid_runtime.metrics import messaging_metrics
from agent_grid_runtime.outcomes import DropMessage, MessageContext, RetryLater
from agent_grid_runtime.public_backoff import Backoff
from agent_grid_runtime.public_transport import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    OutgoingMessage,
    QueueTransport,
    TransportError,
)

__all__ = [
    "CoalescingPublisher",
    "Consumer",
    "DropMessage",
    "Handlers",
    "MessageContext",
    "MessageHandler",
    "PublishError",
    "Publisher",
    "RetryLater",
]

_log = structlog.get_logger(__name__)

type MessageHandler[B: BodyModel] = Callable[[Envelope[B], MessageContext], Awaitable[None]]


class Handlers:
    """The handlers of one consumer, one per body type."""

    def __init__(self) -> None:
        self._by_kind: dict[str, tuple[type[BodyModel], MessageHandler[Any]]] = {}

    def on[B: BodyModel](self, body_type: type[B], handler: MessageHandler[B]) -> "Handlers":
        """Register ``handler`` for messages whose body is ``body_type``; returns self for chaining."""
        if body_type.KIND in self._by_kind:
            raise ValueError(f"a handler for {body_type.KIND!r} is already registered")
        self._by_kind[body_type.KIND] = (body_type, handler)
        return self

    @property
    def body_types(self) -> list[type[BodyModel]]:
        """Every body type with a handler."""
        return [body_type for body_type, _ in self._by_kind.values()]

    def handler_for(self, kind: str) -> MessageHandler[Any]:
        """The handler of ``kind``; raises KeyError when none is registered."""
        return self._by_kind[kind][1]


class PublishError(Exception):
    """Messages could not be published after every retry. ``unsent`` lists their message ids."""

    def __init__(self, queue_url: str, unsent: Sequence[str], cause: str) -> None:
        super().__init__(f"{len(unsent)} message(s) not published to {queue_url}: {cause}")
        self.unsent = list(unsent)


@dataclass
class Publisher:
    """Publishes envelopes to one queue, in batches of up to 10, retrying failures with capped backoff.

    ``max_attempts`` bounds how long a caller waits while the broker is down; an HTTP handler that must
    answer fast (a webhook) uses few attempts and answers 503, a worker uses many.
    """

    transport: QueueTransport
    queue_url: str
    queue_label: str = "queue"
    max_attempts: int = 5
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    registry: CollectorRegistry | None = None

    async def publish(self, envelope: Envelope[Any], *, delay_s: int = 0) -> None:
        """Publish one envelope.

        Raises:
            PublishError: still failing after ``max_attempts``.
        """
        await self.publish_many([envelope], delay_s=delay_s)

    async def publish_many(self, envelopes: Sequence[Envelope[Any]], *, delay_s: int = 0) -> None:
        """Publish envelopes in batches of up to 10 entries and 256 KiB; only a batch's failed entries are retried.

        Raises:
            PublishError: a message is over SQS's size limit (not retried), or some are still failing after
                ``max_attempts``.
        """
        bodies = [encode(envelope) for envelope in envelopes]
        for envelope, body in zip(envelopes, bodies, strict=True):
            if len(body.encode()) > MAX_MESSAGE_BYTES:
                raise PublishError(self.queue_url, [str(envelope.message_id)], f"over {MAX_MESSAGE_BYTES} bytes")
        start = 0
        while start < len(envelopes):
            end, size = start, 0
            while end < len(envelopes) and end - start < MAX_BATCH:
                size += len(bodies[end].encode())
                if size > MAX_MESSAGE_BYTES and end > start:
                    break
                end += 1
            await self._send_chunk(envelopes[start:end], bodies[start:end], delay_s)
            start = end

    async def _send_chunk(self, envelopes: Sequence[Envelope[Any]], bodies: Sequence[str], delay_s: int) -> None:
        pending = {
            str(index): OutgoingMessage(entry_id=str(index), body=body, delay_s=delay_s)
            for index, body in enumerate(bodies)
        }
        kinds = {str(index): envelope.kind for index, envelope in enumerate(envelopes)}
        backoff = Backoff(initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)
        metrics = messaging_metrics(self.registry) if self.registry is not None else None
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                failed = await self.transport.send_batch(self.queue_url, list(pending.values()))
                last_problem = "entries refused by the broker"
            except TransportError as error:
                failed = list(pending)
                last_problem = str(error)
            for entry_id in set(pending) - set(failed):
                if metrics is not None:
                    metrics.published.labels(self.queue_label, kinds[entry_id]).inc()
                del pending[entry_id]
            if not pending:
                return
            if metrics is not None:
                metrics.publish_errors.labels(self.queue_label).inc()
            if attempt < self.max_attempts:
                delay = backoff.next_delay()
                _log.warning(
                    "publish_retry",
                    queue=self.queue_label,
                    failed=len(pending),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    problem=last_problem,
                )
                await asyncio.sleep(delay)
        unsent = [str(envelopes[int(entry_id)].message_id) for entry_id in pending]
        raise PublishError(self.queue_url, unsent, last_problem)


class CoalescingPublisher:
    """Publishes each caller's envelope in a batch shared with concurrent callers.

    A single SendMessage costs about as much broker time as a batch of ten, so under concurrency (webhook
    requests) calls that arrive within ``linger_s`` of each other share one SendMessageBatch; every caller is
    still answered only once its own entry was accepted, or with :class:`PublishError`. Run it for the
    lifetime of its users: ``async with coalescing.running(): ...``.
    """

    def __init__(self, publisher: Publisher, *, linger_s: float = 0.002, max_concurrent_batches: int = 4) -> None:
        self._publisher = publisher
        self._linger_s = linger_s
        self._pending: list[tuple[Envelope[Any], asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()
        self._batch_slots = asyncio.Semaphore(max_concurrent_batches)
        self._batches: set[asyncio.Task[None]] = set()
        self._closing = False

    async def publish(self, envelope: Envelope[Any]) -> None:
        """Publish one envelope; returns once the broker accepted it.

        Raises:
            PublishError: the broker did not accept it after the publisher's retries.
        """
        if self._closing:
            raise PublishError(self._publisher.queue_url, [str(envelope.message_id)], "publisher is closing")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A caller that gave up (a cancelled request) reads no failure; mark it retrieved.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending.append((envelope, future))
        self._arrived.set()
        await future

    @asynccontextmanager
    async def running(self) -> AsyncIterator["CoalescingPublisher"]:
        """Run the batching loop; on exit, send what is pending and wait for batches in flight."""
        loop_task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._closing = True
            self._arrived.set()
            await loop_task

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._pending and self._closing:
                break
            if len(self._pending) < MAX_BATCH and not self._closing:
                await asyncio.sleep(self._linger_s)
            self._arrived.clear()
            while self._pending:
                await self._batch_slots.acquire()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                task = asyncio.create_task(self._send(batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            if self._closing:
                break
        if self._batches:
            await asyncio.wait(set(self._batches))

    async def _send(self, batch: list[tuple[Envelope[Any], "asyncio.Future[None]"]]) -> None:
        try:
            await self._publisher.publish_many([envelope for envelope, _ in batch])
            unsent: set[str] = set()
            problem: BaseException | None = None
        except PublishError as error:
            unsent, problem = set(error.unsent), error
        except Exception as error:  # any fault must still answer every waiting caller
            unsent, problem = {str(envelope.message_id) for envelope, _ in batch}, error
        finally:
            self._batch_slots.release()
        for envelope, future in batch:
            if future.done():
                continue
            if str(envelope.message_id) in unsent:
                future.set_exception(PublishError(self._publisher.queue_url, [str(envelope.message_id)], str(problem)))
            else:
                future.set_result(None)
