from agent_grid_runtime.public_settings import (
    BaseServiceSettings,
    ConsumerSettings,
    HttpSettings,
    service_settings_config,
)


class Settings(BaseServiceSettings):
    """Coordinator settings; every variable starts with ``COORDINATOR_`` (e.g. ``COORDINATOR_HTTP__PORT``)."""

    model_config = service_settings_config("COORDINATOR_")

    http: HttpSettings = HttpSettings(port=8002)
    nudge_consumer: ConsumerSettings = ConsumerSettings()
    lifecycle_consumer: ConsumerSettings = ConsumerSettings()
