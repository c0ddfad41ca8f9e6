"""Test doubles other packages' unit tests may use. Not for production code.

``InMemoryBroker`` implements :class:`~agent_grid_runtime.public_transport.QueueTransport` with SQS's
semantics that matter to consumers: visibility timeouts, receive counts, redrive to a dead-letter queue
after ``maxReceiveCount`` receives, delays, and long polling. Integration tests use the real broker.
"""

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent_grid_runtime.consumer_loop import Consumer
from agent_grid_runtime.public_transport import OutgoingMessage, QueueDepth, ReceivedMessage, TransportError

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "InMemoryBroker", "StoredMessage", "run_consumer_until"]

# The browser tests' Chromium: Debian's package (`make browser`), since playwright cannot download its own here,
# run headless as root in a sandboxless machine, and kept off the network but for the pages it is sent to.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class StoredMessage:
    """A message as the in-memory broker holds it."""

    transport_id: str
    body: str
    attributes: Mapping[str, str]
    visible_at: float
    receive_count: int = 0
    receipt_handle: str | None = None
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the broker accepted it (SQS's ``SentTimestamp``); tests may backdate it."""


@dataclass
class _Queue:
    name: str
    attributes: dict[str, str]
    messages: list[StoredMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class InMemoryBroker:
    """An SQS-like broker in process memory. ``fail_next(n)`` makes the next ``n`` calls raise, to test outages."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self._failures_left = 0
        self.calls: list[str] = []
        """Names of the operations called, in order (for assertions on batching)."""

    def fail_next(self, count: int) -> None:
        """Make the next ``count`` operations raise :class:`TransportError`."""
        self._failures_left = count

    def messages(self, queue_url: str) -> list[StoredMessage]:
        """Every message in the queue, visible or not."""
        return list(self._queue(queue_url).messages)

    def attributes(self, queue_url: str) -> dict[str, str]:
        """The attributes the queue was created with."""
        return dict(self._queue(queue_url).attributes)

    def bodies(self, queue_url: str) -> list[str]:
        """The bodies of every message in the queue."""
        return [message.body for message in self._queue(queue_url).messages]

    async def send_batch(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """See QueueTransport."""
        self._call("send_batch")
        queue = self._queue(queue_url)
        now = self._now()
        for message in messages:
            queue.messages.append(
                StoredMessage(
                    transport_id=str(next(self._ids)),
                    body=message.body,
                    attributes=dict(message.attributes),
                    visible_at=now + message.delay_s,
                )
            )
        queue.arrived.set()
        return []

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_time_s: int, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        """See QueueTransport."""
        self._call("receive")
        queue = self._queue(queue_url)
        deadline = self._now() + wait_time_s
        while True:
            taken = self._take(queue, max_messages, visibility_timeout_s)
            remaining = deadline - self._now()
            if taken or remaining <= 0:
                return taken
            queue.arrived.clear()
            next_visible = min((m.visible_at for m in queue.messages), default=deadline) - self._now()
            try:
                async with asyncio.timeout(max(0.001, min(remaining, next_visible))):
                    await queue.arrived.wait()
            except TimeoutError:
                pass

    async def delete_batch(self, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
        """See QueueTransport."""
        self._call("delete_batch")
        queue = self._queue(queue_url)
        wanted = set(receipt_handles)
        queue.messages = [m for m in queue.messages if m.receipt_handle not in wanted]
        return []

    async def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        """See QueueTransport."""
        self._call("change_visibility")
        queue = self._queue(queue_url)
        for message in queue.messages:
            if message.receipt_handle == receipt_handle:
                message.visible_at = self._now() + timeout_s
                queue.arrived.set()
                return
        raise TransportError("receipt handle is no longer valid")

    async def ensure_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        """See QueueTransport."""
        self._call("ensure_queue")
        url = f"memory://{name}"
        queue = self._queues.setdefault(url, _Queue(name=name, attributes={}))
        queue.attributes.update(attributes)
        return url

    async def queue_url(self, name: str) -> str:
        """See QueueTransport."""
        self._call("queue_url")
        url = f"memory://{name}"
        if url not in self._queues:
            raise TransportError(f"queue {name!r} does not exist")
        return url

    async def queue_arn(self, queue_url: str) -> str:
        """See QueueTransport."""
        return f"arn:memory:{self._queue(queue_url).name}"

    async def depth(self, queue_url: str) -> QueueDepth:
        """See QueueTransport."""
        self._call("depth")
        queue = self._queue(queue_url)
        now = self._now()
        visible = sum(1 for m in queue.messages if m.visible_at <= now and m.receipt_handle is None)
        delayed = sum(1 for m in queue.messages if m.visible_at > now and m.receipt_handle is None)
        in_flight = sum(1 for m in queue.messages if m.receipt_handle is not None and m.visible_at > now)
        return QueueDepth(visible=visible, in_flight=in_flight, delayed=delayed)

    def _take(self, queue: _Queue, max_messages: int, visibility_timeout_s: int) -> list[ReceivedMessage]:
        now = self._now()
        redrive = json.loads(queue.attributes.get("RedrivePolicy", "null") or "null")
        taken: list[ReceivedMessage] = []
        for message in list(queue.messages):
            if len(taken) == max_messages:
                break
            if message.visible_at > now:
                continue
            if redrive and message.receive_count >= int(redrive["maxReceiveCount"]):
                queue.messages.remove(message)
                target = self._queue_by_arn(redrive["deadLetterTargetArn"])
                message.receipt_handle, message.visible_at = None, now
                target.messages.append(message)
                target.arrived.set()
                continue
            message.receive_count += 1
            message.receipt_handle = f"rh-{message.transport_id}-{message.receive_count}"
            message.visible_at = now + visibility_timeout_s
            taken.append(
                ReceivedMessage(
                    transport_id=message.transport_id,
                    receipt_handle=message.receipt_handle,
                    body=message.body,
                    receive_count=message.receive_count,
                    attributes=dict(message.attributes),
                    sent_at=message.sent_at,
                )
            )
        return taken

    def _queue(self, queue_url: str) -> _Queue:
        try:
            return self._queues[queue_url]
        except KeyError:
            raise TransportError(f"queue {queue_url!r} does not exist") from None

    def _queue_by_arn(self, arn: str) -> _Queue:
        return self._queue(f"memory://{arn.removeprefix('arn:memory:')}")

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        if self._failures_left > 0:
            self._failures_left -= 1
            raise TransportError(f"injected failure in {operation}")

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


async def run_consumer_until(consumer: Consumer, done: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Run ``consumer`` until ``done()`` holds (polled every 10 ms), then stop it and wait for its drain.

    Raises:
        TimeoutError: ``done()`` did not hold within ``timeout_s``; the consumer is still stopped and drained.
    """
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():  # noqa: ASYNC110 - `done` reads state no Event can signal (a queue, a file)
                await asyncio.sleep(0.01)
    finally:
        consumer.stop()
        await task
