"""``agent-grid-issue-tracker``: serve the issue-tracker over HTTP until SIGTERM (uvicorn owns the signals)."""

from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_service import run_http_service

from issue_tracker.app import create_app
from issue_tracker.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    run_http_service(create_app(settings), settings)


if __name__ == "__main__":
    main()
