"""``agent-grid-execution-grid``: the worker process. It owns its signals: SIGTERM/SIGINT drain, a second one forces."""

import asyncio
import signal

import structlog
from agent_grid_runtime.public_logging import configure_logging

from execution_grid.settings import Settings
from execution_grid.worker import protect_worker_memory, run_worker

_log = structlog.get_logger(__name__)


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _log.warning("forced_exit", signal=signal.Signals(signum).name)
            if worker is not None:
                worker.cancel()
            return
        _log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await run_worker(settings, stop)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    protect_worker_memory()
    try:
        asyncio.run(_main(settings))
    except asyncio.CancelledError:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
