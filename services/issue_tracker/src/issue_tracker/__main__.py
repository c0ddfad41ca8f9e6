"""``agent-grid-issue-tracker``: serve the issue-tracker over HTTP until SIGTERM (uvicorn owns the signals)."""

import uvicorn
from agent_grid_runtime.public_logging import configure_logging

from issue_tracker.app import create_app
from issue_tracker.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    uvicorn.run(
        create_app(settings),
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
