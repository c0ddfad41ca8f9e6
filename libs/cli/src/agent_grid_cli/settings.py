from pathlib import Path
from typing import Annotated

from agent_grid_runtime.public_settings import AwsSettings, LogSettings, QueueSettings
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_grid_cli.local_grid import LOCAL_API_TOKEN


class ServiceUrls(BaseModel):
    """Where the operator commands find the services (``AGENT_GRID_SERVICES__COORDINATOR`` …).

    The defaults are ``make run``'s local grid; ``execution_grid`` lists every grid worker to check.
    """

    issue_tracker: str = "http://127.0.0.1:8001"
    coordinator: str = "http://127.0.0.1:8002"
    execution_grid: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8003"])


class CliSettings(BaseSettings):
    """The CLI's settings: ``AGENT_GRID_`` variables, or a ``.env`` file in the working directory."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_GRID_", env_nested_delimiter="__", extra="ignore", env_ignore_empty=True, env_file=".env"
    )

    aws: AwsSettings = AwsSettings()
    queues: QueueSettings = QueueSettings()
    log: LogSettings = LogSettings(level="WARNING", format="console")
    # Where the embedded broker keeps its virtualenv, state and logs; and the lock it installs from.
    home: Path = Path(".local")
    broker_requirements: Path = Path("deploy/broker/requirements.txt")
    broker_port: int = 4566
    services: ServiceUrls = ServiceUrls()
    # The coordinator's API token (its COORDINATOR_API__TOKEN); the default is the local grid's.
    api_token: SecretStr = SecretStr(LOCAL_API_TOKEN)
    http_timeout_s: Annotated[float, Field(gt=0)] = 10.0
