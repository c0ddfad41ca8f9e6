import httpx
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_testing import InMemoryBroker
from issue_tracker.app import create_app
from issue_tracker.settings import Settings


async def test_issue_tracker_serves_health_and_metrics() -> None:
    app = create_app(Settings(queues=QueueSettings(prefix="unit")), transport=InMemoryBroker())

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")

    assert health.json() == {"service": "issue-tracker", "status": "ok", "checks": {"broker": "ok"}}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


def test_settings_read_nested_sections_from_prefixed_variables(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("ISSUE_TRACKER_AWS__ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("ISSUE_TRACKER_QUEUES__PREFIX", "staging")
    monkeypatch.setenv("ISSUE_TRACKER_HTTP__PORT", "9001")
    monkeypatch.setenv("COORDINATOR_HTTP__PORT", "1")  # another service's variable is not ours

    settings = Settings()

    assert settings.aws.endpoint_url == "http://127.0.0.1:9999"
    assert settings.queues.prefix == "staging"
    assert settings.http.port == 9001
