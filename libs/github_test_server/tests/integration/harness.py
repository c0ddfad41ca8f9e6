"""Test harness: a REST client that checks every answer against GitHub's description, and a webhook receiver."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import uvicorn
from agent_grid_github_test_server.public_server import bind_socket
from githubkit import BaseAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .contract import RestContract


def githubkit_client(auth: str | BaseAuthStrategy, base_url: str, *, auto_retry: bool = False) -> GitHub[Any]:
    """githubkit as the adapter uses it, with a cache of its own: githubkit's default cache (HTTP responses and
    installation tokens) is process-wide and would leak between tests."""
    return GitHub(auth, base_url=base_url, cache_strategy=MemCacheStrategy(), auto_retry=auto_retry)


class Clock:
    """A clock the test moves by hand (``FakeGitHub(clock=...)`` / ``reset(clock=...)``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Api:
    """REST calls by path template (``/repos/{owner}/{repo}``), each answer validated against GitHub's schema."""

    def __init__(self, client: httpx.AsyncClient, contract: RestContract) -> None:
        self.client = client
        self.contract = contract

    async def call(
        self,
        method: str,
        template: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        **path: str | int,
    ) -> httpx.Response:
        url = template.format(**path).lstrip("/")
        response = await self.client.request(method, url, json=json, params=params, headers=headers)
        self.contract.validate(method, template, response)
        return response

    async def get(self, template: str, **kwargs: Any) -> httpx.Response:
        return await self.call("GET", template, **kwargs)

    async def post(self, template: str, **kwargs: Any) -> httpx.Response:
        return await self.call("POST", template, **kwargs)

    async def patch(self, template: str, **kwargs: Any) -> httpx.Response:
        return await self.call("PATCH", template, **kwargs)

    async def delete(self, template: str, **kwargs: Any) -> httpx.Response:
        return await self.call("DELETE", template, **kwargs)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> str:
        return self.headers["x-github-event"]

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    gate: asyncio.Event | None = None  # when set, each delivery waits for it before being answered


class _QuietServer(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    """A webhook endpoint on 127.0.0.1 that records every delivery and answers ``receiver.status``."""
    sock = bind_socket("127.0.0.1", 0)
    receiver = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hook")

    async def hook(request: Request) -> Response:
        receiver.received.append(Received(dict(request.headers), await request.body()))
        if receiver.gate is not None:
            await receiver.gate.wait()
        return Response(status_code=receiver.status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = _QuietServer(uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield receiver
    finally:
        server.should_exit = True
        await serving
        sock.close()
