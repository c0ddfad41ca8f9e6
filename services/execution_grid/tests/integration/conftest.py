"""Fixtures of the grid integration tests: the worker's queues, settings and a lifecycle watcher."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_grid_runtime.public_queues import QueueUrls
from agent_grid_runtime.public_settings import AwsSettings, HttpSettings, QueueSettings
from agent_grid_runtime.public_transport import QueueTransport
from execution_grid.settings import AgentKindSettings, Settings, SupervisionSettings, WorkspaceSettings

from .grid_harness import LifecycleWatcher, scripted_agent_path


@pytest.fixture
async def lifecycle(sqs: QueueTransport, grid_queues: QueueUrls) -> LifecycleWatcher:
    return LifecycleWatcher(sqs, grid_queues.lifecycle.url)


@pytest.fixture
async def grid_queues(make_queues: Callable[..., Any]) -> QueueUrls:
    queues: QueueUrls = await make_queues()
    return queues


@pytest.fixture
def make_settings(tmp_path: Path, aws_settings: AwsSettings, queue_settings: QueueSettings) -> Callable[..., Settings]:
    def make(worker_id: str = "w1", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "aws": aws_settings,
            "queues": queue_settings,
            "http": HttpSettings(port=0),
            "worker_id": worker_id,
            "slots": 4,
            "state_dir": tmp_path / worker_id,
            "agents": {"generic": AgentKindSettings(executable=scripted_agent_path())},
            "workspace": WorkspaceSettings(clone_base_url=None),
            "supervision": SupervisionSettings(heartbeat_interval_s=0.5, term_grace_s=1.0, cancel_grace_s=1.0),
        }
        values["launch_consumer"] = Settings().launch_consumer.model_copy(update={"wait_time_s": 1})
        values["control_consumer"] = Settings().control_consumer.model_copy(update={"wait_time_s": 1})
        values.update(overrides)
        return Settings(**values)

    return make
