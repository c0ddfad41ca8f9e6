import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import QueueName, QueuePair, QueueUrls
from agent_grid_runtime.public_service import ServiceRuntime, open_service_runtime, running_consumers
from agent_grid_runtime.public_settings import AwsSettings, BaseServiceSettings, ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Handlers, MessageContext, Publisher
from agent_grid_runtime.public_transport import open_sqs_transport
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.connected


def nudge(number: int) -> Envelope[Nudge]:
    return wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=number)), producer="test")


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@asynccontextmanager
async def served(runtime: ServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(runtime.ops_router())
    port = find_free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_http(app, host="127.0.0.1", port=port, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.get("/healthz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            yield client
    finally:
        stop.set()
        await server


async def test_a_running_service_reports_queue_depths_and_the_age_of_what_its_consumer_receives(
    aws_settings: AwsSettings, queue_settings: QueueSettings
) -> None:
    settings = BaseServiceSettings(aws=aws_settings, queues=queue_settings)
    handled: list[int] = []

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        handled.append(envelope.body.issue.number)

    async with open_service_runtime(settings, service="test") as runtime, served(runtime) as client:
        # Two messages wait in the nudges queue and one in the launches' dead-letter queue.
        await runtime.publisher(QueueName.NUDGES).publish_many([nudge(1), nudge(2)])
        dead = Publisher(transport=runtime.transport, queue_url=runtime.queues.launches.dead_letter_url)
        await dead.publish(nudge(3))
        before = (await client.get("/metrics")).text

        # SQS's SentTimestamp is the send, not the end of the delay: this message is 2 s old when received.
        await runtime.publisher(QueueName.LIFECYCLE).publish(nudge(4), delay_s=2)
        consumer = runtime.consumer(
            QueueName.LIFECYCLE, Handlers().on(Nudge, handle), ConsumerSettings(wait_time_s=1, drain_timeout_s=2)
        )
        async with running_consumers([consumer]):
            async with asyncio.timeout(15):
                while handled != [4]:
                    await asyncio.sleep(0.05)
            after = (await client.get("/metrics")).text

    assert value(before, "agent_grid_broker_up") == 1
    assert value(before, "agent_grid_queue_messages", queue="nudges", state="visible") == 2
    assert value(before, "agent_grid_queue_messages", queue="launches", state="visible") == 0
    assert value(before, "agent_grid_dead_letter_messages", queue="launches") == 1
    assert value(before, "agent_grid_dead_letter_messages", queue="nudges") == 0
    age = value(after, "agent_grid_queue_oldest_message_age_seconds", queue="lifecycle")
    assert age is not None
    assert 1.5 <= age < 10


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung broker."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_scrape_answers_promptly_when_the_broker_hangs() -> None:
    with black_hole() as port:
        endpoint = f"http://127.0.0.1:{port}"
        async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as transport:
            pair = QueuePair(url=f"{endpoint}/000000000000/q", dead_letter_url=f"{endpoint}/000000000000/q-dlq")
            queues = QueueUrls(nudges=pair, launches=pair, lifecycle=pair)
            runtime = ServiceRuntime("test", transport, queues, CollectorRegistry())
            async with served(runtime) as client:
                started = time.monotonic()
                first = await client.get("/metrics")
                first_s = time.monotonic() - started
                started = time.monotonic()
                second = await client.get("/metrics")
                second_s = time.monotonic() - started

    assert first.status_code == 200
    assert value(first.text, "agent_grid_broker_up") == 0
    assert value(first.text, "agent_grid_queue_messages", queue="nudges", state="visible") is None
    assert first_s < 4, "the depth read gives up after 2 s; botocore alone would wait 40 s"
    assert second_s < 0.5, "the failure is cached: the next scrape does not wait for the broker again"
    assert value(second.text, "agent_grid_broker_up") == 0
