import asyncio
from datetime import timedelta

import httpx
import pytest
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_metrics import register_callback_gauge
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_service import ServiceRuntime
from agent_grid_runtime.public_settings import ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Consumer, Handlers, MessageContext, Publisher
from agent_grid_runtime.public_testing import InMemoryBroker, run_consumer_until
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def nudge(number: int) -> Envelope[Nudge]:
    return wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=number)), producer="test")


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
async def queues(broker: InMemoryBroker) -> QueueUrls:
    return await resolve_queues(broker, QueueSettings(prefix="unit"))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(runtime: ServiceRuntime) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    app = FastAPI()
    app.include_router(runtime.ops_router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def consumer(broker: InMemoryBroker, queues: QueueUrls, registry: CollectorRegistry, **settings: object) -> Consumer:
    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        return None

    return Consumer(
        broker,
        queue_url=queues.nudges.url,
        dead_letter_url=queues.nudges.dead_letter_url,
        handlers=Handlers().on(Nudge, handle),
        settings=ConsumerSettings(**{"wait_time_s": 1, "drain_timeout_s": 1.0, **settings}),  # type: ignore[arg-type]
        queue_label="nudges",
        registry=registry,
    )


async def test_the_oldest_message_age_comes_from_the_send_time_and_drops_to_zero_on_an_empty_receive(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    registry = CollectorRegistry()
    await Publisher(transport=broker, queue_url=queues.nudges.url).publish_many([nudge(1), nudge(2)])
    stored = broker.messages(queues.nudges.url)
    stored[0].sent_at -= timedelta(seconds=120)
    stored[1].sent_at -= timedelta(seconds=30)
    ages: list[float] = []

    def age() -> float:
        return registry.get_sample_value("agent_grid_queue_oldest_message_age_seconds", {"queue": "nudges"}) or 0.0

    def observed() -> bool:
        ages.append(age())
        return ages[-1] == 0.0 and 120 in {round(value) for value in ages}

    await run_consumer_until(consumer(broker, queues, registry), observed, timeout_s=5)

    assert 120 <= max(ages) < 125
    assert ages[-1] == 0.0


async def test_busy_slots_count_handlers_and_held_slots_not_receives_in_progress(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    release_handler = asyncio.Event()
    releases: list[object] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        if envelope.body.issue.number == 1:
            releases.append(context.hold_slot())
            return
        await release_handler.wait()

    running = Consumer(
        broker,
        queue_url=queues.nudges.url,
        dead_letter_url=queues.nudges.dead_letter_url,
        handlers=Handlers().on(Nudge, handle),
        settings=ConsumerSettings(max_in_flight=4, wait_time_s=1, drain_timeout_s=1.0),
        queue_label="nudges",
    )
    task = asyncio.create_task(running.run())
    await running.receiving.wait()
    assert running.busy_slots == 0, "a long poll in progress takes no slot"

    await Publisher(transport=broker, queue_url=queues.nudges.url).publish_many([nudge(1), nudge(2)])
    async with asyncio.timeout(5):
        while running.busy_slots < 2 or not releases:
            await asyncio.sleep(0.01)
    assert running.busy_slots == 2  # one handler running, one slot held past its handler's return
    release_handler.set()
    async with asyncio.timeout(5):
        while running.in_flight:
            await asyncio.sleep(0.01)
    assert running.busy_slots == 1
    releases[0]()  # type: ignore[operator]
    assert running.busy_slots == 0
    running.stop()
    await task


async def test_queue_and_dead_letter_depths_are_read_at_scrape_time_and_cached(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    runtime = ServiceRuntime("test", broker, queues, CollectorRegistry())
    publisher = Publisher(transport=broker, queue_url=queues.nudges.url)
    await publisher.publish_many([nudge(1), nudge(2), nudge(3)])
    await Publisher(transport=broker, queue_url=queues.launches.dead_letter_url).publish(nudge(4))

    first = await scrape(runtime)
    depth_calls = broker.calls.count("depth")
    await publisher.publish(nudge(5))
    second = await scrape(runtime)

    assert first[("agent_grid_queue_messages", frozenset({("queue", "nudges"), ("state", "visible")}))] == 3
    assert first[("agent_grid_queue_messages", frozenset({("queue", "lifecycle"), ("state", "in_flight")}))] == 0
    assert first[("agent_grid_dead_letter_messages", frozenset({("queue", "launches")}))] == 1
    assert first[("agent_grid_dead_letter_messages", frozenset({("queue", "nudges")}))] == 0
    assert first[("agent_grid_broker_up", frozenset())] == 1
    assert depth_calls == 6, "each work queue and its dead-letter queue, once"
    assert broker.calls.count("depth") == depth_calls, "a scrape within the cache's age reads nothing"
    assert second[("agent_grid_queue_messages", frozenset({("queue", "nudges"), ("state", "visible")}))] == 3


async def test_a_failing_broker_clears_the_depths_instead_of_serving_stale_ones(
    broker: InMemoryBroker, queues: QueueUrls
) -> None:
    runtime = ServiceRuntime("test", broker, queues, CollectorRegistry())
    broker.fail_next(1000)

    scraped = await scrape(runtime)

    broker.fail_next(0)
    assert scraped[("agent_grid_broker_up", frozenset())] == 0
    assert not any(name == "agent_grid_queue_messages" for name, _ in scraped)
    assert not any(name == "agent_grid_dead_letter_messages" for name, _ in scraped)


def test_a_callback_gauge_reads_its_samples_at_every_scrape_and_a_failing_one_spoils_nothing_else() -> None:
    registry = CollectorRegistry()
    slots = {"free": 3}
    register_callback_gauge(registry, "test_slots_free", "Free slots.", [], lambda: {(): slots["free"]})
    register_callback_gauge(registry, "test_by_kind", "By kind.", ["kind"], lambda: {("a",): 1, ("b",): 2})
    register_callback_gauge(registry, "test_broken", "Always fails.", [], lambda: {(): 1 / 0})

    first = samples(generate_latest(registry).decode())
    slots["free"] = 1
    second = samples(generate_latest(registry).decode())

    assert first[("test_slots_free", frozenset())] == 3
    assert second[("test_slots_free", frozenset())] == 1
    assert second[("test_by_kind", frozenset({("kind", "b")}))] == 2
    assert not any(name == "test_broken" for name, _ in second)
