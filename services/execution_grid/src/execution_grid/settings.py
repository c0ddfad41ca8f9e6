import socket

from agent_grid_runtime.public_settings import (
    BaseServiceSettings,
    ConsumerSettings,
    HttpSettings,
    service_settings_config,
)
from pydantic import Field


class Settings(BaseServiceSettings):
    """execution-grid settings; every variable starts with ``EXECUTION_GRID_`` (e.g. ``EXECUTION_GRID_SLOTS``)."""

    model_config = service_settings_config("EXECUTION_GRID_")

    http: HttpSettings = HttpSettings(port=8003)
    worker_id: str = Field(default_factory=socket.gethostname)
    # Launches are long-lived work: a slot is one agent process, so receive no more than the free slots.
    launch_consumer: ConsumerSettings = ConsumerSettings(max_in_flight=2, visibility_timeout_s=120)
