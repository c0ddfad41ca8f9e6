"""The dashboard's event stream and sign-in, over real HTTP (uvicorn on 127.0.0.1), against a real ledger.

A second ``Ledger`` on the same database writes the events, as another coordinator sharing it would.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_testing import InMemoryBroker
from agent_grid_tracker.public_github import GitHubSettings, open_github_tracker
from coordinator.api.public_api import ApiSettings
from coordinator.api.public_auth import SESSION_COOKIE, ApiAuth
from coordinator.app import create_app
from coordinator.dashboard.public_dashboard import DashboardSettings
from coordinator.ledger.public_ledger import Ledger, NewRun, open_ledger
from coordinator.settings import Settings
from pydantic import SecretStr

TOKEN = "dashboard-test-token"


@dataclass
class Sse:
    event: str | None
    data: str
    id: str | None
    comment: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Served:
    base_url: str
    ledger: Ledger  # the same database as the served coordinator's, through its own engine
    client: httpx.AsyncClient  # no credentials of its own
    serving: "asyncio.Task[None]"
    stop: asyncio.Event

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def run(self, run_id: str, number: int = 1) -> None:
        """A run launched on issue ``number`` (the ledger records its ``launched`` event)."""
        await self.ledger.start_run(
            NewRun(
                run_id=run_id,
                issue_key=f"github:octo/widgets#{number}",
                repo="octo/widgets",
                root_key=f"github:octo/widgets#{number}",
                mode="plan",
                agent_kind="claude_code",
                authorised_by="alice",
                trigger_message_id=None,
            ),
            now=datetime.now(UTC),
        )

    async def event(self, run_id: str, kind: str) -> None:
        await self.ledger.record_event(run_id, kind, f"{kind} detail", at=datetime.now(UTC))


def session(value: str) -> dict[str, str]:
    """The Cookie header a browser sends with this session."""
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def latin1(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Headers as bytes: HTTP allows Latin-1 in them, httpx only ASCII in str."""
    return {name.encode(): value.encode("latin-1") for name, value in headers.items()}


async def messages(response: httpx.Response) -> AsyncIterator[Sse]:
    """The stream's messages as a browser's EventSource parses them (comments kept, for the keep-alive)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield Sse(fields.get("event"), fields.get("data", ""), fields.get("id"), fields.get("comment"))
            fields = {}
            continue
        if line.startswith(":"):
            fields["comment"] = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


async def next_named(stream: AsyncIterator[Sse], *names: str, timeout_s: float = 5.0) -> Sse:
    """The next message that is one of ``names`` (``comment`` for a comment line)."""
    async with asyncio.timeout(timeout_s):
        async for message in stream:
            if message.event in names or ("comment" in names and message.comment):
                return message
    raise AssertionError(f"the stream ended before any of {names}")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    github = FakeGitHub()
    github.add_user("agent-grid[bot]")
    bot_token = github.add_token("agent-grid[bot]")
    ledger_url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    async with serve_github(github) as running:
        settings = Settings(
            queues=QueueSettings(prefix="unit"),
            ledger_url=ledger_url,
            api=ApiSettings(token=SecretStr(TOKEN)),
            dashboard=DashboardSettings(
                events_poll_interval_s=0.05, events_keepalive_s=0.5, events_backlog=50, max_event_streams=3
            ),
        )
        github_settings = GitHubSettings(api_url=running.base_url, token=SecretStr(bot_token))
        async with open_github_tracker(github_settings) as tracker:
            app = create_app(settings, transport=InMemoryBroker(), tracker=tracker)
            port = find_free_port()
            stop = asyncio.Event()
            serving = asyncio.create_task(serve_http(app, host="127.0.0.1", port=port, stop=stop))
            base_url = f"http://127.0.0.1:{port}"
            # No cookie jar: each request carries exactly the credentials the test gives it.
            jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
            async with httpx.AsyncClient(base_url=base_url, follow_redirects=False, cookies=jar) as client:
                async with asyncio.timeout(15):
                    while True:
                        try:
                            if (await client.get("/healthz")).status_code == 200:
                                break
                        except httpx.ConnectError:
                            pass
                        await asyncio.sleep(0.05)
                async with open_ledger(ledger_url) as ledger:
                    yield Served(base_url, ledger, client, serving, stop)
            stop.set()
            async with asyncio.timeout(10):
                await serving


async def test_the_stream_resumes_after_last_event_id_then_follows_new_events(served: Served) -> None:
    await served.run("run-a")  # event 1: launched
    await served.event("run-a", "started")  # 2
    await served.event("run-a", "exited")  # 3

    headers = served.bearer | {"Last-Event-ID": "1"}
    async with served.client.stream("GET", "/api/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = aiter(messages(response))
        assert (await next_named(stream, "control", "run", "resync")).json() == {"paused": False}
        replayed = [await next_named(stream, "run", "resync") for _ in range(2)]
        await served.event("run-a", "noted")  # written while the stream is open
        live = await next_named(stream, "run", "resync")

    assert [(m.event, m.id, m.json()["kind"]) for m in replayed] == [("run", "2", "started"), ("run", "3", "exited")]
    assert (live.id, live.json()["kind"], live.json()["detail"]) == ("4", "noted", "noted detail")
    run = live.json()["run"]
    assert (run["run_id"], run["issue"], run["root"], run["state"]) == (
        "run-a",
        "github:octo/widgets#1",
        "github:octo/widgets#1",
        "launching",
    )


async def test_a_first_connection_follows_from_after_and_one_without_a_position_resyncs(served: Served) -> None:
    await served.run("run-a")  # 1
    await served.event("run-a", "started")  # 2

    async with served.client.stream("GET", "/api/events", params={"after": 1}, headers=served.bearer) as response:
        stream = aiter(messages(response))
        first = await next_named(stream, "run", "resync")
    assert (first.event, first.id) == ("run", "2")

    async with served.client.stream("GET", "/api/events", headers=served.bearer) as response:
        stream = aiter(messages(response))
        resync = await next_named(stream, "run", "resync")
        await served.event("run-a", "exited")  # 3
        after_resync = await next_named(stream, "run", "resync")
    assert (resync.event, resync.id, resync.json()) == ("resync", "2", {"last_event_id": 2})
    assert (after_resync.id, after_resync.json()["kind"]) == ("3", "exited")

    # A Last-Event-ID that is no number (even one of str.isdigit's, like "²") is no position: a resync, not a 500.
    for garbage in ("\u00b2", "x1"):
        headers = latin1(served.bearer | {"Last-Event-ID": garbage})
        async with served.client.stream("GET", "/api/events", headers=headers) as response:
            assert response.status_code == 200
            first = await next_named(aiter(messages(response)), "run", "resync")
        assert first.event == "resync"


async def test_open_event_streams_are_capped_and_a_closed_one_frees_its_place(served: Served) -> None:
    async with contextlib.AsyncExitStack() as streams:
        readers = []  # kept: a reader dropped closes its response, and the server counts the stream closed
        for _ in range(3):
            response = await streams.enter_async_context(
                served.client.stream("GET", "/api/events", headers=served.bearer)
            )
            readers.append(aiter(messages(response)))
            await next_named(readers[-1], "control")
        refused = await served.client.get("/api/events", headers=served.bearer)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert "MAX_EVENT_STREAMS" in refused.json()["detail"]

    async with asyncio.timeout(10):  # the server notices the closed streams
        while True:
            async with served.client.stream("GET", "/api/events", headers=served.bearer) as response:
                if response.status_code == 200:
                    break
            await asyncio.sleep(0.05)


async def test_a_client_too_far_behind_starts_over_from_the_latest(served: Served) -> None:
    await served.run("run-a")
    for n in range(60):  # the fixture's backlog is 50
        await served.event("run-a", f"note-{n}")

    headers = served.bearer | {"Last-Event-ID": "1"}
    async with served.client.stream("GET", "/api/events", headers=headers) as response:
        first = await next_named(aiter(messages(response)), "run", "resync")
    assert (first.event, first.id) == ("resync", "61")


async def test_pausing_shows_on_the_stream_as_a_control_event(served: Served) -> None:
    async with served.client.stream("GET", "/api/events", headers=served.bearer) as response:
        stream = aiter(messages(response))
        assert (await next_named(stream, "control")).json() == {"paused": False}
        await served.ledger.set_paused(True)
        assert (await next_named(stream, "control")).json() == {"paused": True}


async def test_an_idle_stream_sends_keep_alive_comments(served: Served) -> None:
    async with served.client.stream("GET", "/api/events", headers=served.bearer) as response:
        comment = await next_named(aiter(messages(response)), "comment")
    assert comment.comment == "keep-alive"


async def test_an_open_stream_ends_when_the_server_stops(served: Served) -> None:
    async with served.client.stream("GET", "/api/events", headers=served.bearer) as response:
        stream = aiter(messages(response))
        await next_named(stream, "control")
        served.stop.set()
        async with asyncio.timeout(5):
            rest = [message async for message in stream]
            await served.serving
    assert all(message.event is None for message in rest)  # keep-alives at most


async def test_the_stream_and_the_api_refuse_requests_without_the_token_or_a_session(served: Served) -> None:
    other_token = ApiAuth(SecretStr("another-token")).new_session(now=datetime.now(UTC), ttl_s=600)
    expired = ApiAuth(SecretStr(TOKEN)).new_session(now=datetime.now(UTC) - timedelta(hours=1), ttl_s=60)
    version, expires, mac = ApiAuth(SecretStr(TOKEN)).new_session(now=datetime.now(UTC), ttl_s=60).split(".")
    stretched = f"{version}.{int(expires) + 10**6}.{mac}"  # a longer life under the same signature

    refusals = [
        await served.client.get("/api/events"),
        await served.client.get("/api/events", headers={"Authorization": "Bearer wrong"}),
        # A wrong header is judged alone, even beside a good cookie.
        await served.client.get(
            "/api/runs",
            headers={"Authorization": "Bearer wrong"}
            | session(ApiAuth(SecretStr(TOKEN)).new_session(now=datetime.now(UTC), ttl_s=60)),
        ),
    ]
    superscript = f"{version}.{expires}\u00b2.{mac}"  # "²".isdigit() is true, int("²") raises: a 401, not a 500
    for cookie in (other_token, expired, stretched, superscript, TOKEN, ""):
        refusals.append(await served.client.get("/api/events", headers=latin1(session(cookie))))
        refusals.append(await served.client.get("/api/runs", headers=latin1(session(cookie))))

    assert [r.status_code for r in refusals] == [401] * len(refusals)


async def test_signing_in_sets_a_strict_http_only_cookie_the_stream_and_the_api_accept(served: Served) -> None:
    wrong = await served.client.post("/dashboard/login", data={"token": "nope", "next": "/dashboard"})
    assert wrong.status_code == 401
    assert SESSION_COOKIE not in wrong.cookies

    signed_in = await served.client.post("/dashboard/login", data={"token": TOKEN, "next": "/dashboard/runs/x"})
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/dashboard/runs/x")
    set_cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    assert "path=/" in set_cookie
    cookie = session(signed_in.cookies[SESSION_COOKIE])
    assert TOKEN not in signed_in.cookies[SESSION_COOKIE]

    async with served.client.stream("GET", "/api/events", headers=cookie) as response:
        assert response.status_code == 200
        assert (await next_named(aiter(messages(response)), "control")).json() == {"paused": False}
    assert (await served.client.get("/api/runs", headers=cookie)).status_code == 200
    # A change made with the cookie must come from the coordinator's own origin (SameSite ignores ports).
    assert (await served.client.post("/api/pause", headers=cookie)).status_code == 403
    foreign = {"Origin": "http://127.0.0.1:1"}
    assert (await served.client.post("/api/pause", headers=cookie | foreign)).status_code == 403
    assert not await served.ledger.paused()
    own = {"Origin": served.base_url}
    assert (await served.client.post("/api/pause", headers=cookie | own)).json() == {"paused": True}
    assert await served.ledger.paused()


async def test_a_login_posted_from_another_origin_is_refused_and_next_stays_on_the_dashboard(served: Served) -> None:
    foreign = await served.client.post(
        "/dashboard/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert SESSION_COOKIE not in foreign.cookies

    offsite = await served.client.post("/dashboard/login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert offsite.headers["location"] == "/dashboard"


async def test_dashboard_pages_show_the_login_page_until_signed_in_and_never_data(served: Served) -> None:
    await served.run("run-secret-0001")

    page = await served.client.get("/dashboard")
    assert (page.status_code, page.headers["location"]) == (303, "/dashboard/login?next=%2Fdashboard")
    login = await served.client.get("/dashboard/login", params={"next": "/dashboard"})
    assert login.status_code == 200
    assert 'name="token"' in login.text
    assert "run-secret-0001" not in login.text
    for path in ("/dashboard/runs/run-secret-0001", "/dashboard/trees/octo/widgets/1"):
        assert (await served.client.get(path)).status_code == 303
    for path in (
        "/dashboard/fragments/runs",
        "/dashboard/fragments/runs/run-secret-0001",
        "/dashboard/fragments/queues",
    ):
        refused = await served.client.get(path)
        assert refused.status_code == 401
        assert "run-secret-0001" not in refused.text

    wrong = await served.client.get("/dashboard", params={"token": "nope"})
    assert wrong.status_code == 401
    assert "run-secret-0001" not in wrong.text
    by_link = await served.client.get("/dashboard", params={"token": TOKEN})
    assert (by_link.status_code, by_link.headers["location"]) == (303, "/dashboard")  # the token leaves the URL
    cookie = session(by_link.cookies[SESSION_COOKIE])

    shown = await served.client.get("/dashboard", headers=cookie)
    assert shown.status_code == 200
    assert "run-secret-0001" in shown.text
    assert "script-src 'self'" in shown.headers["content-security-policy"]
    run_page = await served.client.get("/dashboard/runs/run-secret-0001", headers=cookie)
    assert "launched" in run_page.text
    assert "/api/runs/run-secret-0001/log?tail_bytes=" in run_page.text
    tree_page = await served.client.get("/dashboard/trees/octo/widgets/1", headers=cookie)
    assert "octo/widgets#1" in tree_page.text
    assert (await served.client.get("/dashboard/static/dashboard.js")).status_code == 200  # no data in assets


async def test_what_people_and_agents_wrote_is_escaped(served: Served) -> None:
    await served.run("run-x")
    await served.ledger.record_event("run-x", "finish:done", "<script>alert(1)</script>", at=datetime.now(UTC))

    page = await served.client.get("/dashboard/runs/run-x", headers=served.bearer)

    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
