from agent_grid_runtime.public_settings import BaseServiceSettings, HttpSettings, service_settings_config


class Settings(BaseServiceSettings):
    """issue-tracker settings; every variable starts with ``ISSUE_TRACKER_`` (e.g. ``ISSUE_TRACKER_HTTP__PORT``)."""

    model_config = service_settings_config("ISSUE_TRACKER_")

    http: HttpSettings = HttpSettings(port=8001)
    # How many times a webhook's enqueue is retried before answering 503 (GitHub then redelivers).
    publish_attempts: int = 3
