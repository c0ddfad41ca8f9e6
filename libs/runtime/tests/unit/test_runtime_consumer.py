import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from agent_grid_contracts.public_codec import encode
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunMode
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Consumer, DropMessage, Handlers, MessageContext, Publisher, RetryLater
from agent_grid_runtime.public_testing import InMemoryBroker, run_consumer_until
from agent_grid_runtime.public_transport import OutgoingMessage
from structlog.testing import capture_logs

Handler = Callable[[Envelope[Nudge], MessageContext], Awaitable[None]]


def nudge(number: int) -> Envelope[Nudge]:
    return wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=number)), producer="test")


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
async def queues(broker: InMemoryBroker) -> QueueUrls:
    return await resolve_queues(broker, QueueSettings(prefix="unit", max_receive_count=3))


def make_consumer(broker: InMemoryBroker, queues: QueueUrls, handler: Handler, **settings: Any) -> Consumer:
    defaults: dict[str, Any] = {"wait_time_s": 1, "visibility_timeout_s": 5, "drain_timeout_s": 2.0}
    return Consumer(
        broker,
        queue_url=queues.nudges.url,
        dead_letter_url=queues.nudges.dead_letter_url,
        handlers=Handlers().on(Nudge, handler),
        settings=ConsumerSettings(**{**defaults, **settings}),
        queue_label="nudges",
    )


@pytest.fixture
async def publisher(broker: InMemoryBroker, queues: QueueUrls) -> Publisher:
    return Publisher(transport=broker, queue_url=queues.nudges.url, backoff_initial_s=0.001)


async def test_handled_messages_are_deleted(broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher) -> None:
    seen: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        seen.append(envelope.body.issue.number)

    await publisher.publish_many([nudge(n) for n in range(1, 26)])
    await run_consumer_until(
        make_consumer(broker, queues, handle),
        lambda: len(seen) == 25 and not broker.messages(queues.nudges.url),
        timeout_s=5.0,
    )

    assert sorted(seen) == list(range(1, 26))
    assert broker.messages(queues.nudges.url) == []


async def test_publish_many_sends_batches_of_at_most_ten(
    broker: InMemoryBroker, publisher: Publisher, queues: QueueUrls
) -> None:
    broker.calls.clear()

    await publisher.publish_many([nudge(n) for n in range(1, 24)])

    assert broker.calls.count("send_batch") == 3
    assert len(broker.messages(queues.nudges.url)) == 23


async def test_publish_retries_through_a_broker_outage(
    broker: InMemoryBroker, publisher: Publisher, queues: QueueUrls
) -> None:
    broker.fail_next(2)

    await publisher.publish(nudge(1))

    assert len(broker.messages(queues.nudges.url)) == 1


async def test_publish_gives_up_after_max_attempts_with_the_unsent_ids(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    from agent_grid_runtime.public_sqs import PublishError

    publisher = Publisher(transport=broker, queue_url=queues.nudges.url, max_attempts=2, backoff_initial_s=0.001)
    envelope = nudge(1)
    broker.fail_next(2)

    with pytest.raises(PublishError) as raised:
        await publisher.publish(envelope)

    assert raised.value.unsent == [str(envelope.message_id)]


async def test_retry_later_hides_the_message_for_the_requested_delay(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    attempts: list[float] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) == 1:
            raise RetryLater(1, "not yet")

    await publisher.publish(nudge(1))
    await run_consumer_until(make_consumer(broker, queues, handle), lambda: len(attempts) == 2, timeout_s=5.0)

    assert attempts[1] - attempts[0] >= 0.9
    assert attempts[1] - attempts[0] < 4  # well before the 5 s visibility timeout would have expired


async def test_drop_message_dead_letters_with_the_reason(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        raise DropMessage("issue belongs to another tracker")

    await publisher.publish(nudge(1))
    await run_consumer_until(
        make_consumer(broker, queues, handle),
        lambda: bool(broker.messages(queues.nudges.dead_letter_url)),
        timeout_s=5.0,
    )

    [dead] = broker.messages(queues.nudges.dead_letter_url)
    assert dead.attributes["dead_letter_reason"] == "issue belongs to another tracker"
    assert dead.attributes["source_queue"] == "nudges"
    assert broker.messages(queues.nudges.url) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"message_id": "6f1c7c1e-5b1a-4c1e-9d1a-0a0a0a0a0a0a", "kind": "nudge", "body": {}}), "issue"),
        (
            encode(
                wrap(
                    LaunchAgent(run_id="r", issue=IssueRef(repo="a/b", number=1), mode=RunMode.WORK, agent_kind="x"),
                    producer="test",
                )
            ),
            "unaccepted kind 'launch_agent'",
        ),
    ],
)
async def test_invalid_messages_are_dead_lettered_without_reaching_the_handler(
    broker: InMemoryBroker, queues: QueueUrls, body: str, reason: str
) -> None:
    handled: list[object] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        handled.append(envelope)

    await broker.send_batch(queues.nudges.url, [OutgoingMessage(entry_id="0", body=body)])
    await run_consumer_until(
        make_consumer(broker, queues, handle),
        lambda: bool(broker.messages(queues.nudges.dead_letter_url)),
        timeout_s=5.0,
    )

    [dead] = broker.messages(queues.nudges.dead_letter_url)
    assert reason in dead.attributes["dead_letter_reason"]
    assert dead.body == body
    assert handled == []


async def test_an_unexpected_error_leaves_the_message_until_redrive(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    receive_counts: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        receive_counts.append(context.receive_count)
        raise RuntimeError("bug")

    await publisher.publish(nudge(1))
    consumer = make_consumer(broker, queues, handle, visibility_timeout_s=1)
    await run_consumer_until(consumer, lambda: bool(broker.messages(queues.nudges.dead_letter_url)), timeout_s=8)

    assert receive_counts == [1, 2, 3]  # max_receive_count=3, then the broker's redrive moves it
    [dead] = broker.messages(queues.nudges.dead_letter_url)
    assert "dead_letter_reason" not in dead.attributes


async def test_never_more_handlers_than_slots(broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher) -> None:
    active = 0
    peak = 0
    done = 0

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        done += 1

    await publisher.publish_many([nudge(n) for n in range(1, 41)])
    await run_consumer_until(make_consumer(broker, queues, handle, max_in_flight=3), lambda: done == 40, timeout_s=5.0)

    assert peak == 3


async def test_a_held_slot_stays_taken_after_the_handler_returns_until_released(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    releases: list[Callable[[], None]] = []
    handled: list[int] = []

    async def start_work(envelope: Envelope[Nudge], context: MessageContext) -> None:
        handled.append(envelope.body.issue.number)
        releases.append(context.hold_slot())

    await publisher.publish_many([nudge(n) for n in range(1, 6)])
    consumer = make_consumer(broker, queues, start_work, max_in_flight=2)
    task = asyncio.create_task(consumer.run())
    async with asyncio.timeout(5):
        while len(handled) < 2:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert len(handled) == 2, "both slots are held by work that outlived its message"
    assert consumer.in_flight == 0
    assert len(broker.messages(queues.nudges.url)) == 3, "the two handled messages were acknowledged"

    releases[0]()
    releases[0]()  # idempotent: a second release must not create a third slot
    async with asyncio.timeout(5):
        while len(handled) < 3:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert len(handled) == 3
    consumer.stop()
    await task


async def test_a_failed_handler_gives_its_held_slot_back(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    attempts = 0

    async def fail_after_holding(envelope: Envelope[Nudge], context: MessageContext) -> None:
        nonlocal attempts
        attempts += 1
        context.hold_slot()
        raise RuntimeError("the work never started")

    await publisher.publish_many([nudge(1), nudge(2)])
    await run_consumer_until(
        make_consumer(broker, queues, fail_after_holding, max_in_flight=1, visibility_timeout_s=1),
        lambda: attempts >= 2,
        timeout_s=5.0,
    )


async def test_receives_ask_only_for_free_slots(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    requested: list[int] = []
    original_receive = broker.receive

    async def recording_receive(queue_url: str, **kwargs: Any) -> Any:
        requested.append(kwargs["max_messages"])
        return await original_receive(queue_url, **kwargs)

    broker.receive = recording_receive  # type: ignore[method-assign]
    release = asyncio.Event()
    done = 0

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        nonlocal done
        await release.wait()
        done += 1

    await publisher.publish_many([nudge(n) for n in range(1, 6)])
    consumer = make_consumer(broker, queues, handle, max_in_flight=4)
    task = asyncio.create_task(consumer.run())
    while consumer.in_flight < 4:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert requested == [4], "no receive while every slot is busy"
    release.set()
    while done < 5:
        await asyncio.sleep(0.005)
    consumer.stop()
    await task
    assert all(1 <= asked <= 4 for asked in requested)


async def test_visibility_heartbeat_keeps_a_long_handler_s_message_hidden(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    calls = 0

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(2.5)  # 2.5 visibility timeouts

    await publisher.publish(nudge(1))
    consumer = make_consumer(broker, queues, handle, visibility_timeout_s=1, max_in_flight=2)
    await run_consumer_until(consumer, lambda: calls == 1 and not broker.messages(queues.nudges.url), timeout_s=6)

    assert calls == 1
    assert broker.calls.count("change_visibility") >= 3


async def test_stop_drains_in_flight_handlers_and_acknowledges_them(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(envelope.body.issue.number)

    await publisher.publish_many([nudge(n) for n in range(1, 4)])
    consumer = make_consumer(broker, queues, handle, max_in_flight=3)
    task = asyncio.create_task(consumer.run())
    await started.wait()
    consumer.stop()
    await task

    assert sorted(finished) == [1, 2, 3]
    assert broker.messages(queues.nudges.url) == []


async def test_drain_timeout_cancels_stragglers_and_leaves_their_messages(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    started = asyncio.Event()

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        started.set()
        await asyncio.sleep(60)

    await publisher.publish(nudge(1))
    consumer = make_consumer(broker, queues, handle, drain_timeout_s=0.1)
    task = asyncio.create_task(consumer.run())
    await started.wait()
    consumer.stop()
    async with asyncio.timeout(2):
        await task

    assert len(broker.messages(queues.nudges.url)) == 1, "a cancelled message is never acknowledged"


async def test_stop_before_run_returns_at_once(broker: InMemoryBroker, queues: QueueUrls) -> None:
    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        raise AssertionError

    consumer = make_consumer(broker, queues, handle)
    consumer.stop()
    consumer.stop()
    async with asyncio.timeout(1):
        await consumer.run()


async def test_consumer_rides_out_a_broker_outage(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    seen: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        seen.append(envelope.body.issue.number)

    await publisher.publish(nudge(7))
    broker.fail_next(3)
    with capture_logs() as logs:
        await run_consumer_until(make_consumer(broker, queues, handle), lambda: seen == [7], timeout_s=10)

    assert sum(1 for line in logs if line["event"] == "receive_failed") == 3


async def test_one_log_line_per_message_with_outcome_and_duration(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        if envelope.body.issue.number == 2:
            raise DropMessage("poison")

    await publisher.publish_many([nudge(1), nudge(2)])
    with capture_logs() as logs:
        await run_consumer_until(
            make_consumer(broker, queues, handle), lambda: not broker.messages(queues.nudges.url), timeout_s=5.0
        )

    lines = [line for line in logs if line["event"] == "message_processed"]
    assert sorted(line["outcome"] for line in lines) == ["dead_lettered", "handled"]
    assert all("duration_ms" in line and line["queue"] == "nudges" for line in lines)
    assert {line["kind"] for line in lines} == {"nudge"}


async def test_a_message_that_breaks_the_decoder_is_dead_lettered_and_the_others_are_unharmed(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    handled: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        await asyncio.sleep(0.05)
        handled.append(envelope.body.issue.number)

    await publisher.publish(nudge(1))
    await broker.send_batch(queues.nudges.url, [OutgoingMessage(entry_id="0", body="[" * 100_000)])
    await publisher.publish(nudge(2))
    consumer = make_consumer(broker, queues, handle)
    await run_consumer_until(
        consumer, lambda: sorted(handled) == [1, 2] and bool(broker.messages(queues.nudges.dead_letter_url))
    )

    [dead] = broker.messages(queues.nudges.dead_letter_url)
    assert "nested too deeply" in dead.attributes["dead_letter_reason"]


async def test_a_failing_outcome_step_is_contained_to_its_message(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    handled: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        handled.append(envelope.body.issue.number)
        if envelope.body.issue.number == 1:
            raise RetryLater(5)

    original = broker.change_visibility

    async def broken_change_visibility(queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        raise KeyError("a bug in the transport")

    broker.change_visibility = broken_change_visibility  # type: ignore[method-assign]
    await publisher.publish_many([nudge(1), nudge(2)])
    consumer = make_consumer(broker, queues, handle)
    with capture_logs() as logs:
        await run_consumer_until(
            consumer, lambda: sorted(handled) == [1, 2] and len(broker.messages(queues.nudges.url)) == 1
        )
    broker.change_visibility = original  # type: ignore[method-assign]

    outcomes = sorted(line["outcome"] for line in logs if line["event"] == "message_processed")
    assert outcomes == ["failed", "handled"]


async def test_retry_later_is_not_overridden_by_an_extension_in_flight(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    # An extension that takes a while on the wire must land before RetryLater's delay, never after it.
    original = broker.change_visibility
    applied: list[int] = []

    async def slow_change_visibility(queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        if timeout_s != 0:
            await asyncio.sleep(0.3)
        applied.append(timeout_s)
        await original(queue_url, receipt_handle, timeout_s)

    broker.change_visibility = slow_change_visibility  # type: ignore[method-assign]
    attempts = 0

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.sleep(0.45)  # the heartbeat (every 1/3 s) is mid-call now
            raise RetryLater(0)

    await Publisher(transport=broker, queue_url=queues.nudges.url).publish(nudge(1))
    consumer = make_consumer(broker, queues, handle, visibility_timeout_s=1)
    await run_consumer_until(consumer, lambda: attempts == 2, timeout_s=3)

    assert applied[-1] == 0 or applied.index(0) > applied.index(1)


async def test_a_consumer_runs_once(broker: InMemoryBroker, queues: QueueUrls) -> None:
    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        pass

    consumer = make_consumer(broker, queues, handle)
    await run_consumer_until(consumer, lambda: True)

    with pytest.raises(RuntimeError, match="runs once"):
        await consumer.run()


def large_launch(number: int, size: int) -> Envelope[LaunchAgent]:
    return wrap(
        LaunchAgent(
            run_id=f"r{number}",
            issue=IssueRef(repo="a/b", number=number),
            mode=RunMode.WORK,
            agent_kind="x",
            prompt_inputs={"body": "x" * size},
        ),
        producer="test",
    )


async def test_batches_are_split_by_size_as_well_as_count(broker: InMemoryBroker, queues: QueueUrls) -> None:
    publisher = Publisher(transport=broker, queue_url=queues.launches.url)
    broker.calls.clear()

    await publisher.publish_many([large_launch(n, 100_000) for n in range(1, 6)])

    assert broker.calls.count("send_batch") == 3  # 2 + 2 + 1: two ~100 KB bodies fit under 256 KiB, three do not
    assert len(broker.messages(queues.launches.url)) == 5


async def test_an_oversized_message_is_refused_at_once(broker: InMemoryBroker, queues: QueueUrls) -> None:
    from agent_grid_runtime.public_sqs import PublishError

    publisher = Publisher(transport=broker, queue_url=queues.launches.url)
    broker.calls.clear()

    with pytest.raises(PublishError, match="over 262144 bytes"):
        await publisher.publish(large_launch(1, 300_000))

    assert broker.calls == []


async def test_coalescing_publisher_batches_concurrent_calls_and_answers_each(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    from agent_grid_runtime.public_sqs import CoalescingPublisher

    coalescing = CoalescingPublisher(Publisher(transport=broker, queue_url=queues.nudges.url), linger_s=0.005)
    broker.calls.clear()
    async with coalescing.running():
        await asyncio.gather(*(coalescing.publish(nudge(n)) for n in range(1, 26)))

    assert broker.calls.count("send_batch") == 3
    assert len(broker.messages(queues.nudges.url)) == 25


async def test_coalescing_publisher_fails_each_caller_whose_message_was_not_accepted(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    from agent_grid_runtime.public_sqs import CoalescingPublisher, PublishError

    publisher = Publisher(transport=broker, queue_url=queues.nudges.url, max_attempts=2, backoff_initial_s=0.001)
    coalescing = CoalescingPublisher(publisher, linger_s=0.005)
    broker.fail_next(2)
    async with coalescing.running():
        results = await asyncio.gather(*(coalescing.publish(nudge(n)) for n in range(1, 4)), return_exceptions=True)
        await coalescing.publish(nudge(9))

    assert all(isinstance(result, PublishError) for result in results)
    assert len(broker.messages(queues.nudges.url)) == 1


def record_receives(broker: InMemoryBroker) -> list[int]:
    requested: list[int] = []
    original_receive = broker.receive

    async def recording_receive(queue_url: str, **kwargs: Any) -> Any:
        requested.append(kwargs["max_messages"])
        return await original_receive(queue_url, **kwargs)

    broker.receive = recording_receive  # type: ignore[method-assign]
    return requested


async def test_a_busy_consumer_lingers_for_its_share_of_slots_and_deletes_in_full_batches(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    requested = record_receives(broker)
    holding: list[int] = []
    releases = {number: asyncio.Event() for number in range(1, 21)}

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        holding.append(envelope.body.issue.number)
        await releases[envelope.body.issue.number].wait()

    await publisher.publish_many([nudge(n) for n in range(1, 21)])
    consumer = make_consumer(broker, queues, handle, max_in_flight=10, batch_linger_s=0.5)
    task = asyncio.create_task(consumer.run())
    while consumer.in_flight < 10:
        await asyncio.sleep(0.005)
    for number in holding[:9]:
        releases[number].set()
    await asyncio.sleep(0.2)
    assert requested == [10], "nine handlers done: their deletes and the next receive wait for the tenth"
    assert broker.calls.count("delete_batch") == 0
    releases[holding[9]].set()
    async with asyncio.timeout(5):
        while len(holding) < 20:
            await asyncio.sleep(0.005)
    assert requested == [10, 10]
    assert broker.calls.count("delete_batch") == 1, "the ten deletes shared one call"
    for release in releases.values():
        release.set()
    async with asyncio.timeout(5):
        while broker.messages(queues.nudges.url):
            await asyncio.sleep(0.005)
    consumer.stop()
    await task


async def test_the_linger_is_bounded(broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher) -> None:
    requested = record_receives(broker)
    holding: list[int] = []
    releases = {number: asyncio.Event() for number in range(1, 21)}

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        holding.append(envelope.body.issue.number)
        await releases[envelope.body.issue.number].wait()

    await publisher.publish_many([nudge(n) for n in range(1, 21)])
    consumer = make_consumer(broker, queues, handle, max_in_flight=10, batch_linger_s=0.05)
    task = asyncio.create_task(consumer.run())
    while consumer.in_flight < 10:
        await asyncio.sleep(0.005)
    releases[holding[0]].set()
    async with asyncio.timeout(5):
        while len(holding) < 11:
            await asyncio.sleep(0.005)
    assert requested == [10, 1], "one slot free of ten: received for it once the linger was over"
    assert broker.calls.count("delete_batch") == 1
    for release in releases.values():
        release.set()
    async with asyncio.timeout(5):
        while broker.messages(queues.nudges.url):
            await asyncio.sleep(0.005)
    consumer.stop()
    await task


async def test_without_a_backlog_nothing_lingers(
    broker: InMemoryBroker, queues: QueueUrls, publisher: Publisher
) -> None:
    requested = record_receives(broker)
    handled: list[int] = []
    release = asyncio.Event()

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        handled.append(envelope.body.issue.number)
        if envelope.body.issue.number == 1:
            await release.wait()

    await publisher.publish(nudge(1))
    consumer = make_consumer(broker, queues, handle, max_in_flight=10, batch_linger_s=1.0)
    task = asyncio.create_task(consumer.run())
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        while not handled:
            await asyncio.sleep(0.005)
        await publisher.publish(nudge(2))
        while len(handled) < 2 or len(broker.messages(queues.nudges.url)) > 1:
            await asyncio.sleep(0.005)
    assert requested[:2] == [10, 9], "one message of ten asked for: received for the nine free slots at once"
    assert asyncio.get_running_loop().time() - started < 0.5, "received, handled and deleted without lingering"
    release.set()
    consumer.stop()
    await task
