"""The HTTP edge every API request crosses: faults, authentication, rate limits, ETags, headers, the log.

An ASGI middleware rather than route code, so every endpoint (REST and GraphQL) behaves the same way. The
``/_control`` routes bypass it: they are the test harness, not GitHub.
"""

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_grid_github_test_server.auth import Caller, authenticate
from agent_grid_github_test_server.core import Core
from agent_grid_github_test_server.errors import ApiError
from agent_grid_github_test_server.limits import Fault, Resource, Window
from agent_grid_github_test_server.public_models import LoggedRequest

API_VERSION = "2022-11-28"
CONTROL_PREFIX = "/_control"
# GitHub's caching headers on GET answers: clients may reuse a body for a minute and revalidate with the ETag.
_CACHING = {
    "cache-control": "private, max-age=60, s-maxage=60",
    "vary": "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding",
}
_RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
_SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)


class Edge:
    def __init__(self, app: ASGIApp, core: Core) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send)
        caller: Caller | None = None
        try:
            caller = await self._serve(exchange)
        finally:
            self.core.requests.append(
                LoggedRequest(
                    method=scope["method"],
                    path=scope["path"],
                    query=scope["query_string"].decode("latin-1"),
                    status=exchange.status,
                    at_s=exchange.at_s,
                    login=None if caller is None else caller.login,
                    request_id=exchange.request_id,
                    body=b"".join(exchange.request_body),
                )
            )

    async def _serve(self, exchange: "_Exchange") -> Caller | None:
        core = self.core
        method, path = exchange.scope["method"], exchange.scope["path"]
        resource: Resource = "graphql" if path == "/graphql" else "core"
        fault = core.faults.take(method, path)
        caller: Caller | None = None
        refusal: ApiError | None = None
        try:
            caller = authenticate(core.store, path, exchange.headers.get("authorization"), core.wall())
        except ApiError as error:
            refusal = error
        window = core.limits.peek("anonymous" if caller is None else caller.rate_key, resource)
        version = exchange.headers.get("x-github-api-version", API_VERSION)
        if version != API_VERSION:
            message = f"API version {version} is not supported by this server; it speaks {API_VERSION} only."
            await exchange.reply_error(ApiError(400, message), _rate_headers(window, resource))
            return caller
        if fault is not None and fault.kind == "error":
            # An outage in front of the API: nothing is charged.
            phrase = HTTPStatus(fault.status).phrase
            await exchange.reply_error(ApiError(fault.status, phrase), _rate_headers(window, resource))
            return caller
        if caller is None:
            assert refusal is not None
            await exchange.reply_error(refusal, _rate_headers(core.limits.consume("anonymous", resource), resource))
            return None
        if fault is not None:
            await exchange.reply_error(_secondary_limit(fault, exchange.request_id), _rate_headers(window, resource))
            return caller
        if window.remaining == 0:
            await self._reply_rate_limited(exchange, caller, window, resource)
            return caller
        exchange.scope.setdefault("state", {})["caller"] = caller
        await exchange.forward(self.app)
        consume = True
        extra: dict[str, str] = {}
        if method == "GET" and exchange.status == 200:
            etag = '"' + hashlib.sha256(exchange.response_body).hexdigest() + '"'
            extra |= {"etag": etag, **_CACHING}
            if _matches(exchange.headers.get("if-none-match"), etag):
                exchange.status, exchange.response_body = 304, b""
                consume = False  # GitHub does not charge a conditional request that answers 304
        if consume:
            window = core.limits.consume(caller.rate_key, resource)
        await exchange.flush(extra | _rate_headers(window, resource))
        return caller

    async def _reply_rate_limited(
        self, exchange: "_Exchange", caller: Caller, window: Window, resource: Resource
    ) -> None:
        who = self._rate_subject(caller)
        headers = _rate_headers(window, resource)
        if resource == "graphql":
            # GraphQL answers 200 with a RATE_LIMITED error, as GitHub does.
            body = {"errors": [{"type": "RATE_LIMITED", "message": f"API rate limit already exceeded for {who}."}]}
            await exchange.reply(200, body, headers)
            return
        message = (
            f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please include the "
            f"request ID {exchange.request_id}."
        )
        await exchange.reply_error(ApiError(403, message, documentation_url=_RATE_DOCS), headers)

    @staticmethod
    def _rate_subject(caller: Caller) -> str:
        token = caller.token
        if token is not None and token.installation is not None:
            return f"installation ID {token.installation.id}"
        if token is not None:
            return f"user ID {token.user.id}"
        return "app" if caller.app is None else f"app ID {caller.app.id}"


def _secondary_limit(fault: Fault, request_id: str) -> ApiError:
    message = (
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach "
        f"out to GitHub Support for help, please include the request ID {request_id}."
    )
    return ApiError(403, message, documentation_url=_SECONDARY_DOCS, headers={"retry-after": str(fault.retry_after_s)})


def _rate_headers(window: Window, resource: Resource) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(window.limit),
        "x-ratelimit-remaining": str(window.remaining),
        "x-ratelimit-reset": str(window.reset),
        "x-ratelimit-used": str(window.used),
        "x-ratelimit-resource": resource,
    }


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


class _Exchange:
    """One request/response pair: records the request body and buffers the app's response."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.headers = Headers(scope=scope)
        self._receive = receive
        self._send = send
        self.at_s = time.monotonic()
        self.request_id = ":".join(secrets.token_hex(n).upper() for n in (2, 2, 3, 3, 4))
        self.request_body: list[bytes] = []
        self.status = 500
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.response_body = b""

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.request_body.append(message.get("body", b""))
        return message

    async def forward(self, app: ASGIApp) -> None:
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(self.scope, self.receive, capture)
        self.response_body = b"".join(chunks)

    async def reply(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.response_headers = [(b"content-type", b"application/json; charset=utf-8")]
        self.response_body = json.dumps(body).encode()
        await self.flush(dict(headers or {}))

    async def reply_error(self, error: ApiError, headers: Mapping[str, str] | None = None) -> None:
        await self.reply(error.status, error.body(), {**(headers or {}), **error.headers})

    async def flush(self, extra: Mapping[str, str]) -> None:
        headers = [(k, v) for k, v in self.response_headers if k.lower() != b"content-length"]
        if self.status == 304:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        else:
            headers.append((b"content-length", str(len(self.response_body)).encode()))
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        headers += [
            (b"x-github-request-id", self.request_id.encode()),
            (b"x-github-api-version-selected", API_VERSION.encode()),
            (b"x-github-media-type", b"github.v3; format=json"),
        ]
        await self._send({"type": "http.response.start", "status": self.status, "headers": headers})
        await self._send({"type": "http.response.body", "body": self.response_body})
