"""One way to log for every agent-grid process: structlog, JSON in production, key=value in a terminal.

Entry points call :func:`configure_logging` once; library code only calls ``structlog.get_logger()``.
"""

import logging
import re
import sys
from typing import Literal

import structlog
from structlog.typing import Processor

__all__ = ["configure_logging"]

# Query parameters whose values are credentials (the dashboard's one-time ``?token=`` sign-in link, say).
_SECRET_QUERY = re.compile(r"([?&](?:token|access_token|api_key|key)=)[^&\s\"]*", re.IGNORECASE)


class _RedactQuerySecrets(logging.Filter):
    """Masks credential query parameters in access-log lines: logs outlive tokens and reach more people."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def configure_logging(
    level: str = "INFO", format: Literal["auto", "json", "console"] = "auto", *, cache_loggers: bool = True
) -> None:
    """Configure structlog and route the standard library's loggers (uvicorn, botocore) through it.

    Args:
        level: minimum level name.
        format: ``json``, ``console``, or ``auto`` (JSON unless stderr is a terminal).
        cache_loggers: cache bound loggers after first use; tests turn it off to capture logs.
    """
    render_json = format == "json" or (format == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Never the frames' local variables: they hold credentials (an HTTP client's auth object, a token).
    no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    exceptions: list[Processor] = [structlog.processors.ExceptionRenderer(no_locals)] if render_json else []
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *exceptions, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=cache_loggers,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # botocore logs every retry and credential lookup at INFO; its warnings are what operators need.
    for noisy in ("botocore", "aiobotocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
    # uvicorn installs its own handlers; send its records through ours so every line has one format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, _RedactQuerySecrets) for existing in access.filters):
        access.addFilter(_RedactQuerySecrets())
