"""Operational HTTP surface shared by every service.

``GET /healthz`` and ``GET /metrics`` (Prometheus text), and a uvicorn server that leaves signal handling to
its owner. Backward-compatible changes only.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent_grid_runtime.public_stopping import StopAwareServer

__all__ = ["HealthCheck", "ScrapeHook", "build_ops_router", "serve_http"]

type HealthCheck = Callable[[], Awaitable[bool]]
"""A readiness probe: returns True when healthy; may raise, which counts as unhealthy."""

type ScrapeHook = Callable[[], Awaitable[None]]
"""Brings gauges up to date before ``/metrics`` renders them (e.g. reads queue depths, with its own cache)."""

_CHECK_TIMEOUT_S = 2.0
# A backstop: hooks bound their own waits; a scrape must answer even if one does not.
_SCRAPE_HOOK_TIMEOUT_S = 3.0
_log = structlog.get_logger(__name__)


def build_ops_router(
    *,
    service: str,
    registry: CollectorRegistry,
    checks: Mapping[str, HealthCheck] | None = None,
    before_scrape: Sequence[ScrapeHook] = (),
) -> APIRouter:
    """``/healthz`` answers 200 when every check passes and 503 otherwise, naming each check's state.

    Args:
        service: the service name reported in the body.
        registry: the service's own Prometheus registry, served on ``/metrics``.
        checks: named readiness probes (broker reachable, consumer running...).
        before_scrape: run in order before ``/metrics`` renders; one that fails or overruns is logged and
            skipped, so a scrape always answers.
    """
    router = APIRouter()
    named_checks = dict(checks or {})
    hooks = list(before_scrape)

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in named_checks.items():
            try:
                async with asyncio.timeout(_CHECK_TIMEOUT_S):
                    results[name] = "ok" if await check() else "failing"
            except Exception as error:
                results[name] = f"failing: {type(error).__name__}"
        healthy = all(state == "ok" for state in results.values())
        return JSONResponse(
            {"service": service, "status": "ok" if healthy else "failing", "checks": results},
            status_code=200 if healthy else 503,
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        for hook in hooks:
            try:
                async with asyncio.timeout(_SCRAPE_HOOK_TIMEOUT_S):
                    await hook()
            except Exception:
                _log.exception("scrape_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


class _SignalFreeServer(StopAwareServer):
    # uvicorn restores and re-raises captured signals after serving (uvicorn #1579); a worker that owns its
    # signals must keep uvicorn out of them.
    def capture_signals(self) -> "_NoSignals":  # type: ignore[override]
        return _NoSignals()


class _NoSignals:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


async def serve_http(app: FastAPI, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set, without touching signal handlers (for workers that own them)."""
    server = _SignalFreeServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False), app)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await serving
