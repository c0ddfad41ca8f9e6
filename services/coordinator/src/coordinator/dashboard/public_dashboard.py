"""The coordinator's live web dashboard: server-rendered pages under ``/dashboard``, and ``GET /api/events``.

Imported by the coordinator's composition root only. The pages are HTML rendered here from the ledger, the
policy and the broker; a small script (package data, like the stylesheet: no build step, nothing from a
CDN) follows the event stream and swaps in re-rendered fragments of the page when something changed, so
nothing reloads. Signing in with the API token sets the session cookie that ``/api`` also accepts
(``coordinator.api.public_auth``); a request without it gets the login page, never data.
"""

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated
from urllib.parse import parse_qs, quote, urlencode

import structlog
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_runtime.public_queues import QueueName, QueueUrls
from agent_grid_runtime.public_transport import QueueDepth, QueueTransport
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from coordinator.api.public_auth import ApiAuth, same_origin
from coordinator.dashboard import pages
from coordinator.dashboard.events import StreamSettings, event_stream, parse_position
from coordinator.dashboard.html import Html, el
from coordinator.decisions.public_policy import Policy
from coordinator.ledger.public_ledger import Ledger

__all__ = ["DashboardSettings", "build_dashboard_router"]

_log = structlog.get_logger(__name__)

# Only this origin's scripts and styles, no inline code, nothing framed: an agent-written detail that slipped
# past escaping still could not run.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # No Referer leaves the dashboard (a page's address names runs and trees). Not no-referrer: under it a
    # browser sends ``Origin: null`` even to the same origin, and the API's origin check needs the real one.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_ASSETS = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
_DEPTH_TIMEOUT_S = 3.0
_TREE_RUNS_SHOWN = 1000


class DashboardSettings(BaseModel):
    """The dashboard (``COORDINATOR_DASHBOARD__…``); it signs in with ``COORDINATOR_API__TOKEN``.

    ``events_poll_interval_s`` is how often each open event stream reads the ledger (one primary-key range),
    so it bounds how late a change shows; ``events_keepalive_s`` must stay below the idle timeout of any proxy
    in front of the coordinator. A client that reconnects more than ``events_backlog`` events behind starts
    over from the latest instead of replaying them.
    """

    session_ttl_s: Annotated[float, Field(gt=0)] = 43_200.0
    events_poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    events_keepalive_s: Annotated[float, Field(gt=0)] = 15.0
    events_backlog: Annotated[int, Field(ge=0)] = 1_000
    # How long a stream looks for an event number it skipped (a transaction that committed late, PostgreSQL).
    events_gap_wait_s: Annotated[float, Field(ge=0)] = 10.0
    log_tail_bytes: Annotated[int, Field(ge=1)] = 65_536
    runs_shown: Annotated[int, Field(ge=1, le=1000)] = 100
    # Each open stream polls the ledger (SQLite: its one connection): beyond this many, new ones wait (503).
    max_event_streams: Annotated[int, Field(ge=1)] = 32


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


def build_dashboard_router(
    *,
    ledger: Ledger,
    policy: Policy,
    auth: ApiAuth,
    settings: DashboardSettings,
    transport: QueueTransport,
    queues: QueueUrls,
    stopping: asyncio.Event,
) -> APIRouter:
    """The dashboard's pages, its assets, its login and ``GET /api/events``.

    Args:
        ledger: the run ledger (runs, events, trees, the paused flag).
        policy: the rules in force, shown as they are.
        auth: the API's check, which the pages and the event stream share.
        settings: the dashboard's own settings.
        transport: the broker, for queue depths.
        queues: the work queues.
        stopping: set when the server begins to stop; open event streams end on it.
    """
    dashboard = _Dashboard(ledger, policy, auth, settings, transport, queues, stopping)
    router = APIRouter()
    signed_in = [Depends(dashboard.authorised)]
    router.add_api_route("/api/events", dashboard.events, methods=["GET"], dependencies=signed_in, tags=["coordinator"])
    pages_at: dict[str, Callable[..., Awaitable[Response]]] = {
        "/dashboard": dashboard.overview,
        "/dashboard/runs/{run_id}": dashboard.run_page,
        "/dashboard/trees/{owner}/{repo}/{number}": dashboard.tree_page,
        "/dashboard/login": dashboard.login_form,
        "/dashboard/static/{name}": dashboard.static,
    }
    for path, endpoint in pages_at.items():
        router.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
    router.add_api_route("/dashboard/login", dashboard.login, methods=["POST"], include_in_schema=False)
    router.add_api_route("/dashboard/logout", dashboard.logout, methods=["POST"], include_in_schema=False)
    fragments_at: dict[str, Callable[..., Awaitable[Response]]] = {
        "/dashboard/fragments/runs": dashboard.runs_fragment,
        "/dashboard/fragments/queues": dashboard.queues_fragment,
        "/dashboard/fragments/runs/{run_id}": dashboard.run_fragment,
        "/dashboard/fragments/trees/{owner}/{repo}/{number}": dashboard.tree_fragment,
    }
    for path, endpoint in fragments_at.items():
        fragment_signed_in = [Depends(dashboard.fragment_authorised)]
        router.add_api_route(path, endpoint, methods=["GET"], dependencies=fragment_signed_in, include_in_schema=False)
    return router


class _Dashboard:
    """The endpoints, over what they read."""

    def __init__(
        self,
        ledger: Ledger,
        policy: Policy,
        auth: ApiAuth,
        settings: DashboardSettings,
        transport: QueueTransport,
        queues: QueueUrls,
        stopping: asyncio.Event,
    ) -> None:
        self._ledger, self._policy, self._auth, self._settings = ledger, policy, auth, settings
        self._transport, self._queues, self._stopping = transport, queues, stopping
        self._assets = _load_assets()
        self._stream = StreamSettings(
            poll_interval_s=settings.events_poll_interval_s,
            keepalive_s=settings.events_keepalive_s,
            backlog=settings.events_backlog,
            gap_wait_s=settings.events_gap_wait_s,
        )
        self._max_streams = settings.max_event_streams
        self._open_streams = 0

    def authorised(self, request: Request) -> None:
        self._auth.check(request)

    def fragment_authorised(self, request: Request) -> None:
        if not self._signed_in(request):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in again")

    async def events(
        self,
        after: Annotated[int | None, Query(ge=0, description="start after this event (a first connection)")] = None,
        last_event_id: Annotated[str | None, Header(description="sent by a reconnecting EventSource")] = None,
    ) -> StreamingResponse:
        """The ledger's run events as Server-Sent Events (``run``, ``control``, ``resync``), resumable."""
        if self._open_streams >= self._max_streams:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"{self._open_streams} event streams are open (COORDINATOR_DASHBOARD__MAX_EVENT_STREAMS)",
                headers={"Retry-After": "5"},
            )
        start = parse_position(last_event_id, after)
        return StreamingResponse(
            self._counted(event_stream(self._ledger, start, self._stream, self._stopping)),
            media_type="text/event-stream",
            # X-Accel-Buffering: a buffering reverse proxy (nginx) would hold the events back.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _counted(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        self._open_streams += 1
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self._open_streams -= 1

    async def static(self, name: str) -> Response:
        asset = self._assets.get(name)
        if asset is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        return Response(
            asset.body,
            media_type=asset.media_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    async def login_form(
        self, request: Request, next_path: Annotated[str, Query(alias="next")] = "/dashboard"
    ) -> Response:
        if self._signed_in(request):
            return RedirectResponse(_safe_next(next_path), status.HTTP_303_SEE_OTHER)
        error = _disabled_note(self._auth)
        return _html(pages.login_page(self._chrome(), next_path=_safe_next(next_path), error=error))

    async def login(self, request: Request) -> Response:
        # A login posted from another origin would sign the browser in as someone else chose.
        if "origin" in request.headers and not same_origin(request):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in from the dashboard's own page")
        form = parse_qs((await request.body()).decode(errors="replace"))
        token, next_path = form.get("token", [""])[0], _safe_next(form.get("next", ["/dashboard"])[0])
        if not self._auth.token_matches(token):
            return self._refused(request, next_path)
        _log.info("dashboard_login", client=_client(request))
        response = RedirectResponse(next_path, status.HTTP_303_SEE_OTHER)
        self._auth.set_session(response, request, ttl_s=self._settings.session_ttl_s)
        return response

    async def logout(self) -> Response:
        response = RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
        self._auth.clear_session(response)
        return response

    async def overview(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        after, paused = await self._stream_start()
        runs = await self._runs_table()
        queues = pages.queues_table(await _queue_depths(self._transport, self._queues))
        page = pages.overview_page(
            self._chrome(after=after, paused=paused), runs=runs, queues=queues, policy=self._policy, paused=paused
        )
        return _html(page)

    async def run_page(self, request: Request, run_id: str) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        after, paused = await self._stream_start()
        chrome = self._chrome(after=after, paused=paused)
        found = await self._ledger.run(run_id)
        if found is None:
            return _html(pages.page("No such run", chrome, _missing(f"No run {run_id}.")), status.HTTP_404_NOT_FOUND)
        details = pages.run_details(*found, datetime.now(UTC))
        log_url = f"/api/runs/{quote(run_id)}/log?tail_bytes={self._settings.log_tail_bytes}"
        return _html(pages.run_page(chrome, run_id, details, log_url=log_url))

    async def tree_page(self, request: Request, owner: str, repo: str, number: int) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        root = _root(owner, repo, number)
        after, paused = await self._stream_start()
        details = await self._tree_details(root)
        actions = f"/api/trees/{quote(owner)}/{quote(repo)}/{number}"
        return _html(pages.tree_page(self._chrome(after=after, paused=paused), root.key, details, actions_path=actions))

    async def runs_fragment(self) -> Response:
        return _html(await self._runs_table())

    async def queues_fragment(self) -> Response:
        return _html(pages.queues_table(await _queue_depths(self._transport, self._queues)))

    async def run_fragment(self, run_id: str) -> Response:
        found = await self._ledger.run(run_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
        return _html(pages.run_details(*found, datetime.now(UTC)))

    async def tree_fragment(self, owner: str, repo: str, number: int) -> Response:
        return _html(await self._tree_details(_root(owner, repo, number)))

    async def _stream_start(self) -> tuple[int, bool]:
        # Read before the page's data: the page's stream starts after this event, so nothing falls in between.
        return await self._ledger.last_event_id(), await self._ledger.paused()

    async def _runs_table(self) -> Html:
        return pages.runs_table(await self._ledger.runs(limit=self._settings.runs_shown), datetime.now(UTC))

    async def _tree_details(self, root: IssueRef) -> Html:
        totals = await self._ledger.tree(root.key)
        runs = await self._ledger.runs(root_key=root.key, limit=_TREE_RUNS_SHOWN)
        return pages.tree_details(totals, runs, self._policy.caps)

    def _gate(self, request: Request) -> Response | None:
        """None for a signed-in request; else what to answer instead of the page (never its data)."""
        token = request.query_params.get("token")
        if token is not None:
            # /dashboard?token=…: sign in, then show the same page without the token in its address.
            if not self._auth.token_matches(token):
                return self._refused(request, request.url.path)
            _log.info("dashboard_login", client=_client(request))
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status.HTTP_303_SEE_OTHER)
            self._auth.set_session(response, request, ttl_s=self._settings.session_ttl_s)
            return response
        if self._signed_in(request):
            return None
        return RedirectResponse("/dashboard/login?" + urlencode({"next": request.url.path}), status.HTTP_303_SEE_OTHER)

    def _refused(self, request: Request, next_path: str) -> Response:
        _log.warning("dashboard_login_refused", client=_client(request))
        error = _disabled_note(self._auth) or "That is not the API token."
        page = pages.login_page(self._chrome(), next_path=_safe_next(next_path), error=error)
        return _html(page, status.HTTP_401_UNAUTHORIZED)

    def _signed_in(self, request: Request) -> bool:
        try:
            self._auth.check(request)
        except HTTPException:
            return False
        return True

    def _chrome(self, *, after: int | None = None, paused: bool | None = None) -> pages.Chrome:
        return pages.Chrome(
            css_href=f"/dashboard/static/dashboard.css?v={self._assets['dashboard.css'].version}",
            js_href=f"/dashboard/static/dashboard.js?v={self._assets['dashboard.js'].version}",
            events_url=f"/api/events?after={after}" if after is not None else None,
            paused=paused,
        )


async def _queue_depths(transport: QueueTransport, queues: QueueUrls) -> dict[str, QueueDepth] | None:
    urls: dict[str, str] = {}
    for name in QueueName:
        pair = queues.pair(name)
        urls[name.value] = pair.url
        urls[f"{name.value}-dlq"] = pair.dead_letter_url
    try:
        async with asyncio.timeout(_DEPTH_TIMEOUT_S):
            found = await asyncio.gather(*(transport.depth(url) for url in urls.values()))
    except Exception:
        _log.warning("dashboard_queue_depths_failed", exc_info=True)
        return None
    return dict(zip(urls, found, strict=True))


def _root(owner: str, repo: str, number: int) -> IssueRef:
    try:
        return IssueRef(repo=f"{owner}/{repo}", number=number)
    except ValueError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None


def _safe_next(path: str) -> str:
    # Only a page of this dashboard: an open redirect would lend the login page to phishing.
    if path.startswith("/dashboard") and not path.startswith("//") and "\\" not in path and path.isprintable():
        return path
    return "/dashboard"


def _disabled_note(auth: ApiAuth) -> str | None:
    return None if auth.enabled else "The API is disabled: set COORDINATOR_API__TOKEN."


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _missing(text: str) -> Html:
    return el("p", text, class_="empty")


def _html(content: str, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=_PAGE_HEADERS)


def _load_assets() -> Mapping[str, _Asset]:
    folder = files(__package__ or "coordinator.dashboard") / "static"
    loaded: dict[str, _Asset] = {}
    for name, media_type in _ASSETS.items():
        body = (folder / name).read_bytes()
        loaded[name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])
    return loaded
