import asyncio
import subprocess
from pathlib import Path

import pytest
from agent_grid_runtime.public_broker import EmbeddedBroker
from agent_grid_runtime.public_service import BrokerUnavailableError, StartupAborted, open_service_runtime
from agent_grid_runtime.public_settings import BaseServiceSettings, QueueSettings
from agent_grid_runtime.public_testing import InMemoryBroker


def settings(startup_timeout_s: float) -> BaseServiceSettings:
    return BaseServiceSettings(queues=QueueSettings(prefix="unit"), startup_timeout_s=startup_timeout_s)


async def test_a_starting_service_waits_for_the_broker_then_proceeds() -> None:
    broker = InMemoryBroker()
    broker.fail_next(2)

    async with open_service_runtime(settings(30), service="test", transport=broker) as runtime:
        assert runtime.queues.nudges.url == "memory://unit-nudges"


async def test_a_starting_service_gives_up_after_its_startup_timeout() -> None:
    broker = InMemoryBroker()
    broker.fail_next(10**6)

    with pytest.raises(BrokerUnavailableError, match=r"after 1s"):
        async with open_service_runtime(settings(1.0), service="test", transport=broker):
            pass


async def test_stop_ends_the_wait_for_the_broker() -> None:
    broker = InMemoryBroker()
    broker.fail_next(10**6)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)

    async with asyncio.timeout(5):
        with pytest.raises(StartupAborted):
            async with open_service_runtime(settings(60), service="test", transport=broker, stop=stop):
                pass


def test_stop_never_signals_a_process_that_is_not_its_broker(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        broker = EmbeddedBroker(home=tmp_path, requirements=tmp_path / "requirements.txt", port=1, name="stale")
        broker.pid_path.write_text(str(bystander.pid))  # a stale pid file naming a reused pid

        broker.stop()

        assert bystander.poll() is None
        assert not broker.pid_path.exists()
    finally:
        bystander.kill()
        bystander.wait()
