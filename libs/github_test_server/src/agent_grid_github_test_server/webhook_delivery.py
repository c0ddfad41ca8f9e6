"""Signed webhook deliveries, sent in order by one background worker; each attempt is recorded.

A failed delivery is recorded and not retried (GitHub does not retry either); ``redeliver`` sends the same
body again under the same delivery id, as GitHub's "Redeliver" button does.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import httpx
import structlog

from agent_grid_github_test_server.public_models import WebhookDelivery

_log = structlog.get_logger(__name__)
USER_AGENT = "GitHub-Hookshot/agent-grid-test"
_TIMEOUT_S = 10.0  # GitHub gives a receiver ten seconds


@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    secret: str
    events: frozenset[str] | None  # None: every event


@dataclass(frozen=True)
class _Attempt:
    hook: Hook
    guid: str
    event: str
    action: str | None
    body: bytes
    redelivery: bool
    generation: int


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.deliveries: list[WebhookDelivery] = []
        self._next_hook_id = 1
        self._backlog: list[_Attempt] = []  # queued before the worker starts
        self._queue: asyncio.Queue[_Attempt] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._generation = 0

    def reset(self) -> None:
        """Drop hooks and records; deliveries still queued from before are skipped, not sent."""
        self.hooks = []
        self.deliveries = []
        self._backlog.clear()
        self._generation += 1

    def add_hook(self, url: str, secret: str, events: frozenset[str] | None = None) -> Hook:
        hook = Hook(self._next_hook_id, url, secret, events)
        self._next_hook_id += 1
        self.hooks.append(hook)
        return hook

    def enqueue(self, event: str, action: str | None, payload: dict[str, object]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        for hook in self.hooks:
            if hook.events is None or event in hook.events:
                attempt = _Attempt(hook, str(uuid.uuid4()), event, action, body, False, self._generation)
                self._put(attempt)

    def redeliver(self, guid: str) -> None:
        original = next((d for d in reversed(self.deliveries) if d.guid == guid), None)
        hook = next((h for h in self.hooks if original is not None and h.id == original.hook_id), None)
        if original is None or hook is None:
            raise KeyError(guid)
        self._put(_Attempt(hook, guid, original.event, original.action, original.body, True, self._generation))

    def _put(self, attempt: _Attempt) -> None:
        if self._queue is None:
            self._backlog.append(attempt)
        else:
            self._queue.put_nowait(attempt)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=_TIMEOUT_S)
        self._queue = asyncio.Queue()
        for attempt in self._backlog:
            self._queue.put_nowait(attempt)
        self._backlog.clear()
        self._worker = asyncio.create_task(self._run(self._queue, self._client), name="webhook-deliveries")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._client is not None:
            await self._client.aclose()
        self._worker = self._client = self._queue = None

    async def idle(self) -> None:
        """Return once every queued delivery has been attempted."""
        if self._queue is not None:
            await self._queue.join()

    async def _run(self, queue: "asyncio.Queue[_Attempt]", client: httpx.AsyncClient) -> None:
        while True:
            attempt = await queue.get()
            try:
                if attempt.generation == self._generation:
                    delivery = await self._attempt(client, attempt)
                    if attempt.generation == self._generation:
                        self.deliveries.append(delivery)
            finally:
                queue.task_done()

    async def _attempt(self, client: httpx.AsyncClient, attempt: _Attempt) -> WebhookDelivery:
        # One bad delivery must not stop the worker (and with it every later delivery): record it and go on.
        try:
            return await self._send(client, attempt)
        except Exception as failure:
            _log.exception("webhook_delivery_failed", webhook_event=attempt.event, guid=attempt.guid)
            return _record(attempt, time.monotonic(), None, f"{type(failure).__name__}: {failure}")

    async def _send(self, client: httpx.AsyncClient, attempt: _Attempt) -> WebhookDelivery:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Event": attempt.event,
            "X-GitHub-Delivery": attempt.guid,
            "X-GitHub-Hook-ID": str(attempt.hook.id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": str(attempt.hook.id),
            "X-Hub-Signature-256": sign(attempt.hook.secret, attempt.body),
        }
        at_s = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await client.post(attempt.hook.url, content=attempt.body, headers=headers)
            status_code = response.status_code
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        _log.debug(
            "webhook_delivered",
            webhook_event=attempt.event,
            action=attempt.action,
            guid=attempt.guid,
            status_code=status_code,
            error=error,
        )
        return _record(attempt, at_s, status_code, error)


def _record(attempt: _Attempt, at_s: float, status_code: int | None, error: str | None) -> WebhookDelivery:
    return WebhookDelivery(
        guid=attempt.guid,
        hook_id=attempt.hook.id,
        event=attempt.event,
        action=attempt.action,
        body=attempt.body,
        status_code=status_code,
        error=error,
        redelivery=attempt.redelivery,
        at_s=at_s,
    )
