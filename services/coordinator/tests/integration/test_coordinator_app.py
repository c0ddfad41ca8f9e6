import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_testing import InMemoryBroker
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from coordinator.app import create_app
from coordinator.settings import Settings
from pydantic import SecretStr
from structlog.testing import capture_logs


@pytest.fixture
async def tracker() -> AsyncIterator[GitHubTracker]:
    github = FakeGitHub()
    github.add_user("agent-grid[bot]")
    token = github.add_token("agent-grid[bot]")
    async with (
        serve_github(github) as running,
        open_github_tracker(GitHubSettings(api_url=running.base_url, token=SecretStr(token))) as opened,
    ):
        yield opened


def settings_in(tmp_path: Path) -> Settings:
    return Settings(queues=QueueSettings(prefix="unit"), ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")


async def test_coordinator_consumes_nudges_and_reports_health_and_metrics(
    tracker: GitHubTracker, tmp_path: Path
) -> None:
    broker = InMemoryBroker()
    settings = settings_in(tmp_path)
    app = create_app(settings, transport=broker, tracker=tracker)
    queues = await resolve_queues(broker, settings.queues)
    await Publisher(transport=broker, queue_url=queues.nudges.url).publish(
        wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=5)), producer="test")
    )

    with capture_logs() as logs:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):
            async with asyncio.timeout(5):
                while broker.messages(queues.nudges.url):
                    await asyncio.sleep(0.01)
            health = await client.get("/healthz")
            metrics = await client.get("/metrics")

    assert health.status_code == 200
    assert health.json() == {"service": "coordinator", "status": "ok", "checks": {"broker": "ok", "consumers": "ok"}}
    assert 'agent_grid_messages_total{kind="nudge",outcome="handled",queue="nudges"} 1.0' in metrics.text
    # No such issue on the tracker: dropped, and acknowledged (a nudge is a request, never a guarantee).
    assert any(line["event"] == "nudge_dropped" and line["issue"] == "github:octo/widgets#5" for line in logs)


async def test_health_fails_when_the_broker_does_not_answer(tracker: GitHubTracker, tmp_path: Path) -> None:
    broker = InMemoryBroker()
    app = create_app(settings_in(tmp_path), transport=broker, tracker=tracker)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        broker.fail_next(1000)
        health = await client.get("/healthz")
        broker.fail_next(0)

    assert health.status_code == 503
    assert health.json()["checks"]["broker"].startswith("failing")
