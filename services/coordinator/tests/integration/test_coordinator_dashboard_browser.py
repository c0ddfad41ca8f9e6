"""The dashboard in a real browser: headless Chromium (Debian's) driven by playwright, against the coordinator
served by uvicorn on 127.0.0.1, the real broker and the GitHub test server.

A person signs in, a nudge launches a run, lifecycle events come in as a grid worker would send them, and the
page follows along without reloading; then the run, its tree and the pause button. Screenshots are left in
``.local/artifacts/`` for a person to look at.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted, ExitReason
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_contracts.public_usage import Usage
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_testing import CHROMIUM, CHROMIUM_ARGS
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubSettings
from coordinator.api.public_api import ApiSettings
from coordinator.app import create_app
from coordinator.dashboard.public_dashboard import DashboardSettings
from coordinator.settings import Settings
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr

pytestmark = [pytest.mark.connected, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[4]
ARTIFACTS = REPO_ROOT / ".local" / "artifacts"
CHROMIUM_INSTALLED = CHROMIUM.exists()
TOKEN = "browser-test-token"
GRID_TOKEN = "browser-test-grid-token"
ALICE = Actor(login="alice", association=AuthorAssociation.MEMBER)
BOT = "agent-grid[bot]"
WAIT_MS = 15_000  # how long the page may take to show something: polling the stream and the broker


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_INSTALLED:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make browser` installs it")
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs it (Debian's chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def serve_until_ready(
    app: FastAPI, stop: asyncio.Event, *, ready_path: str = "/healthz"
) -> tuple[str, "asyncio.Task[None]"]:
    port = find_free_port()
    serving = asyncio.create_task(serve_http(app, host="127.0.0.1", port=port, stop=stop))
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(20):
        while True:
            try:
                if (await client.get(ready_path)).status_code == 200:
                    return base_url, serving
            except httpx.ConnectError:
                pass
            await asyncio.sleep(0.05)


def grid_worker_logs() -> FastAPI:
    """A grid worker's ``GET /runs/{id}/log``, as the coordinator's log proxy reads it (with the workers' token)."""
    worker = FastAPI()

    @worker.get("/runs/{run_id}/log")
    async def log(run_id: str, request: Request) -> PlainTextResponse:
        if request.headers.get("authorization") != f"Bearer {GRID_TOKEN}":
            return PlainTextResponse("unauthorised", status_code=401)
        return PlainTextResponse(f"{run_id}: hello from the agent\nall done\n")

    return worker


async def only_launch(sqs: QueueTransport, queues: QueueUrls) -> LaunchAgent:
    """The launch the coordinator published, taken off the queue as a grid worker would."""
    async with asyncio.timeout(15):
        while True:
            batch = await sqs.receive(queues.launches.url, max_messages=10, wait_time_s=1, visibility_timeout_s=60)
            if batch:
                await sqs.delete_batch(queues.launches.url, [message.receipt_handle for message in batch])
                [launch] = [decode(message.body).body for message in batch]
                assert isinstance(launch, LaunchAgent)
                return launch


async def comments(github_url: str, bot_token: str, number: int) -> list[str]:
    async with httpx.AsyncClient(base_url=github_url, headers={"Authorization": f"token {bot_token}"}) as client:
        found = (await client.get(f"repos/octo/widgets/issues/{number}/comments")).json()
    return [comment["body"] for comment in found]


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"dashboard screenshot: {path}")  # noqa: T201 (where to look, shown with -s or on failure)
    return path


async def test_a_person_follows_a_run_live_in_the_browser_and_pauses_launches(
    browser: Browser,
    sqs: QueueTransport,
    aws_settings: AwsSettings,
    queue_settings: QueueSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The coordinator's token for the grid workers' API, for its log proxy (an environment variable: the proxy's
    # settings section is the proxy's own).
    monkeypatch.setenv("COORDINATOR_GRID_API__TOKEN", GRID_TOKEN)
    github = FakeGitHub()
    for login in ("alice", BOT):
        github.add_user(login)
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    bot_token = github.add_token(BOT)
    first = github.add_issue("octo", "widgets", "Build the widget", author="alice", labels=["agent-grid"])
    second = github.add_issue("octo", "widgets", "Polish the widget", author="alice", labels=["agent-grid"])
    stop = asyncio.Event()

    async with serve_github(github) as running:
        worker_url, worker_serving = await serve_until_ready(grid_worker_logs(), stop, ready_path="/docs")
        monkeypatch.setenv("COORDINATOR_GRID_API__ALLOWED_URL_PREFIXES", json.dumps([worker_url]))
        settings = Settings(
            aws=aws_settings,
            queues=queue_settings,
            ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}",
            github=GitHubSettings(api_url=running.base_url, token=SecretStr(bot_token), write_interval_s=0),
            api=ApiSettings(token=SecretStr(TOKEN)),
            dashboard=DashboardSettings(events_poll_interval_s=0.2),
        )
        base_url, serving = await serve_until_ready(create_app(settings), stop)
        queues = await resolve_queues(sqs, queue_settings)
        lifecycle = Publisher(transport=sqs, queue_url=queues.lifecycle.url)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            # Signed out, the dashboard is the login page and nothing else.
            await page.goto(f"{base_url}/dashboard")
            assert "/dashboard/login" in page.url
            await expect(page.locator("main")).not_to_contain_text("Runs")
            await page.fill("input[name=token]", TOKEN)
            await page.click("form.login button[type=submit]")
            await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
            await expect(page.locator("#runs")).to_contain_text("No runs yet.")
            await expect(page.locator("#queues tr[data-queue='nudges-dlq']")).to_be_visible()
            await expect(page.locator("#policy")).to_contain_text("Cost per tree")
            # A reload would lose this: it proves the page below changes in place.
            await page.evaluate("window.sameDocument = 'yes'")

            # A nudge on an opted-in issue: the coordinator launches, and the run appears.
            nudge = Nudge(
                issue=IssueRef(repo="octo/widgets", number=first.number), reason=NudgeReason.ISSUE_LABELED, actor=ALICE
            )
            await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(wrap(nudge, producer="test"))
            row = page.locator("#runs tr[data-run-id]")
            await expect(row).to_have_count(1, timeout=WAIT_MS)
            badge = row.locator(".badge")
            await expect(badge).to_have_text("launching")
            launch = await only_launch(sqs, queues)
            assert await row.get_attribute("data-run-id") == launch.run_id
            await expect(row).to_contain_text(f"octo/widgets#{first.number}")
            await expect(row).to_contain_text("plan")

            # The grid worker's reports.
            worker, issue = "worker-browser", launch.issue
            started = AgentStarted(
                run_id=launch.run_id,
                issue=issue,
                worker_id=worker,
                started_at=datetime.now(UTC),
                log_url=f"{worker_url}/runs/{launch.run_id}/log",
            )
            await lifecycle.publish(wrap(started, producer="grid"))
            await expect(badge).to_have_text("running", timeout=WAIT_MS)
            usage = Usage(input_tokens=3000, output_tokens=1321, cost_usd=0.42, reported=True)
            beat = AgentHeartbeat(
                run_id=launch.run_id, issue=issue, worker_id=worker, sequence=1, elapsed_s=5, usage=usage
            )
            await lifecycle.publish(wrap(beat, producer="grid"))
            exited = AgentExited(
                run_id=launch.run_id,
                issue=issue,
                worker_id=worker,
                reason=ExitReason.SUCCESS,
                exit_code=0,
                duration_s=12,
                usage=usage,
                summary="built it",
            )
            await lifecycle.publish(wrap(exited, producer="grid"))
            await expect(badge).to_have_text("exited · success", timeout=WAIT_MS)
            await expect(row).to_contain_text("$0.42")
            await expect(row).to_contain_text("4,321")
            assert await page.evaluate("window.sameDocument") == "yes"  # no reload happened

            # The run's page: its transitions and its log section.
            await row.locator("td").nth(1).locator("a").click()
            await expect(page.locator("h1")).to_contain_text(launch.run_id)
            events = page.locator("table.events")
            for kind in ("launched", "started", "exited"):
                await expect(events).to_contain_text(kind)
            # The log comes through the coordinator's proxy (GET /api/runs/{id}/log), built separately: with it the
            # worker's log shows; without it the section says the log is unavailable rather than hang on "Loading…".
            log = page.locator("pre[data-log]")
            async with httpx.AsyncClient(base_url=base_url) as client:
                paths = (await client.get("/openapi.json")).json()["paths"]
            if "/api/runs/{run_id}/log" in paths:
                await expect(log).to_have_attribute("data-state", "loaded", timeout=WAIT_MS)
                await expect(log).to_contain_text(f"{launch.run_id}: hello from the agent")
            else:
                await expect(log).to_have_attribute("data-state", "unavailable", timeout=WAIT_MS)
                await expect(page.locator("[data-log-status]")).to_contain_text("Log unavailable (HTTP 404")
            await screenshot(page, "dashboard-run.png")

            # The tree's page: the issue's state and the tree's spend against its budget; kill and revive.
            await page.locator("dl.facts a").first.click()
            await expect(page.locator("h1")).to_contain_text(f"octo/widgets#{first.number}")
            node = page.locator(f"table.nodes tr[data-issue='github:octo/widgets#{first.number}']")
            await expect(node).to_contain_text("exited · success")
            await expect(page.locator("tr[data-budget='cost']")).to_contain_text("$0.42 of $25.00")
            page.once("dialog", lambda dialog: dialog.accept())
            await page.get_by_role("button", name="Kill tree").click()
            await expect(page.locator("[data-killed]")).to_have_text("killed", timeout=WAIT_MS)
            await page.get_by_role("button", name="Revive tree").click()
            await expect(page.locator("[data-killed]")).to_have_text("off", timeout=WAIT_MS)
            await screenshot(page, "dashboard-tree.png")

            # Pause: the page shows it (from the stream), and a nudge now waits instead of launching.
            await page.get_by_role("link", name="Runs").click()
            await page.get_by_role("button", name="Pause launches").click()
            await expect(page.locator("[data-paused-text]")).to_have_text("paused", timeout=WAIT_MS)
            await expect(page.locator(".paused-badge")).to_be_visible()
            await expect(page.get_by_role("button", name="Resume launches")).to_be_visible()
            async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                assert (await api.get("/api/policy")).json()["paused"] is True
            nudge = Nudge(
                issue=IssueRef(repo="octo/widgets", number=second.number), reason=NudgeReason.ISSUE_LABELED, actor=ALICE
            )
            await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(wrap(nudge, producer="test"))
            async with asyncio.timeout(15):
                while not any("paused" in body for body in await comments(running.base_url, bot_token, second.number)):
                    await asyncio.sleep(0.1)
            await expect(page.locator("#runs tr[data-run-id]")).to_have_count(1)
            await screenshot(page, "dashboard.png")
        finally:
            await page.close()
            stop.set()
            async with asyncio.timeout(10):  # an open event stream must not hold the stop
                await serving
                await worker_serving
