"""The coordinator end to end on the real broker, against the GitHub test server and a real ledger.

Nudges in → decisions → launches out; lifecycle events in → the ledger, status comments and follow-ups.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunMode
from agent_grid_contracts.public_lifecycle import AgentExited, AgentStarted, ExitReason
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_contracts.public_usage import Usage
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_queues import QueueUrls, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from coordinator.api.public_api import ApiSettings
from coordinator.app import create_app
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.settings import Settings
from pydantic import SecretStr

pytestmark = pytest.mark.connected

ALICE = Actor(login="alice", association=AuthorAssociation.MEMBER)
MALLORY = Actor(login="mallory", association=AuthorAssociation.NONE)
BOT = "agent-grid[bot]"


@dataclass
class Grid:
    github: FakeGitHub
    tracker: GitHubTracker  # to look at the issues as GitHub shows them
    sqs: QueueTransport
    queues: QueueUrls

    async def nudge(
        self,
        number: int,
        actor: Actor | None = ALICE,
        reason: NudgeReason = NudgeReason.ISSUE_LABELED,
        *,
        copies: int = 1,
    ) -> None:
        """``copies`` separate messages saying the same thing, all sent before any is handled."""
        nudge = Nudge(issue=IssueRef(repo="octo/widgets", number=number), reason=reason, actor=actor)
        envelopes = [wrap(nudge, producer="test") for _ in range(copies)]
        await Publisher(transport=self.sqs, queue_url=self.queues.nudges.url).publish_many(envelopes)

    async def lifecycle(self, body: Any) -> None:
        await Publisher(transport=self.sqs, queue_url=self.queues.lifecycle.url).publish(wrap(body, producer="grid"))

    async def drain(self, url: str, *, wait_s: float = 2.0) -> list[Any]:
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            batch = await self.sqs.receive(url, max_messages=10, wait_time_s=1, visibility_timeout_s=60)
            found.extend(decode(message.body).body for message in batch)
            if batch:
                await self.sqs.delete_batch(url, [message.receipt_handle for message in batch])
        return found

    async def comments(self, number: int) -> list[str]:
        return [c.body for c in (await self.tracker.view(IssueRef(repo="octo/widgets", number=number))).comments]

    async def assignees(self, number: int) -> tuple[str, ...]:
        return (await self.tracker.get_issue(IssueRef(repo="octo/widgets", number=number))).assignees


def seeded_github() -> tuple[FakeGitHub, str]:
    """The octo org (alice a member), its widgets repository, an outsider, our bot; returns the bot's token."""
    github = FakeGitHub()
    for login in ("alice", "mallory", BOT):
        github.add_user(login)
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    return github, github.add_token(BOT)


def coordinator_settings(
    api_url: str, token: str, aws: AwsSettings, queues: QueueSettings, state: Path, **overrides: Any
) -> Settings:
    return Settings(
        aws=aws,
        queues=queues,
        ledger_url=f"sqlite+aiosqlite:///{state / 'ledger.sqlite3'}",
        github=GitHubSettings(api_url=api_url, token=SecretStr(token), write_interval_s=0),
        **overrides,
    )


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
async def grid(
    sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path, policy: Policy
) -> AsyncIterator[Grid]:
    github, token = seeded_github()
    async with serve_github(github) as running:
        settings = coordinator_settings(running.base_url, token, aws_settings, queue_settings, tmp_path, policy=policy)
        app = create_app(settings)
        async with app.router.lifespan_context(app), open_github_tracker(settings.github) as tracker:  # type: ignore[arg-type]
            yield Grid(github, tracker, sqs, await resolve_queues(sqs, queue_settings))


async def test_a_trusted_nudge_launches_once_and_the_run_is_recorded_and_reported(grid: Grid) -> None:
    issue = grid.github.add_issue("octo", "widgets", "Do it", author="alice", labels=["agent-grid"])
    await grid.nudge(issue.number, copies=3)  # the same request three times (duplicate webhooks, say)

    launches = await grid.drain(grid.queues.launches.url)
    assert len(launches) == 1
    launch: LaunchAgent = launches[0]
    assert (launch.issue.number, launch.mode, launch.prompt_inputs["authorised_by"]) == (
        issue.number,
        RunMode.PLAN,
        "alice",
    )
    assert launch.limits.max_cost_usd == 5.0
    assert await grid.assignees(issue.number) == (BOT,)
    assert "running" in (await grid.comments(issue.number))[-1]

    now = datetime.now(UTC)
    await grid.lifecycle(AgentStarted(run_id=launch.run_id, issue=launch.issue, worker_id="w1", started_at=now))
    exited = AgentExited(
        run_id=launch.run_id,
        issue=launch.issue,
        worker_id="w1",
        reason=ExitReason.SUCCESS,
        usage=Usage(cost_usd=1.25, input_tokens=1000, reported=True),
        summary="opened a PR",
    )
    await grid.lifecycle(exited)
    await grid.lifecycle(exited)  # a redelivered exit changes nothing
    await grid.drain(grid.queues.nudges.url, wait_s=3)

    comments = await grid.comments(issue.number)
    assert len(comments) == 1  # one sticky status comment, updated in place
    assert "ended: **success**" in comments[0]
    assert "1.25 USD" in comments[0]
    assert await grid.assignees(issue.number) == ()


async def test_untrusted_text_never_launches_and_a_human_assignee_keeps_the_issue(grid: Grid) -> None:
    stranger = grid.github.add_issue("octo", "widgets", "Please", author="mallory", labels=["agent-grid"])
    taken = grid.github.add_issue("octo", "widgets", "Mine", author="alice", labels=["agent-grid"], assignees=["alice"])
    await grid.nudge(stranger.number, actor=MALLORY, reason=NudgeReason.COMMENT_MENTION)
    await grid.nudge(taken.number)
    assert await grid.drain(grid.queues.launches.url) == []
    assert await grid.comments(stranger.number) == []
    assert await grid.comments(taken.number) == []


async def test_a_finished_child_nudges_its_next_sibling_and_its_parent(grid: Grid) -> None:
    parent = grid.github.add_issue("octo", "widgets", "Epic", author="alice", labels=["agent-grid"])
    first = grid.github.add_issue("octo", "widgets", "Step 1", author="alice")
    second = grid.github.add_issue("octo", "widgets", "Step 2", author="alice")
    grid.github.add_sub_issue(parent, first)
    grid.github.add_sub_issue(parent, second)

    await grid.nudge(second.number)  # out of order: waits for the first
    await grid.nudge(first.number)
    [launch] = await grid.drain(grid.queues.launches.url)
    assert launch.issue.number == first.number
    assert "waiting" in (await grid.comments(second.number))[-1]

    await grid.lifecycle(
        AgentExited(run_id=launch.run_id, issue=launch.issue, worker_id="w1", reason=ExitReason.FAILED)
    )
    # The coordinator nudges the next sibling (still behind the open first step) and the parent, whose
    # management run it then launches on the tree's authorisation.
    [managed] = await grid.drain(grid.queues.launches.url, wait_s=4)
    assert (managed.issue.number, managed.mode, managed.prompt_inputs["authorised_by"]) == (
        parent.number,
        RunMode.MANAGE,
        "alice",
    )
    assert "waiting" in (await grid.comments(second.number))[-1]

    # The root's description carries the tree's roll-up between agent-grid's markers.
    body = (await grid.tracker.get_issue(IssueRef(repo="octo/widgets", number=parent.number))).body
    assert "agent-grid tree" in body
    assert f"- [ ] octo/widgets#{first.number} Step 1" in body
    assert "0.00 / 25.00 USD" in body


async def test_the_api_shows_runs_and_trees_and_controls_launches(
    sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> None:
    github, token = seeded_github()
    issue = github.add_issue("octo", "widgets", "Do it", author="alice", labels=["agent-grid"])
    async with serve_github(github) as running:
        settings = coordinator_settings(
            running.base_url, token, aws_settings, queue_settings, tmp_path, api=ApiSettings(token=SecretStr("s3cret"))
        )
        app = create_app(settings)
        queues = await resolve_queues(sqs, queue_settings)
        grid = Grid(github, None, sqs, queues)  # type: ignore[arg-type]
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://coordinator",
                headers={"Authorization": "Bearer s3cret"},
            ) as api,
        ):
            assert (await api.get("/api/runs", headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (await api.post("/api/pause")).json() == {"paused": True}
            await grid.nudge(issue.number)
            assert await grid.drain(queues.launches.url) == []  # paused: nothing launches
            assert (await api.post("/api/resume")).json() == {"paused": False}
            await grid.nudge(issue.number)
            [launch] = await grid.drain(queues.launches.url)

            [run] = (await api.get("/api/runs", params={"issue": f"octo/widgets#{issue.number}"})).json()
            assert (run["run_id"], run["state"], run["authorised_by"]) == (launch.run_id, "launching", "alice")
            assert (run["issue"], run["root"]) == (f"github:octo/widgets#{issue.number}",) * 2
            detail = (await api.get(f"/api/runs/{launch.run_id}")).json()
            assert [event["kind"] for event in detail["events"]] == ["launched"]
            tree = (await api.get(f"/api/trees/octo/widgets/{issue.number}")).json()
            assert (tree["runs"], tree["active_runs"], tree["budget"]["max_cost_usd_per_tree"]) == (1, 1, 25.0)
            assert (await api.post(f"/api/trees/octo/widgets/{issue.number}/kill")).json()["killed"] is True
            policy = (await api.get("/api/policy")).json()
            assert policy["caps"]["max_active_runs"] == 4
            depths = (await api.get("/api/queues")).json()
            assert set(depths) == {"nudges", "nudges-dlq", "launches", "launches-dlq", "lifecycle", "lifecycle-dlq"}
            assert (await api.get("/api/runs/nope")).status_code == 404


@pytest.mark.parametrize("policy", [Policy(caps=Caps(max_active_runs=2))])
async def test_a_burst_never_exceeds_the_concurrency_cap_and_waiters_run_when_slots_free(grid: Grid) -> None:
    numbers = [
        grid.github.add_issue("octo", "widgets", f"Task {n}", author="alice", labels=["agent-grid"]).number
        for n in range(6)
    ]
    for number in numbers:  # all at once, each decision free to see open slots
        await grid.nudge(number)
    first = await grid.drain(grid.queues.launches.url, wait_s=4)
    assert len(first) == 2

    for launch in first:  # two runs end: two slots free, and the oldest waiters get them
        await grid.lifecycle(
            AgentExited(run_id=launch.run_id, issue=launch.issue, worker_id="w1", reason=ExitReason.SUCCESS)
        )
    second = await grid.drain(grid.queues.launches.url, wait_s=6)
    assert len(second) == 2
    assert {launch.issue.number for launch in first}.isdisjoint({launch.issue.number for launch in second})


async def test_a_restart_mid_stream_loses_no_launch_and_duplicates_none(
    sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> None:
    github, token = seeded_github()
    numbers = [
        github.add_issue("octo", "widgets", f"Task {n}", author="alice", labels=["agent-grid"]).number
        for n in range(12)
    ]
    async with serve_github(github) as running:
        roomy = Policy(caps=Caps(max_active_runs=100, max_active_runs_per_repo=100, max_active_runs_per_tree=100))
        settings = coordinator_settings(running.base_url, token, aws_settings, queue_settings, tmp_path, policy=roomy)
        queues = await resolve_queues(sqs, queue_settings)
        grid = Grid(github, None, sqs, queues)  # type: ignore[arg-type]
        for number in numbers:
            await grid.nudge(number, copies=2)  # every request twice, as at-least-once delivery may do

        first = create_app(settings)
        async with first.router.lifespan_context(first):
            while (await sqs.depth(queues.launches.url)).visible < 3:
                await asyncio.sleep(0.02)
        launched_before_restart = (await sqs.depth(queues.launches.url)).visible
        assert launched_before_restart < len(numbers)  # the restart really happens mid-stream
        # Stopped mid-stream (graceful drain: in-flight messages finish, the rest stay queued). A new process
        # over the same ledger picks up where it left off.
        second = create_app(settings)
        async with second.router.lifespan_context(second):
            launches = await grid.drain(queues.launches.url, wait_s=8)

    launched = [launch.issue.number for launch in launches]
    assert sorted(launched) == sorted(numbers)  # each issue exactly once: nothing lost, nothing doubled
