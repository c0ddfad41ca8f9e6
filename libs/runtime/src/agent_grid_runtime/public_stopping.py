"""Telling long-lived HTTP responses that the server is stopping. Backward-compatible changes only.

uvicorn's graceful stop waits for every response in flight and tells none of them that it is stopping, so a
response that never ends by itself (an event stream) would hold the stop until ``timeout_graceful_shutdown``
cancels it. Such a response ends on :func:`server_stopping` instead, which the servers of ``serve_http`` and
``run_http_service`` set as they begin to stop, before they wait for open connections.
"""

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette

__all__ = ["StopAwareServer", "server_stopping"]

_STATE_NAME = "agent_grid_server_stopping"


def server_stopping(app: Starlette) -> asyncio.Event:
    """The event set when the server serving ``app`` begins to stop (one event per app, made on first use)."""
    event = getattr(app.state, _STATE_NAME, None)
    if not isinstance(event, asyncio.Event):
        event = asyncio.Event()
        setattr(app.state, _STATE_NAME, event)
    return event


class StopAwareServer(uvicorn.Server):
    """A uvicorn server that sets :func:`server_stopping` of ``app`` as it begins to stop, and clears it at start."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        """Serve as ``config`` says; ``app`` is the application whose stopping event this server sets."""
        super().__init__(config)
        self._stopping = server_stopping(app)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, with the stopping event clear."""
        self._stopping.clear()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Set the stopping event, then stop as uvicorn does (waiting for the responses still open)."""
        self._stopping.set()
        await super().shutdown(sockets)
