"""Run logs read through the coordinator: it fetches a run's log from the grid worker that ran it.

Each run's ``AgentStarted`` names its log (``log_url``, kept in the ledger); the coordinator asks that worker's
API with the workers' token (``COORDINATOR_GRID_API__TOKEN``, the workers' ``EXECUTION_GRID_API_TOKEN``), so
that API clients (the dashboard, ``agent-grid logs``) need the coordinator's token only. Used by the API routes
and built by the composition root.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field, SecretStr

__all__ = ["GridApiSettings", "RunLogUnavailable", "RunLogs", "open_run_logs"]


class GridApiSettings(BaseModel):
    """How the coordinator reads the grid workers' API (``COORDINATOR_GRID_API__…``).

    ``allowed_url_prefixes``: where a run's ``log_url`` may point (e.g. ``["http://grid-1:8003/"]``). The
    workers' token travels with every log request, and the URL comes from a message on the lifecycle queue,
    so the proxy fetches nothing until the workers are named. ``max_bytes``: the most of one log it relays.
    """

    token: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    allowed_url_prefixes: list[str] = Field(default_factory=list)
    max_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024


class RunLogUnavailable(Exception):  # the API answers it as is: not a fault of the coordinator's own
    """The log could not be had; ``status`` is the HTTP status to answer (404, 502 or 504), ``detail`` why."""

    def __init__(self, status: int, detail: str) -> None:
        """Say which status to answer, and why."""
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RunLogs:
    """Fetches run logs from grid workers. Open it with :func:`open_run_logs`."""

    def __init__(self, settings: GridApiSettings, client: httpx.AsyncClient) -> None:
        """Use ``client`` (its lifetime is the caller's) with ``settings``."""
        self._settings = settings
        self._client = client

    async def fetch(self, run_id: str, log_url: str, *, tail_bytes: int | None = None) -> str:
        """The log at ``log_url`` (its last ``tail_bytes`` bytes when given), as text.

        Raises:
            RunLogUnavailable: 404 when the worker no longer has it; 502 when the worker is unreachable, refuses
                the token or fails, or the URL is not allowed; 504 when it does not answer in time.
        """
        token = self._settings.token
        if token is None:
            raise RunLogUnavailable(
                502, "the coordinator has no token for the grid workers: set COORDINATOR_GRID_API__TOKEN"
            )
        prefixes = self._settings.allowed_url_prefixes
        if not prefixes:
            raise RunLogUnavailable(
                502, "the grid workers' addresses are not configured: set COORDINATOR_GRID_API__ALLOWED_URL_PREFIXES"
            )
        if not _allowed(log_url, prefixes):
            raise RunLogUnavailable(502, f"run {run_id}'s log URL is not an allowed grid worker address: {log_url}")
        params = {"tail_bytes": tail_bytes} if tail_bytes is not None else None
        try:
            response, body = await self._get(log_url, params, token.get_secret_value())
        except httpx.TimeoutException as error:
            raise RunLogUnavailable(504, f"the grid worker at {_origin(log_url)} did not answer in time") from error
        except httpx.HTTPError as error:
            raise RunLogUnavailable(
                502, f"the grid worker at {_origin(log_url)} is unreachable: {type(error).__name__}"
            ) from error
        if response.status_code == 404:
            raise RunLogUnavailable(
                404, f"the grid worker at {_origin(log_url)} no longer has run {run_id}'s log (its records expired)"
            )
        if response.status_code in (401, 403):
            raise RunLogUnavailable(
                502,
                f"the grid worker at {_origin(log_url)} refused the coordinator's token "
                "(COORDINATOR_GRID_API__TOKEN must be the workers' EXECUTION_GRID_API_TOKEN)",
            )
        if response.status_code != 200:
            raise RunLogUnavailable(502, f"the grid worker at {_origin(log_url)} answered {response.status_code}")
        return body.decode(response.encoding or "utf-8", errors="replace")

    async def _get(self, url: str, params: dict[str, int] | None, token: str) -> tuple[httpx.Response, bytes]:
        """The answer and at most ``max_bytes`` of its body: a worker (or whatever answers) cannot flood us."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self._client.stream(
            "GET", url, params=params, headers=headers, timeout=self._settings.timeout_s
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk[: self._settings.max_bytes - len(body)]
                if len(body) >= self._settings.max_bytes:
                    break
        return response, bytes(body)


@asynccontextmanager
async def open_run_logs(settings: GridApiSettings) -> AsyncIterator[RunLogs]:
    """A :class:`RunLogs` whose connections to the workers are released on exit."""
    # Never follow a redirect, nor a proxy from the environment: the workers' token would go wherever they point.
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        yield RunLogs(settings, client)


def _allowed(url: str, prefixes: list[str]) -> bool:
    if urlsplit(url).scheme not in ("http", "https"):
        return False
    # A prefix ends at a path boundary: "http://grid-1:8003" must not admit "http://grid-1:8003.example.org/".
    return any(url.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
