"""Settings sections shared by every service.

Services nest them in their own ``BaseSettings``
(``env_nested_delimiter="__"``), e.g. ``COORDINATOR_AWS__ENDPOINT_URL``. Backward-compatible changes only.

These are plain ``BaseModel``s on purpose: only the outer ``BaseSettings`` reads the environment
(pydantic-settings #279), so one prefix per service governs every section.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AwsSettings",
    "BaseServiceSettings",
    "ConsumerSettings",
    "HttpSettings",
    "LogSettings",
    "QueueSettings",
    "service_settings_config",
]


class AwsSettings(BaseModel):
    """How to reach SQS. Leave ``endpoint_url`` unset for real AWS; set it for LocalStack or any emulator."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


class QueueSettings(BaseModel):
    """Queue names and their redrive policy.

    With ``bootstrap`` on, a service creates missing queues (and their DLQs) at start; in production the
    queues come from ``deploy/`` and ``bootstrap`` is off, so a typo fails loudly instead of creating a queue.
    """

    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")] = "agent-grid"
    bootstrap: bool = True
    max_receive_count: Annotated[int, Field(ge=1, le=1000)] = 5
    visibility_timeout_s: Annotated[int, Field(ge=0, le=43_200)] = 60
    message_retention_s: Annotated[int, Field(ge=60, le=1_209_600)] = 1_209_600


class ConsumerSettings(BaseModel):
    """Tuning of one consumer loop.

    ``visibility_timeout_s`` must exceed the p99 handler duration unless the handler relies on the
    visibility heartbeat; ``drain_timeout_s`` must stay below the container stop grace period
    (compose ``stop_grace_period``, ECS ``stopTimeout``) so that draining finishes before SIGKILL.
    """

    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 10
    wait_time_s: Annotated[int, Field(ge=0, le=20)] = 20
    visibility_timeout_s: Annotated[int, Field(ge=1, le=43_200)] = 60
    drain_timeout_s: Annotated[float, Field(ge=0)] = 20.0
    receive_concurrency: Annotated[int | None, Field(ge=1, le=50)] = Field(
        default=None, description="Concurrent receive calls; default ceil(max_in_flight / 10)."
    )
    batch_linger_s: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0,
        description=(
            "While the queue has a backlog (the last receive got all it asked for), how long a poller with fewer"
            " free slots than its share (max_in_flight / receive_concurrency, at most 10) waits for more before it"
            " receives, and how long a delete waits for company: fuller calls, fewer a message, at the cost of that"
            " much latency under load. 0: none."
        ),
    )


class LogSettings(BaseModel):
    """Log level and format. ``format="auto"`` renders JSON unless stderr is a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class HttpSettings(BaseModel):
    """Where a service serves HTTP (its API, ``/healthz`` and ``/metrics``)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8000


class BaseServiceSettings(BaseSettings):
    """Sections every service has.

    A service subclasses it and sets its own ``env_prefix``:
    ``model_config = service_settings_config("COORDINATOR_")``.
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore", env_ignore_empty=True)

    aws: AwsSettings = AwsSettings()
    queues: QueueSettings = QueueSettings()
    log: LogSettings = LogSettings()
    http: HttpSettings = HttpSettings()
    # How long a starting service waits for the broker before it gives up and exits non-zero, for its
    # supervisor (compose, ECS, run-local) to restart or report. A running service waits indefinitely.
    startup_timeout_s: Annotated[float, Field(gt=0)] = 120.0


def service_settings_config(env_prefix: str) -> SettingsConfigDict:
    """The settings config of a service: its prefix, ``__`` for nested sections, unknown variables ignored."""
    return SettingsConfigDict(env_prefix=env_prefix, env_nested_delimiter="__", extra="ignore", env_ignore_empty=True)
