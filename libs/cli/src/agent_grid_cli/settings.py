from pathlib import Path

from agent_grid_runtime.public_settings import AwsSettings, LogSettings, QueueSettings
from pydantic_settings import BaseSettings, SettingsConfigDict


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
