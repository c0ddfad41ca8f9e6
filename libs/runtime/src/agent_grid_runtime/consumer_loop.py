"""The one consumer loop every service runs (public through ``public_sqs.Consumer``)."""

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from agent_grid_contracts.public_codec import ContractError, decode
from prometheus_client import CollectorRegistry

from agent_grid_runtime.metrics import MessagingMetrics, messaging_metrics
from agent_grid_runtime.outcomes import DropMessage, MessageContext, RetryLater
from agent_grid_runtime.public_backoff import Backoff
from agent_grid_runtime.public_settings import ConsumerSettings
from agent_grid_runtime.public_transport import (
    MAX_BATCH,
    OutgoingMessage,
    QueueTransport,
    ReceivedMessage,
    TransportError,
)

if TYPE_CHECKING:
    from agent_grid_runtime.public_sqs import Handlers

_log = structlog.get_logger("agent_grid_runtime.consumer")

_MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str
    reason: str | None = None
    error: BaseException | None = None


class Consumer:
    """Receives from one queue and dispatches each message to its handler, with bounded concurrency.

    It receives only when a handler slot is free, asking for ``min(10, free slots)`` messages per long
    poll; every message holds its slot until its outcome is applied. ``stop()`` starts a drain: no more
    receives, in-flight handlers get ``drain_timeout_s`` to finish, the rest are cancelled and come back
    after their visibility timeout. Nothing handled is left unacknowledged on the way out.
    """

    def __init__(
        self,
        transport: QueueTransport,
        *,
        queue_url: str,
        dead_letter_url: str,
        handlers: "Handlers",
        settings: ConsumerSettings,
        queue_label: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._transport = transport
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url
        self._handlers = handlers
        self._settings = settings
        self._label = queue_label
        self._metrics: MessagingMetrics = messaging_metrics(registry or CollectorRegistry())
        self._stop_requested = asyncio.Event()
        self._free_slots = settings.max_in_flight
        self._reserved_for_receives = 0
        self._slot_freed = asyncio.Event()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._receive_concurrency = settings.receive_concurrency or math.ceil(settings.max_in_flight / MAX_BATCH)
        # A poller's share of the slots: what it waits for, ``batch_linger_s`` at most, when its consumer is busy.
        self._full_receive = min(MAX_BATCH, math.ceil(settings.max_in_flight / self._receive_concurrency))
        # Whether the last receive got all it asked for: the queue has a backlog, and lingering fills calls. Without
        # one, nothing lingers: a message is received and acknowledged as soon as it can be.
        self._backlog = False
        # One delete call per poller in flight: with a single one, the deleter was the bottleneck (busy 98% of
        # a drain, bench-bus), and slots are held until their delete completes.
        self._deleter = _DeleteBatcher(
            transport,
            queue_url,
            max_concurrent_flushes=self._receive_concurrency,
            linger_s=settings.batch_linger_s,
            linger_while=lambda: self._backlog,
            full_batch=min(MAX_BATCH, settings.max_in_flight),
        )
        self.receiving = asyncio.Event()
        """Set once the first receive call has been issued: the consumer is long-polling."""
        self._started = False
        self.running = False
        """True between the start of ``run()`` and the end of its drain."""

    @property
    def in_flight(self) -> int:
        """Messages being handled now."""
        return len(self._handler_tasks)

    @property
    def busy_slots(self) -> int:
        """Slots taken by messages being handled, or held past their handler's return (``hold_slot``)."""
        return self._settings.max_in_flight - self._free_slots - self._reserved_for_receives

    def stop(self) -> None:
        """Request a graceful drain. Idempotent, and safe to call before ``run()``."""
        self._stop_requested.set()

    async def run(self) -> None:
        """Consume until ``stop()``; then drain and return. A consumer runs once; build a new one to restart."""
        if self._started:
            raise RuntimeError("a Consumer runs once: build a new one")
        self._started = True
        if self._stop_requested.is_set():
            return
        concurrency = self._receive_concurrency
        _log.info(
            "consumer_started",
            queue=self._label,
            max_in_flight=self._settings.max_in_flight,
            receive_concurrency=concurrency,
        )
        deleter_task = asyncio.create_task(self._deleter.run(), name=f"{self._label}-deleter")
        self.running = True
        try:
            async with asyncio.TaskGroup() as group:
                pollers = [
                    group.create_task(self._poll(group), name=f"{self._label}-poller") for _ in range(concurrency)
                ]
                await self._stop_requested.wait()
                for poller in pollers:
                    poller.cancel()
                await self._drain()
        finally:
            self._deleter.close()
            await deleter_task
            self.running = False
            _log.info("consumer_stopped", queue=self._label)

    async def _drain(self) -> None:
        if not self._handler_tasks:
            return
        _log.info("consumer_draining", queue=self._label, in_flight=len(self._handler_tasks))
        try:
            async with asyncio.timeout(self._settings.drain_timeout_s):
                await asyncio.wait(set(self._handler_tasks))
        except TimeoutError:
            _log.warning("drain_timeout", queue=self._label, cancelled=len(self._handler_tasks))
            for task in self._handler_tasks:
                task.cancel()

    async def _poll(self, group: asyncio.TaskGroup) -> None:
        backoff = Backoff(initial_s=0.5, max_s=30.0)
        while True:
            reserved = await self._reserve_slots()
            try:
                self.receiving.set()
                messages = await self._transport.receive(
                    self._queue_url,
                    max_messages=reserved,
                    wait_time_s=self._settings.wait_time_s,
                    visibility_timeout_s=self._settings.visibility_timeout_s,
                )
            except TransportError as error:
                self._reserved_for_receives -= reserved
                self._release_slots(reserved)
                self._metrics.receive_errors.labels(self._label).inc()
                delay = backoff.next_delay()
                _log.warning("receive_failed", queue=self._label, error=str(error), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._reserved_for_receives -= reserved
                self._release_slots(reserved)
                raise
            backoff.reset()
            self._backlog = len(messages) >= reserved
            self._reserved_for_receives -= reserved
            self._release_slots(reserved - len(messages))
            self._metrics.oldest_age.labels(self._label).set(_oldest_age_s(messages))
            # No await between receiving and spawning, so nothing received is stranded here. (A stop that cancels
            # a long poll whose response is already on the wire strands those messages until their visibility
            # timeout: delayed, not lost; waiting out every long poll instead would slow each stop by up to 20 s.)
            for message in messages:
                task = group.create_task(self._process(message))
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_tasks.discard)

    async def _reserve_slots(self) -> int:
        await self._slots_free(1)
        if self._backlog and self._free_slots < self._full_receive and self._settings.batch_linger_s > 0:
            # Busy with a backlog: a receive for the one slot just freed costs a call as a full one does (botocore,
            # aiohttp and the broker's work per call; three receives a message where the raw relay makes one per
            # ten, make bench-coordinator). Wait a little for more slots, then take what there is.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.batch_linger_s):
                    await self._slots_free(self._full_receive)
            await self._slots_free(1)  # another poller may have taken them meanwhile
        reserved = min(MAX_BATCH, self._free_slots)
        self._free_slots -= reserved
        self._reserved_for_receives += reserved
        return reserved

    async def _slots_free(self, count: int) -> None:
        while self._free_slots < count:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def _release_slots(self, count: int) -> None:
        self._free_slots += count
        if self._free_slots > 0:
            self._slot_freed.set()

    async def _process(self, message: ReceivedMessage) -> None:
        started = time.perf_counter()
        kind = "unknown"
        message_id: str | None = None
        result = _Result("cancelled")
        slot = _Slot(self._release_slots)
        self._metrics.in_flight.labels(self._label).inc()
        with structlog.contextvars.bound_contextvars(
            queue=self._label, transport_id=message.transport_id, receive_count=message.receive_count
        ):
            try:
                try:
                    envelope = decode(message.body, accept=self._handlers.body_types)
                except ContractError as error:
                    result = await self._dead_letter(message, error.reason)
                    return
                kind, message_id = envelope.kind, str(envelope.message_id)
                with structlog.contextvars.bound_contextvars(
                    message_id=message_id, kind=kind, correlation_id=envelope.correlation_id
                ):
                    result = await self._dispatch(message, envelope, slot)
            except Exception as error:  # handler tasks share a TaskGroup: one escape would cancel all
                result = _Result("failed", f"{type(error).__name__}: {error}", error)
            finally:
                slot.handler_done(kept=result.outcome.startswith("handled"))
                duration_s = time.perf_counter() - started
                self._metrics.in_flight.labels(self._label).dec()
                self._metrics.handled.labels(self._label, kind, result.outcome).inc()
                self._metrics.duration.labels(self._label, kind).observe(duration_s)
                self._log_outcome(message, kind, message_id, result, duration_s)

    async def _dispatch(self, message: ReceivedMessage, envelope: Any, slot: "_Slot") -> _Result:
        context = MessageContext(
            queue=self._label,
            transport_id=message.transport_id,
            receive_count=message.receive_count,
            _hold_slot=slot.hold,
        )
        handler_done = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_invisible(message, handler_done))
        try:
            await self._handlers.handler_for(envelope.kind)(envelope, context)
        except RetryLater as retry:
            await self._stop_heartbeat(heartbeat, handler_done)
            return await self._apply(self._retry_later(message, retry.delay_s), "retry_later", retry.reason)
        except DropMessage as drop:
            await self._stop_heartbeat(heartbeat, handler_done)
            return await self._dead_letter(message, drop.reason)
        except Exception as error:  # the boundary: log once, leave the message for redelivery
            await self._stop_heartbeat(heartbeat, handler_done)
            return _Result("failed", f"{type(error).__name__}: {error}", error)
        except BaseException:
            heartbeat.cancel()
            raise
        await self._stop_heartbeat(heartbeat, handler_done)
        return await self._apply(self._deleter.delete(message.receipt_handle), "handled")

    @staticmethod
    async def _stop_heartbeat(heartbeat: "asyncio.Task[None]", handler_done: asyncio.Event) -> None:
        # Let an extension already on the wire finish before the outcome is applied: a ChangeMessageVisibility
        # landing after RetryLater's would silently replace the requested delay.
        handler_done.set()
        await heartbeat

    async def _apply(self, action: Any, outcome: str, reason: str | None = None) -> _Result:
        try:
            await action
        except TransportError as error:
            # The message will be redelivered; handlers are idempotent by dedupe key.
            return _Result(f"{outcome}_ack_failed", str(error))
        return _Result(outcome, reason)

    async def _retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        await self._transport.change_visibility(self._queue_url, message.receipt_handle, delay_s)

    async def _dead_letter(self, message: ReceivedMessage, reason: str) -> _Result:
        attributes = {
            "dead_letter_reason": reason[:_MAX_REASON_CHARS] or "unspecified",
            "source_queue": self._label,
            "original_transport_id": message.transport_id,
            "receive_count": str(message.receive_count),
        }
        dead_letter = OutgoingMessage(entry_id="0", body=message.body, attributes=attributes)

        async def send_then_delete() -> None:
            # Send first, then delete: a crash between the two leaves a duplicate in the DLQ, never a loss.
            if await self._transport.send_batch(self._dead_letter_url, [dead_letter]):
                raise TransportError("dead-letter queue refused the message")
            await self._deleter.delete(message.receipt_handle)

        return await self._apply(send_then_delete(), "dead_lettered", reason)

    async def _keep_invisible(self, message: ReceivedMessage, handler_done: asyncio.Event) -> None:
        # The visibility heartbeat: long handlers keep their message hidden instead of racing a redelivery.
        # Extending every third of the timeout leaves room for a failed extension to be retried before the
        # message reappears (a second copy of a running launch would start a second agent).
        timeout_s = self._settings.visibility_timeout_s
        interval_s = max(0.2, timeout_s / 3)
        retry_s = max(0.2, min(2.0, timeout_s / 10))
        wait_s = interval_s
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    await handler_done.wait()
                return
            except TimeoutError:
                pass
            try:
                await self._transport.change_visibility(self._queue_url, message.receipt_handle, timeout_s)
                wait_s = interval_s
            except TransportError as error:
                _log.warning("visibility_extend_failed", error=str(error), retry_in_s=retry_s)
                wait_s = retry_s

    def _log_outcome(
        self, message: ReceivedMessage, kind: str, message_id: str | None, result: _Result, duration_s: float
    ) -> None:
        # The canonical line stands on its own: it names the message even where contextvars are not merged.
        fields: dict[str, Any] = {
            "queue": self._label,
            "kind": kind,
            "message_id": message_id,
            "transport_id": message.transport_id,
            "receive_count": message.receive_count,
            "outcome": result.outcome,
            "duration_ms": round(duration_s * 1000, 2),
        }
        if result.reason:
            fields["reason"] = result.reason
        if result.outcome == "handled":
            _log.info("message_processed", **fields)
        elif result.error is not None:
            _log.error("message_processed", exc_info=result.error, **fields)
        else:
            _log.warning("message_processed", **fields)


def _oldest_age_s(messages: Sequence[ReceivedMessage]) -> float:
    # A consumer that gets messages as soon as they are sent sees ages near 0; a backlog (or a message retried
    # for a while: SentTimestamp is its first send) shows up as a growing age. An empty receive means nothing
    # was waiting. While every slot is busy the consumer does not receive, so the last value stays: alert on
    # the queue depth as well.
    now = datetime.now(UTC)
    ages = [(now - message.sent_at).total_seconds() for message in messages if message.sent_at is not None]
    return max([0.0, *ages])


class _Slot:
    """One message's claim on a consumer slot, which a handler may hold beyond its own return."""

    def __init__(self, release: Callable[[int], None]) -> None:
        self._release = release
        self._held = False
        self._released = False

    def hold(self) -> Callable[[], None]:
        self._held = True
        return self.release

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release(1)

    def handler_done(self, *, kept: bool) -> None:
        # A hold counts only for a handled message: a failed or retried one leaves nothing running.
        if not (self._held and kept):
            self.release()


class _DeleteBatcher:
    """Coalesces deletes from concurrent handlers into DeleteMessageBatch calls of up to 10.

    Batching comes from load: while the allowed batches are in flight, the next accumulate; with ``linger_s``,
    while ``linger_while()`` (the queue has a backlog), a batch short of full (ten, or fewer when fewer fit in
    flight) also waits that long for company; the slots of its messages are held meanwhile.
    Callers await through ``asyncio.shield`` so that an ack in progress survives a cancelled handler, and
    ``run`` returns only once every requested delete has been attempted.
    """

    def __init__(
        self,
        transport: QueueTransport,
        queue_url: str,
        *,
        max_concurrent_flushes: int,
        linger_s: float = 0.0,
        linger_while: Callable[[], bool] = lambda: True,
        full_batch: int = MAX_BATCH,
    ) -> None:
        self._transport = transport
        self._linger_s = linger_s
        self._linger_while = linger_while
        self._full_batch = full_batch
        self._queue_url = queue_url
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._flush_slots = asyncio.Semaphore(max_concurrent_flushes)
        self._flushes: set[asyncio.Task[None]] = set()

    async def delete(self, receipt_handle: str) -> None:
        if self._closing:
            raise TransportError("consumer is closing; message left for redelivery")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # If the waiting handler is cancelled, nobody reads a failure; mark it retrieved (it is logged by outcome).
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending.append((receipt_handle, future))
        self._wakeup.set()
        await asyncio.shield(future)

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._linger_s and self._linger_while():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        while len(self._pending) < self._full_batch and not self._closing:
                            self._wakeup.clear()
                            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._flush_slots.acquire()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                flush = asyncio.create_task(self._flush_then_release(batch))
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
            if self._closing:
                if self._flushes:
                    await asyncio.wait(set(self._flushes))
                if not self._pending:
                    return
                self._wakeup.set()

    async def _flush_then_release(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        try:
            await self._flush(batch)
        except Exception as error:  # any fault must still answer the waiting handlers
            for _, future in batch:
                if not future.done():
                    future.set_exception(TransportError(f"delete failed: {type(error).__name__}: {error}"))
        finally:
            self._flush_slots.release()

    async def _flush(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        handles = [handle for handle, _ in batch]
        backoff = Backoff(initial_s=0.1, max_s=2.0)
        failed: set[str] = set(handles)
        problem = ""
        for attempt in range(3):
            try:
                failed = set(await self._transport.delete_batch(self._queue_url, [h for h in handles if h in failed]))
            except TransportError as error:
                problem = str(error)
            else:
                problem = "broker refused the delete"
            if not failed or attempt == 2:
                break
            await asyncio.sleep(backoff.next_delay())
        for handle, future in batch:
            if future.done():
                continue
            if handle in failed:
                future.set_exception(TransportError(f"delete failed: {problem}"))
            else:
                future.set_result(None)
