from typing import Annotated

from agent_grid_runtime.public_settings import BaseServiceSettings, HttpSettings, service_settings_config
from agent_grid_tracker.public_github import GitHubSettings
from pydantic import BaseModel, Field, SecretStr

from issue_tracker.polling.public_api import PollingSettings


class WebhookSettings(BaseModel):
    """GitHub webhook intake. Without ``secret`` every delivery is refused (401): never accept unsigned input."""

    secret: SecretStr | None = None
    # Our own GitHub accounts (the App's bot user, a token's user): their actions never nudge.
    bot_logins: frozenset[str] = frozenset({"agent-grid[bot]"})
    mention: str = "@agent-grid"
    # GitHub caps payloads at 25 MB; issue and comment events are a few KB. Anything larger is refused (413).
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # SQLite by default (restarts and processes on one host); postgresql://… for replicas on several hosts.
    deliveries_url: str = "sqlite:///.local/issue-tracker/deliveries.sqlite3"
    # Attempts to enqueue before answering 503; GitHub's own redelivery recovers the rest.
    publish_attempts: Annotated[int, Field(ge=1)] = 2
    linger_ms: Annotated[float, Field(ge=0, le=100)] = 2.0


class Settings(BaseServiceSettings):
    """issue-tracker settings; variables start with ``ISSUE_TRACKER_`` (e.g. ``ISSUE_TRACKER_WEBHOOK__SECRET``)."""

    model_config = service_settings_config("ISSUE_TRACKER_")

    http: HttpSettings = HttpSettings(port=8001)
    webhook: WebhookSettings = WebhookSettings()
    # The tracker's credentials (ISSUE_TRACKER_GITHUB__TOKEN or __APP__…); needed by polling mode.
    github: GitHubSettings | None = None
    polling: PollingSettings = PollingSettings()
