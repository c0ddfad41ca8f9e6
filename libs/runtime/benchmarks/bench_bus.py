"""Message-bus benchmark behind ``make bench-bus``: raw aiobotocore against the runtime, on one broker, in one run.

Measures, so that the ratios compare like with like (same broker process, same client configuration, same
message bodies, same queue attributes):

* batched send: raw ``send_message_batch`` against ``Publisher.publish_many``, with the same number of
  concurrent senders, and once more with a single sequential sender;
* receive + delete: raw pollers (``receive_message`` + ``delete_message_batch``) against the runtime
  ``Consumer`` with the same number of concurrent receives, until the queue is empty;
* publish → handler latency, one message at a time, with a consumer already long-polling.

The machine's other load (and the broker sharing its cores) makes single measurements noisy, so every
throughput pair runs ``--rounds`` times, back to back, alternating which side goes first; a ratio is the
median of the per-round ratios.

It prints a table and always exits 0: the targets (runtime ≥ 0.8 of raw throughput, p50 latency < 30 ms) are
informational. Usage: ``python libs/runtime/benchmarks/bench_bus.py [--messages N] [--endpoint URL]``.
"""

import argparse
import asyncio
import json
import math
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from agent_grid_contracts.public_codec import encode
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Consumer, Handlers, MessageContext, Publisher
from agent_grid_runtime.public_transport import MAX_BATCH, QueueTransport, open_sqs_transport
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

_REPO_ROOT = Path(__file__).resolve().parents[3]
_TARGET_RATIO = 0.8
_TARGET_P50_MS = 30.0
_VISIBILITY_TIMEOUT_S = 60
_PHASE_TIMEOUT_S = 600.0
_LATENCY_TIMEOUT_S = 30.0
_WARMUP_MESSAGES = 200


@dataclass
class Pair:
    """One throughput measurement, raw and runtime, taken back to back in every round (msg/s)."""

    raw: list[float] = field(default_factory=list)
    runtime: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        # Per round: both sides of a pair ran one after the other, under the same load from the rest of the machine.
        return [runtime / raw for raw, runtime in zip(self.raw, self.runtime, strict=True)]


@dataclass
class Results:
    broker: str = ""
    send: Pair = field(default_factory=Pair)
    send_sequential: Pair = field(default_factory=Pair)
    drain: Pair = field(default_factory=Pair)
    latencies_ms: list[float] = field(default_factory=list)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="messages per throughput phase (default 5000)")
    parser.add_argument("--latency-samples", type=int, default=300, help="publish→handler samples (default 300)")
    parser.add_argument(
        "--concurrency", type=int, default=40, help="consumer max_in_flight; raw pollers = ceil(it / 10) (default 40)"
    )
    parser.add_argument("--senders", type=int, default=8, help="concurrent batch senders (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every throughput pair, alternating which side goes first"
    )
    parser.add_argument("--endpoint", help="use this SQS endpoint instead of starting the embedded broker")
    args = parser.parse_args()
    if min(args.messages, args.concurrency, args.senders, args.rounds) < 1 or args.latency_samples < 2:
        parser.error("--messages, --concurrency, --senders and --rounds must be ≥ 1, --latency-samples ≥ 2")
    return args


def _broker_version(endpoint: str) -> str:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as response:
            health = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return "unknown broker"
    return f"LocalStack {health.get('version', '?')}"


def _raw_client(endpoint: str) -> "AbstractAsyncContextManager[SQSClient]":
    # The runtime's client configuration (sqs_transport.create_sqs_client), so only the runtime's code differs.
    config = AioConfig(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=40, max_pool_connections=50
    )
    return get_session().create_client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    )


def _chunks[T](items: Sequence[T]) -> list[Sequence[T]]:
    return [items[start : start + MAX_BATCH] for start in range(0, len(items), MAX_BATCH)]


async def _concurrently[T](chunks: Sequence[T], workers: int, work: Callable[[T], Awaitable[None]]) -> float:
    """Run ``work`` over every chunk with ``workers`` concurrent tasks; return the elapsed seconds."""
    pending = iter(chunks)

    async def worker() -> None:
        for chunk in pending:
            await work(chunk)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
    return time.perf_counter() - started


async def _raw_send(client: "SQSClient", queue_url: str, bodies: Sequence[str], senders: int) -> float:
    async def send(batch: Sequence[str]) -> None:
        response = await client.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(batch)]
        )
        if response.get("Failed"):
            raise RuntimeError(f"raw send refused: {response['Failed']}")

    return len(bodies) / await _concurrently(_chunks(bodies), senders, send)


async def _raw_drain(client: "SQSClient", queue_url: str, expected: int, pollers: int) -> float:
    deleted = 0
    finished_at = 0.0

    async def poll() -> None:
        nonlocal deleted, finished_at
        while deleted < expected:
            # The same request the runtime's transport makes.
            response = await client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=MAX_BATCH,
                WaitTimeSeconds=1,
                VisibilityTimeout=_VISIBILITY_TIMEOUT_S,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                continue
            result = await client.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)],
            )
            deleted += len(result.get("Successful", []))
            if deleted >= expected and not finished_at:
                finished_at = time.perf_counter()

    started = time.perf_counter()
    async with asyncio.timeout(_PHASE_TIMEOUT_S), asyncio.TaskGroup() as group:
        for _ in range(pollers):
            group.create_task(poll())
    return expected / (finished_at - started)


async def _runtime_send(
    transport: QueueTransport, queue_url: str, envelopes: Sequence[Envelope[Nudge]], senders: int
) -> float:
    publisher = Publisher(transport=transport, queue_url=queue_url, queue_label="nudges")
    if senders == 1:
        started = time.perf_counter()
        await publisher.publish_many(envelopes)
        return len(envelopes) / (time.perf_counter() - started)

    async def send(batch: Sequence[Envelope[Nudge]]) -> None:
        await publisher.publish_many(batch)

    return len(envelopes) / await _concurrently(_chunks(envelopes), senders, send)


async def _until(event: asyncio.Event, run: "asyncio.Task[None]", timeout_s: float) -> None:
    """Wait for ``event``; fail if the consumer's task ends first or the timeout passes."""
    waiter = asyncio.create_task(event.wait())
    try:
        done, _ = await asyncio.wait({waiter, run}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if run in done:
        run.result()  # re-raises the consumer's failure
        raise RuntimeError("the consumer stopped on its own")
    if waiter not in done:
        raise TimeoutError(f"nothing after {timeout_s:.0f}s")


async def _stop(consumer: Consumer, run: "asyncio.Task[None]") -> None:
    consumer.stop()
    await run


async def _runtime_drain(
    transport: QueueTransport, queues: QueueUrls, envelopes: Sequence[Envelope[Nudge]], concurrency: int
) -> float:
    expected = {envelope.message_id for envelope in envelopes}
    seen: set[UUID] = set()
    all_handled = asyncio.Event()

    async def count(envelope: Envelope[Nudge], _context: MessageContext) -> None:
        seen.add(envelope.message_id)
        if len(seen) >= len(expected):
            all_handled.set()

    consumer = Consumer(
        transport,
        queue_url=queues.nudges.url,
        dead_letter_url=queues.nudges.dead_letter_url,
        handlers=Handlers().on(Nudge, count),
        settings=ConsumerSettings(max_in_flight=concurrency, wait_time_s=1, visibility_timeout_s=_VISIBILITY_TIMEOUT_S),
        queue_label="nudges",
    )
    started = time.perf_counter()
    run = asyncio.create_task(consumer.run())
    try:
        await _until(all_handled, run, _PHASE_TIMEOUT_S)
        # Handled is not acknowledged: the deletes are batched behind the handlers. Done means an empty queue.
        while True:
            depth = await transport.depth(queues.nudges.url)
            if depth.visible + depth.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        await _stop(consumer, run)
    if seen != expected:
        raise RuntimeError(f"the consumer handled {len(seen)} of {len(expected)} messages")
    return len(expected) / elapsed


async def _latency(transport: QueueTransport, queues: QueueUrls, samples: int) -> list[float]:
    sent_at: dict[UUID, float] = {}
    latencies_ms: list[float] = []
    arrived = asyncio.Event()

    async def measure(envelope: Envelope[Nudge], _context: MessageContext) -> None:
        latencies_ms.append((time.perf_counter() - sent_at[envelope.message_id]) * 1000)
        arrived.set()

    consumer = Consumer(
        transport,
        queue_url=queues.lifecycle.url,
        dead_letter_url=queues.lifecycle.dead_letter_url,
        handlers=Handlers().on(Nudge, measure),
        settings=ConsumerSettings(max_in_flight=10, wait_time_s=20, visibility_timeout_s=_VISIBILITY_TIMEOUT_S),
        queue_label="lifecycle",
    )
    publisher = Publisher(transport=transport, queue_url=queues.lifecycle.url, queue_label="lifecycle")
    run = asyncio.create_task(consumer.run())
    try:
        await _until(consumer.receiving, run, _LATENCY_TIMEOUT_S)
        await asyncio.sleep(0.5)  # let the broker register the long poll
        for number in range(1, samples + 1):
            envelope = wrap(Nudge(issue=IssueRef(repo="o/r", number=number)), producer="bench")
            arrived.clear()
            sent_at[envelope.message_id] = time.perf_counter()
            await publisher.publish(envelope)
            await _until(arrived, run, _LATENCY_TIMEOUT_S)
    finally:
        await _stop(consumer, run)
    return latencies_ms


async def _warm_up(client: "SQSClient", queue_url: str, bodies: Sequence[str]) -> None:
    """Exercise the broker's code paths (and the client's connections) before anything is timed."""
    await _raw_send(client, queue_url, bodies, 4)
    await _raw_drain(client, queue_url, len(bodies), 4)


async def _pair(pair: Pair, raw_first: bool, raw: Awaitable[float], runtime: Awaitable[float]) -> None:
    if raw_first:
        pair.raw.append(await raw)
        pair.runtime.append(await runtime)
    else:
        pair.runtime.append(await runtime)
        pair.raw.append(await raw)


async def _bootstrap(transport: QueueTransport, prefix: str) -> QueueUrls:
    return await resolve_queues(transport, QueueSettings(prefix=prefix, bootstrap=True))


async def _delete_queues(client: "SQSClient", *topologies: QueueUrls) -> None:
    for topology in topologies:
        for pair in (topology.nudges, topology.launches, topology.lifecycle):
            for url in (pair.url, pair.dead_letter_url):
                await client.delete_queue(QueueUrl=url)


async def _round(
    transport: QueueTransport,
    client: "SQSClient",
    args: argparse.Namespace,
    envelopes: Sequence[Envelope[Nudge]],
    results: Results,
    raw_first: bool,
) -> None:
    """Every throughput pair once, on fresh queues with the same topology (attributes, redrive policy) per side."""
    bodies = [encode(envelope) for envelope in envelopes]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    raw, runtime = await _bootstrap(transport, f"{prefix}-raw"), await _bootstrap(transport, f"{prefix}-rt")
    try:
        await _pair(
            results.send,
            raw_first,
            _raw_send(client, raw.nudges.url, bodies, args.senders),
            _runtime_send(transport, runtime.nudges.url, envelopes, args.senders),
        )
        await _pair(
            results.send_sequential,
            raw_first,
            _raw_send(client, raw.launches.url, bodies, 1),
            _runtime_send(transport, runtime.launches.url, envelopes, 1),
        )
        await _pair(
            results.drain,
            raw_first,
            _raw_drain(client, raw.nudges.url, len(bodies), math.ceil(args.concurrency / MAX_BATCH)),
            _runtime_drain(transport, runtime, envelopes, args.concurrency),
        )
    finally:
        await _delete_queues(client, raw, runtime)


async def _run(endpoint: str, args: argparse.Namespace, results: Results) -> None:
    envelopes = [
        wrap(Nudge(issue=IssueRef(repo="o/r", number=i)), producer="bench") for i in range(1, args.messages + 1)
    ]
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as transport, _raw_client(endpoint) as client:
        scratch = await _bootstrap(transport, f"bench-{uuid.uuid4().hex[:8]}-aux")
        try:
            await _warm_up(client, scratch.launches.url, [encode(e) for e in envelopes[:_WARMUP_MESSAGES]])
            for number in range(1, args.rounds + 1):
                raw_first = number % 2 == 1
                print(f"round {number}/{args.rounds} ({'raw' if raw_first else 'runtime'} first) …", flush=True)
                await _round(transport, client, args, envelopes, results, raw_first)
            print(f"latency over {args.latency_samples} messages …", flush=True)
            results.latencies_ms = await _latency(transport, scratch, args.latency_samples)
        finally:
            await _delete_queues(client, scratch)


def _status(met: bool) -> str:
    return "met" if met else "NOT MET"


def _print_table(results: Results, args: argparse.Namespace, endpoint: str) -> None:
    pollers = math.ceil(args.concurrency / MAX_BATCH)
    print()
    print(f"broker:   {results.broker} at {endpoint}")
    print(
        f"messages: {args.messages} per phase; {args.senders} senders; {pollers} receive pollers / "
        f"max_in_flight {args.concurrency}; latency samples {args.latency_samples}"
    )
    print(f"rounds:   {args.rounds}, alternating which side goes first; ratio = median of the per-round ratios")
    print()
    header = (
        f"{'throughput (msg/s, median of rounds)':<38}{'raw':>10}{'runtime':>10}{'ratio':>8}{'range':>12}"
        f"   {'target':<10}status"
    )
    print(header)
    print("-" * len(header))
    rows = [
        (f"batched send ({args.senders} senders)", results.send, True),
        ("batched send (1 sender, publish_many)", results.send_sequential, False),
        (f"receive + delete ({pollers} pollers)", results.drain, True),
    ]
    for label, pair, targeted in rows:
        ratios = pair.ratios()
        ratio = statistics.median(ratios)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        target, status = (f"≥ {_TARGET_RATIO}", _status(ratio >= _TARGET_RATIO)) if targeted else ("-", "")
        raw, runtime = statistics.median(pair.raw), statistics.median(pair.runtime)
        print(f"{label:<38}{raw:>10.0f}{runtime:>10.0f}{ratio:>8.2f}{spread:>12}   {target:<10}{status}".rstrip())
    print()
    quantiles = statistics.quantiles(results.latencies_ms, n=100, method="inclusive")
    latency = [
        ("p50", quantiles[49]),
        ("p90", quantiles[89]),
        ("p99", quantiles[98]),
        ("max", max(results.latencies_ms)),
    ]
    header = f"{'publish → handler latency (ms)':<38}{'':>10}{'runtime':>10}{'':>20}   {'target':<10}status"
    print(header)
    print("-" * len(header))
    for label, value in latency:
        target, status = (
            (f"< {_TARGET_P50_MS:.0f} ms", _status(value < _TARGET_P50_MS)) if label == "p50" else ("-", "")
        )
        print(f"{label:<38}{'':>10}{value:>10.1f}{'':>20}   {target:<10}{status}".rstrip())
    print()
    print("targets are informational; the benchmark always exits 0")


async def main() -> None:
    args = _parse_args()
    configure_logging("WARNING", "console")
    broker: EmbeddedBroker | None = None
    endpoint: str = args.endpoint
    if not endpoint:
        broker = EmbeddedBroker.in_repo(_REPO_ROOT, port=find_free_port(), name="bench")
        endpoint = broker.endpoint_url
    try:
        if broker is not None:
            print(f"starting the embedded broker on {endpoint} …", flush=True)
            await asyncio.to_thread(broker.start)
        results = Results(broker=await asyncio.to_thread(_broker_version, endpoint))
        await _run(endpoint, args, results)
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    _print_table(results, args, endpoint)


if __name__ == "__main__":
    asyncio.run(main())
