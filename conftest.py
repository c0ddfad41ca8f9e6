"""Session fixtures shared by every test directory: the embedded SQS broker and per-test queues.

The broker starts once per test session on a free port (or the tests use AGENT_GRID_TEST_SQS_ENDPOINT when
set) and stops at the end. If it cannot start, the connected tests fail: they never skip.
"""

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_transport import QueueTransport, open_sqs_transport

REPO_ROOT = Path(__file__).parent


@pytest.fixture(autouse=True)
def _test_logging() -> None:
    # Per test: logging configuration is process-global and in-process CLI calls change it. Not cached, so
    # that structlog.testing.capture_logs sees every logger.
    configure_logging("DEBUG", "console", cache_loggers=False)


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    explicit = os.environ.get("AGENT_GRID_TEST_SQS_ENDPOINT")
    if explicit:
        yield explicit
        return
    broker = EmbeddedBroker.in_repo(REPO_ROOT, port=find_free_port())
    broker.start()
    try:
        yield broker.endpoint_url
    finally:
        broker.stop()


@pytest.fixture
def aws_settings(sqs_endpoint: str) -> AwsSettings:
    return AwsSettings(endpoint_url=sqs_endpoint)


@pytest.fixture
async def sqs(aws_settings: AwsSettings) -> AsyncIterator[QueueTransport]:
    async with open_sqs_transport(aws_settings) as transport:
        yield transport


@pytest.fixture
def queue_settings() -> QueueSettings:
    """Queue settings with a unique prefix: every test gets its own queues."""
    return QueueSettings(prefix=f"t{uuid.uuid4().hex[:12]}", max_receive_count=3, visibility_timeout_s=30)


@pytest.fixture
def make_queues(sqs: QueueTransport, queue_settings: QueueSettings) -> Callable[..., Awaitable[QueueUrls]]:
    async def make(**overrides: object) -> QueueUrls:
        return await resolve_queues(sqs, queue_settings.model_copy(update=overrides))

    return make
