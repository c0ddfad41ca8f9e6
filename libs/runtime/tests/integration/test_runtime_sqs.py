import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Consumer, DropMessage, Handlers, MessageContext, Publisher
from agent_grid_runtime.public_testing import run_consumer_until
from agent_grid_runtime.public_transport import OutgoingMessage, QueueTransport, open_sqs_transport
from structlog.testing import capture_logs

pytestmark = pytest.mark.connected

MakeQueues = Callable[..., Awaitable[QueueUrls]]
REPO_ROOT = Path(__file__).parents[4]


def nudge(number: int) -> Envelope[Nudge]:
    return wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=number)), producer="test")


def consumer_for(
    sqs: QueueTransport,
    queues: QueueUrls,
    handler: Callable[[Envelope[Nudge], MessageContext], Awaitable[None]],
    **settings: Any,
) -> Consumer:
    defaults: dict[str, Any] = {"wait_time_s": 1, "visibility_timeout_s": 5, "drain_timeout_s": 5}
    return Consumer(
        sqs,
        queue_url=queues.nudges.url,
        dead_letter_url=queues.nudges.dead_letter_url,
        handlers=Handlers().on(Nudge, handler),
        settings=ConsumerSettings(**{**defaults, **settings}),
        queue_label="nudges",
    )


async def drain_queue(sqs: QueueTransport, url: str, *, wait_time_s: int = 1) -> list[Any]:
    received = []
    while batch := await sqs.receive(url, max_messages=10, wait_time_s=wait_time_s, visibility_timeout_s=30):
        received.extend(batch)
    return received


async def test_bootstrap_is_idempotent_and_wires_each_queue_to_its_dead_letter_queue(
    sqs: QueueTransport, queue_settings: QueueSettings
) -> None:
    first = await resolve_queues(sqs, queue_settings)
    second = await resolve_queues(sqs, queue_settings)
    converged = await resolve_queues(sqs, queue_settings.model_copy(update={"max_receive_count": 7}))

    assert first == second == converged
    for pair in (first.nudges, first.launches, first.lifecycle):
        attributes = await sqs._attributes(pair.url, ["RedrivePolicy"])  # type: ignore[attr-defined]
        policy = json.loads(attributes["RedrivePolicy"])
        assert policy["deadLetterTargetArn"] == await sqs.queue_arn(pair.dead_letter_url)
        assert int(policy["maxReceiveCount"]) == 7


async def test_without_bootstrap_a_missing_queue_fails_loudly(
    sqs: QueueTransport, queue_settings: QueueSettings
) -> None:
    from agent_grid_runtime.public_transport import TransportError

    with pytest.raises(TransportError, match="not found"):
        await resolve_queues(sqs, queue_settings.model_copy(update={"bootstrap": False}))


async def test_batch_publish_delivers_every_message_once(sqs: QueueTransport, make_queues: MakeQueues) -> None:
    queues = await make_queues()
    envelopes = [nudge(n) for n in range(1, 26)]

    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many(envelopes)

    received = await drain_queue(sqs, queues.nudges.url)
    assert sorted(json.loads(m.body)["message_id"] for m in received) == sorted(str(e.message_id) for e in envelopes)


async def test_an_unacknowledged_message_is_redelivered_after_its_visibility_timeout(
    sqs: QueueTransport, make_queues: MakeQueues
) -> None:
    queues = await make_queues()
    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(nudge(1))

    [first] = await sqs.receive(queues.nudges.url, max_messages=1, wait_time_s=1, visibility_timeout_s=1)
    hidden = await sqs.receive(queues.nudges.url, max_messages=1, wait_time_s=0, visibility_timeout_s=1)
    [again] = await sqs.receive(queues.nudges.url, max_messages=1, wait_time_s=3, visibility_timeout_s=1)

    assert hidden == []
    assert again.transport_id == first.transport_id
    assert (first.receive_count, again.receive_count) == (1, 2)


async def test_poison_message_goes_to_the_dead_letter_queue_with_its_reason(
    sqs: QueueTransport, make_queues: MakeQueues
) -> None:
    queues = await make_queues()
    handled: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        if envelope.body.issue.number == 2:
            raise DropMessage("issue 2 is poison")
        handled.append(envelope.body.issue.number)

    await sqs.send_batch(queues.nudges.url, [OutgoingMessage(entry_id="raw", body='{"kind": "nudge", "body": 1}')])
    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many([nudge(1), nudge(2), nudge(3)])
    await run_consumer_until(consumer_for(sqs, queues, handle), lambda: sorted(handled) == [1, 3], timeout_s=20.0)

    dead = await drain_queue(sqs, queues.nudges.dead_letter_url, wait_time_s=2)
    reasons = sorted(m.attributes["dead_letter_reason"] for m in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("invalid message: message_id: Field required; body: Input should be a valid")
    assert reasons[1] == "issue 2 is poison"
    assert await drain_queue(sqs, queues.nudges.url) == []


async def test_a_message_that_keeps_failing_is_redriven_after_max_receives(
    sqs: QueueTransport, make_queues: MakeQueues
) -> None:
    queues = await make_queues(max_receive_count=2)
    attempts: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        attempts.append(context.receive_count)
        raise RuntimeError("handler bug")

    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(nudge(1))
    dead: list[Any] = []

    async def poll_dead_letters() -> None:
        while not dead:
            dead.extend(
                await sqs.receive(queues.nudges.dead_letter_url, max_messages=1, wait_time_s=1, visibility_timeout_s=30)
            )

    consumer = consumer_for(sqs, queues, handle, visibility_timeout_s=1)
    with capture_logs() as logs:
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(20):
            await poll_dead_letters()
        consumer.stop()
        await task

    assert attempts == [1, 2]
    assert json.loads(dead[0].body)["body"]["issue"]["number"] == 1
    failures = [line for line in logs if line["event"] == "message_processed" and line["outcome"] == "failed"]
    assert len(failures) == 2
    assert failures[0]["reason"] == "RuntimeError: handler bug"


async def test_long_poll_wakes_up_as_soon_as_a_message_arrives(sqs: QueueTransport, make_queues: MakeQueues) -> None:
    queues = await make_queues()
    arrived = asyncio.Event()

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        arrived.set()

    consumer = consumer_for(sqs, queues, handle, wait_time_s=20)
    task = asyncio.create_task(consumer.run())
    await consumer.receiving.wait()
    await asyncio.sleep(0.5)  # let the 20 s long poll reach the broker
    sent_at = time.perf_counter()
    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(nudge(1))
    async with asyncio.timeout(10):
        await arrived.wait()
    latency_s = time.perf_counter() - sent_at
    consumer.stop()
    await task

    # A wake-up bound far below the 20 s poll: a consumer that waited out its poll would take ~19.5 s.
    assert latency_s < 2.0, f"long poll woke after {latency_s:.3f}s"


async def test_sigterm_drains_a_consumer_process_without_losing_or_duplicating(
    sqs: QueueTransport, make_queues: MakeQueues, sqs_endpoint: str, tmp_path: Path
) -> None:
    queues = await make_queues()
    envelopes = [nudge(n) for n in range(1, 31)]
    await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many(envelopes)
    record = tmp_path / "handled.txt"
    record.touch()

    def start_worker() -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "drain_worker.py"),
                sqs_endpoint,
                queues.nudges.url,
                queues.nudges.dead_letter_url,
                str(record),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == b"ready"
        return worker

    started = tmp_path / "handled.txt.started"
    first = start_worker()
    # Stop it mid-way, with handlers in flight (started, not finished): those must finish before it exits.
    while len(record.read_text().split()) < 5 or len(started.read_text().split()) <= len(record.read_text().split()):
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    _, first_stderr = first.communicate(timeout=15)
    handled_by_first = record.read_text().split()
    assert first.returncode == 0, first_stderr.decode()
    assert b"consumer_draining" in first_stderr
    assert len(handled_by_first) < len(envelopes), "stopped mid-way"

    second = start_worker()
    deadline = time.monotonic() + 30
    while len(record.read_text().split()) < len(envelopes) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # room for any duplicate to show up
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=15)

    handled = record.read_text().split()
    assert sorted(handled) == sorted(str(e.message_id) for e in envelopes), "each message handled exactly once"
    assert await drain_queue(sqs, queues.nudges.url) == []


@pytest.mark.slow
async def test_consumer_survives_a_broker_outage_and_resumes(tmp_path: Path) -> None:
    broker = EmbeddedBroker.in_repo(REPO_ROOT, port=find_free_port())
    broker.start()
    settings = QueueSettings(prefix="outage")
    seen: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        seen.append(envelope.body.issue.number)

    try:
        async with open_sqs_transport(AwsSettings(endpoint_url=broker.endpoint_url)) as sqs:
            queues = await resolve_queues(sqs, settings)
            consumer = consumer_for(sqs, queues, handle, wait_time_s=1)
            with capture_logs() as logs:
                task = asyncio.create_task(consumer.run())
                await consumer.receiving.wait()
                broker.stop()
                while not any(line["event"] == "receive_failed" for line in logs):
                    await asyncio.sleep(0.1)
                broker.start()  # a fresh broker keeps no queues: recreate them as a restarted stack would
                queues_after = await resolve_queues(sqs, settings)
                assert queues_after == queues
                await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(nudge(9))
                async with asyncio.timeout(40):
                    while seen != [9]:
                        await asyncio.sleep(0.1)
                consumer.stop()
                await task
    finally:
        broker.stop()
    assert seen == [9]
