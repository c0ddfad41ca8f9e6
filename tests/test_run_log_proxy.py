"""A run's log through the coordinator: a real grid worker runs the agent, the coordinator serves its log.

Both services in this process on the real broker, over HTTP on 127.0.0.1, with the GitHub test server: the
coordinator learns the log's address from the worker's ``AgentStarted`` and fetches it with the workers' token.
"""

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, HttpSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubSettings
from coordinator.api.public_api import ApiSettings
from coordinator.api.public_run_logs import GridApiSettings, RunLogUnavailable, open_run_logs
from coordinator.app import create_app
from coordinator.settings import Settings as CoordinatorSettings
from execution_grid.settings import AgentKindSettings, WorkspaceSettings
from execution_grid.settings import Settings as GridSettings
from execution_grid.worker import run_worker
from pydantic import SecretStr

pytestmark = pytest.mark.connected

API_TOKEN = "coordinator-token"
GRID_TOKEN = "grid-token"
BOT = "agent-grid[bot]"


@asynccontextmanager
async def grid_worker(settings: GridSettings) -> AsyncIterator[str]:
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    url = f"http://127.0.0.1:{settings.http.port}"
    try:
        await until_serving(f"{url}/healthz", worker)
        yield url
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await worker


@asynccontextmanager
async def coordinator(settings: CoordinatorSettings) -> AsyncIterator[httpx.AsyncClient]:
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{settings.http.port}"
    serving = asyncio.create_task(
        serve_http(create_app(settings), host="127.0.0.1", port=settings.http.port, stop=stop)
    )
    try:
        await until_serving(f"{url}/healthz", serving)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
            yield api
    finally:
        stop.set()
        await serving


async def until_serving(url: str, task: "asyncio.Task[None]") -> None:
    async with asyncio.timeout(30), httpx.AsyncClient() as client:
        while True:
            assert not task.done(), f"the service behind {url} stopped while starting"
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


def scripted_agent() -> str:
    found = shutil.which("agent-grid-scripted-agent") or str(Path(sys.executable).parent / "agent-grid-scripted-agent")
    assert Path(found).exists(), "the scripted agent is installed with the workspace (uv sync)"
    return found


async def test_a_runs_log_comes_through_the_coordinator_from_the_worker_that_ran_it(
    sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> None:
    github = FakeGitHub()
    for login in ("alice", BOT):
        github.add_user(login)
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    bot_token = github.add_token(BOT)
    issue = github.add_issue("octo", "widgets", "Log something", author="alice", labels=["agent-grid"])
    grid_port, coordinator_port = find_free_port(), find_free_port()
    grid_url = f"http://127.0.0.1:{grid_port}"
    grid_settings = GridSettings(
        aws=aws_settings,
        queues=queue_settings,
        http=HttpSettings(port=grid_port),
        worker_id="w-logs",
        state_dir=tmp_path / "grid",
        agents={"claude_code": AgentKindSettings(executable=scripted_agent())},
        workspace=WorkspaceSettings(clone_base_url=None),
        api_token=SecretStr(GRID_TOKEN),
        public_url=grid_url,
    )

    async with serve_github(github) as running, grid_worker(grid_settings):
        coordinator_settings = CoordinatorSettings(
            aws=aws_settings,
            queues=queue_settings,
            http=HttpSettings(port=coordinator_port),
            ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}",
            github=GitHubSettings(api_url=running.base_url, token=SecretStr(bot_token), write_interval_s=0),
            api=ApiSettings(token=SecretStr(API_TOKEN)),
            grid_api=GridApiSettings(token=SecretStr(GRID_TOKEN), allowed_url_prefixes=[grid_url]),
        )
        async with coordinator(coordinator_settings) as api:
            nudge = Nudge(
                issue=IssueRef(repo="octo/widgets", number=issue.number),
                reason=NudgeReason.ISSUE_LABELED,
                actor=Actor(login="alice", association=AuthorAssociation.MEMBER),
            )
            queues = await resolve_queues(sqs, queue_settings)
            await Publisher(transport=sqs, queue_url=queues.nudges.url).publish(wrap(nudge, producer="test"))
            async with asyncio.timeout(30):
                while not (runs := (await api.get("/api/runs")).json()) or runs[0]["state"] != "exited":
                    await asyncio.sleep(0.1)
            run_id = runs[0]["run_id"]
            detail = (await api.get(f"/api/runs/{run_id}")).json()
            whole = await api.get(f"/api/runs/{run_id}/log")
            tail = await api.get(f"/api/runs/{run_id}/log", params={"tail_bytes": 40})
            async with httpx.AsyncClient(base_url=grid_url) as worker:
                own = await worker.get(f"/runs/{run_id}/log", headers={"Authorization": f"Bearer {GRID_TOKEN}"})

        # The same worker, asked with another token or for a run it never had.
        workers = [grid_url]
        wrong = GridApiSettings(token=SecretStr("not-the-grid-token"), allowed_url_prefixes=workers)
        async with open_run_logs(wrong) as wrong_token:
            with pytest.raises(RunLogUnavailable) as refused:
                await wrong_token.fetch(run_id, detail["log_url"])
        right = GridApiSettings(token=SecretStr(GRID_TOKEN), allowed_url_prefixes=workers, max_bytes=1024)
        async with open_run_logs(right) as logs:
            with pytest.raises(RunLogUnavailable) as forgotten:
                await logs.fetch("run-elsewhere", f"{grid_url}/runs/run-elsewhere/log")
            with pytest.raises(RunLogUnavailable) as not_allowed:
                await logs.fetch(run_id, "file:///etc/passwd")
            with pytest.raises(RunLogUnavailable) as elsewhere:
                await logs.fetch(run_id, f"http://127.0.0.1:{find_free_port()}/runs/{run_id}/log")
            capped = await logs.fetch(run_id, detail["log_url"])
        # Without the workers named, the token goes nowhere.
        async with open_run_logs(GridApiSettings(token=SecretStr(GRID_TOKEN))) as unnamed:
            with pytest.raises(RunLogUnavailable) as unconfigured:
                await unnamed.fetch(run_id, detail["log_url"])

    assert detail["log_url"] == f"{grid_url}/runs/{run_id}/log"
    assert whole.status_code == 200
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.text == own.text
    assert '"subtype":"init"' in whole.text  # what the agent printed first (Claude Code's stream-json)
    assert tail.status_code == 200
    assert tail.content == whole.content[-40:]
    assert refused.value.status == 502
    assert "refused the coordinator's token" in refused.value.detail
    assert forgotten.value.status == 404
    assert not_allowed.value.status == 502
    assert (elsewhere.value.status, "not an allowed grid worker address" in elsewhere.value.detail) == (502, True)
    assert (unconfigured.value.status, "ALLOWED_URL_PREFIXES" in unconfigured.value.detail) == (502, True)
    assert len(whole.content) > 1024
    assert capped.encode() == whole.content[:1024], "at most max_bytes are relayed"
