"""The coordinator as an operator meets it, served over HTTP on the real broker: /metrics and the log proxy.

The grid worker's side of the log proxy (a real worker's log, its token, a run it no longer has) is tested at
the repository level (tests/test_run_log_proxy.py): a service's tests never import another service.
"""

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from agent_grid_runtime.public_settings import AwsSettings, HttpSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubSettings
from coordinator.api.public_api import ApiSettings
from coordinator.api.public_run_logs import GridApiSettings
from coordinator.app import create_app
from coordinator.handling.public_outbox import OutboxSettings
from coordinator.settings import Settings
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

pytestmark = pytest.mark.connected

ALICE = Actor(login="alice", association=AuthorAssociation.MEMBER)
BOT = "agent-grid[bot]"
API_TOKEN = "operator-token"
REPO = "octo/widgets"


@dataclass
class Served:
    github: FakeGitHub
    bot_token: str
    sqs: QueueTransport
    queues: QueueUrls
    api: httpx.AsyncClient  # the coordinator over HTTP, authorised

    async def launch(self, title: str) -> LaunchAgent:
        """A new opted-in issue, nudged by alice; the one launch that follows."""
        issue = self.github.add_issue("octo", "widgets", title, author="alice", labels=["agent-grid"])
        await self.nudge(issue.number)
        async with asyncio.timeout(10):
            while not (found := await self.drain(self.queues.launches.url)):
                pass
        [launch] = found
        assert isinstance(launch, LaunchAgent)
        return launch

    async def nudge(self, number: int) -> None:
        nudge = Nudge(issue=IssueRef(repo=REPO, number=number), reason=NudgeReason.ISSUE_LABELED, actor=ALICE)
        await Publisher(transport=self.sqs, queue_url=self.queues.nudges.url).publish(wrap(nudge, producer="test"))

    async def lifecycle(self, *bodies: Any) -> None:
        publisher = Publisher(transport=self.sqs, queue_url=self.queues.lifecycle.url)
        for body in bodies:
            await publisher.publish(wrap(body, producer="grid"))
        await self.settled(self.queues.lifecycle.url)

    async def settled(self, url: str) -> None:
        async with asyncio.timeout(10):
            while True:
                depth = await self.sqs.depth(url)
                if depth.visible + depth.in_flight + depth.delayed == 0:
                    return
                await asyncio.sleep(0.05)

    async def drain(self, url: str) -> list[Any]:
        batch = await self.sqs.receive(url, max_messages=10, wait_time_s=1, visibility_timeout_s=60)
        if batch:
            await self.sqs.delete_batch(url, [message.receipt_handle for message in batch])
        return [decode(message.body).body for message in batch]

    async def metrics(self) -> str:
        response = await self.api.get("/metrics")
        assert response.status_code == 200
        return response.text

    async def run_state(self, run_id: str) -> str:
        state: str = (await self.api.get(f"/api/runs/{run_id}")).json()["state"]
        return state


Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[Served]:
        github = FakeGitHub()
        for login in ("alice", BOT):
            github.add_user(login)
        github.add_organization("octo", members=["alice"])
        github.add_repo("octo", "widgets")
        bot_token = github.add_token(BOT)
        port = find_free_port()
        async with serve_github(github) as running:
            settings = Settings(
                aws=aws_settings,
                queues=queue_settings,
                http=HttpSettings(port=port),
                ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}",
                github=GitHubSettings(api_url=running.base_url, token=SecretStr(bot_token), write_interval_s=0),
                api=ApiSettings(token=SecretStr(API_TOKEN)),
                metrics_max_age_s=0,
                **overrides,
            )
            stop = asyncio.Event()
            serving = asyncio.create_task(serve_http(create_app(settings), host="127.0.0.1", port=port, stop=stop))
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=15
                ) as api:
                    async with asyncio.timeout(30):
                        while True:
                            try:
                                if (await api.get("/healthz")).status_code == 200:
                                    break
                            except httpx.TransportError:
                                pass
                            assert not serving.done(), "the coordinator stopped while starting"
                            await asyncio.sleep(0.05)
                    yield Served(github, bot_token, sqs, await resolve_queues(sqs, queue_settings), api)
            finally:
                stop.set()
                await serving

    return serve


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


async def test_a_running_coordinator_reports_decisions_runs_spend_and_githubs_rate_limit(serve: Serve) -> None:
    async with serve() as grid:
        launch = await grid.launch("Spend some")
        root = launch.issue.key
        await grid.lifecycle(
            AgentStarted(run_id=launch.run_id, issue=launch.issue, worker_id="w1", started_at=datetime.now(UTC)),
            AgentHeartbeat(
                run_id=launch.run_id,
                issue=launch.issue,
                worker_id="w1",
                sequence=0,
                elapsed_s=1,
                usage=Usage(cost_usd=0.5, reported=True),
            ),
        )
        running = await grid.metrics()

        await grid.lifecycle(
            AgentExited(
                run_id=launch.run_id,
                issue=launch.issue,
                worker_id="w1",
                reason=ExitReason.BUDGET_EXHAUSTED,
                usage=Usage(cost_usd=2.0, reported=True),
            )
        )
        # The kill switch on another tree: its nudge is refused.
        killed = grid.github.add_issue("octo", "widgets", "Stopped", author="alice", labels=["agent-grid"])
        assert (await grid.api.post(f"/api/trees/octo/widgets/{killed.number}/kill")).status_code == 200
        await grid.nudge(killed.number)
        await grid.settled(grid.queues.nudges.url)
        await grid.api.post("/api/pause")
        ended = await grid.metrics()

    assert value(running, "agent_grid_active_runs", state="running") == 1
    assert value(running, "agent_grid_active_runs", state="launching") == 0
    assert value(running, "agent_grid_tree_spend_usd", root=root) == 0.5
    assert value(running, "agent_grid_tree_budget_usd") == 25.0
    assert value(running, "agent_grid_repo_daily_budget_usd") == 50.0
    assert value(running, "agent_grid_decisions_total", verdict="launch") == 1
    assert value(running, "agent_grid_ledger_up") == 1
    assert value(running, "agent_grid_queue_messages", queue="nudges", state="visible") is not None

    assert value(ended, "agent_grid_active_runs", state="running") == 0
    assert value(ended, "agent_grid_tree_spend_usd", root=root) is None, "no active run left in that tree"
    assert value(ended, "agent_grid_repo_spend_today_usd", repo=REPO) == 2.0
    assert value(ended, "agent_grid_runs_ended_total", reason="budget_exhausted") == 1
    assert value(ended, "agent_grid_escalations_total", cause="budget_exhausted") == 1
    assert value(ended, "agent_grid_escalations_total", cause="circuit_breaker") == 0
    assert value(ended, "agent_grid_refusals_total", cap="kill_switch") == 1
    assert value(ended, "agent_grid_decisions_total", verdict="refuse") == 1
    assert value(ended, "agent_grid_paused") == 1
    # The coordinator read and wrote GitHub with its bot's token: the window GitHub last reported for it.
    remaining = value(ended, "agent_grid_github_rate_limit_remaining", resource="core")
    assert remaining is not None
    assert 0 < remaining < 5000
    assert value(ended, "agent_grid_github_rate_limit_remaining", resource="graphql") is not None


async def test_a_silent_run_is_declared_lost_and_counted(serve: Serve) -> None:
    async with serve(lost_after_s=1, sweep_interval_s=0.2) as grid:
        launch = await grid.launch("Never heard from")  # no worker ever starts it
        async with asyncio.timeout(15):
            while await grid.run_state(launch.run_id) != "lost":
                await asyncio.sleep(0.1)
        metrics = await grid.metrics()

    assert value(metrics, "agent_grid_runs_declared_lost_total") == 1
    assert value(metrics, "agent_grid_runs_ended_total", reason="lost") == 1


async def test_a_github_write_that_keeps_failing_is_parked_and_shown_to_the_operator(serve: Serve) -> None:
    outbox = OutboxSettings(max_attempts=2, retry_initial_s=0.05, retry_max_s=0.05)
    async with serve(outbox=outbox) as grid:
        grid.github.fail_next("POST", "/repos/octo/widgets/issues/", count=1000)  # comments and assignees: 502
        launch = await grid.launch("Poison")
        async with asyncio.timeout(10):
            while (shown := (await grid.api.get("/api/outbox")).json())["parked"] < 2:  # the status, the assignee
                await asyncio.sleep(0.05)
        metrics = await grid.metrics()

    assert shown["pending"] == 0
    parked = {write["key"]: write for write in shown["parked_writes"]}
    assert set(parked) == {"status", f"assignee:{BOT}"}
    assert parked["status"]["issue"] == launch.issue.key
    assert parked["status"]["attempts"] == 2
    assert "502" in parked["status"]["last_error"]
    assert value(metrics, "agent_grid_outbox_parked_writes") == shown["parked"]


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung worker."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_the_log_proxy_says_404_502_or_504_and_why(serve: Serve) -> None:
    closed_port = find_free_port()
    with black_hole() as hung_port:
        workers = [f"http://127.0.0.1:{closed_port}", f"http://127.0.0.1:{hung_port}"]
        grid_api = GridApiSettings(token=SecretStr("grid-token"), timeout_s=1, allowed_url_prefixes=workers)
        async with serve(grid_api=grid_api) as grid:
            unknown = await grid.api.get("/api/runs/run-nobody/log")
            unreachable = await grid.launch("Its worker will be gone")
            not_started = await grid.api.get(f"/api/runs/{unreachable.run_id}/log")
            hung = await grid.launch("Its worker hangs")
            await grid.lifecycle(
                *(
                    AgentStarted(
                        run_id=launch.run_id,
                        issue=launch.issue,
                        worker_id=worker,
                        started_at=datetime.now(UTC),
                        log_url=f"http://127.0.0.1:{port}/runs/{launch.run_id}/log",
                    )
                    for launch, worker, port in ((unreachable, "w-gone", closed_port), (hung, "w-hung", hung_port))
                )
            )
            detail = (await grid.api.get(f"/api/runs/{unreachable.run_id}")).json()
            gone = await grid.api.get(f"/api/runs/{unreachable.run_id}/log")
            slow = await grid.api.get(f"/api/runs/{hung.run_id}/log", params={"tail_bytes": 100})
            refused = await grid.api.get(f"/api/runs/{unreachable.run_id}/log", headers={"Authorization": "Bearer no"})

    assert (unknown.status_code, unknown.json()["detail"]) == (404, "no run run-nobody")
    assert not_started.status_code == 404
    assert "has not started" in not_started.json()["detail"]
    assert detail["log_url"] == f"http://127.0.0.1:{closed_port}/runs/{unreachable.run_id}/log"
    assert gone.status_code == 502
    assert gone.json()["detail"] == f"the grid worker at http://127.0.0.1:{closed_port} is unreachable: ConnectError"
    assert slow.status_code == 504
    assert slow.json()["detail"] == f"the grid worker at http://127.0.0.1:{hung_port} did not answer in time"
    assert refused.status_code == 401


async def test_without_the_workers_token_the_log_proxy_says_what_to_set(serve: Serve) -> None:
    async with serve() as grid:
        launch = await grid.launch("Started")
        await grid.lifecycle(
            AgentStarted(
                run_id=launch.run_id,
                issue=launch.issue,
                worker_id="w1",
                started_at=datetime.now(UTC),
                log_url=f"http://127.0.0.1:9/runs/{launch.run_id}/log",
            )
        )
        answer = await grid.api.get(f"/api/runs/{launch.run_id}/log")

    assert answer.status_code == 502
    assert "COORDINATOR_GRID_API__TOKEN" in answer.json()["detail"]
