"""``agent-grid-coordinator``: serve the coordinator (API + consumers) until SIGTERM; uvicorn owns the signals."""

import uvicorn
from agent_grid_runtime.public_logging import configure_logging

from coordinator.app import create_app
from coordinator.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    uvicorn.run(
        create_app(settings),
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        # The consumers' drain runs in lifespan shutdown, after connections close; it has its own deadline.
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
