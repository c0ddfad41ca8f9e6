"""The fake coordinator (see fake_coordinator.py), served per test on 127.0.0.1, and the run's environment."""

import os
from collections.abc import AsyncIterator

import pytest

from .fake_coordinator import FakeCoordinator, serve_fake_coordinator, valid_token


@pytest.fixture
def coordinator() -> FakeCoordinator:
    return FakeCoordinator()


@pytest.fixture
async def tools_url(coordinator: FakeCoordinator) -> AsyncIterator[str]:
    async with serve_fake_coordinator(coordinator) as url:
        yield url


@pytest.fixture
def tools_env(tools_url: str) -> dict[str, str]:
    """The environment of a process inside the run: the caller's, with the run's two variables."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("AGENT_GRID_")}
    return {**inherited, "AGENT_GRID_TOOLS_URL": tools_url, "AGENT_GRID_RUN_TOKEN": valid_token()}
