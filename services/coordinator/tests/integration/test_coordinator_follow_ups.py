"""A finished run's follow-up nudges are never lost: a failed publish, a cancelled handler or a restart retries them.

The coordinator's handlers are driven directly (as its consumers call them), against the GitHub test server, a
real ledger and the in-memory broker; the nudges' publisher fails or hangs on demand.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import AgentExited, ExitReason
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_sqs import MessageContext, Publisher, PublishError
from agent_grid_runtime.public_testing import InMemoryBroker
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import CloseReason
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.handling.public_cancelling import RunCanceller
from coordinator.handling.public_coordinator import Coordinator
from coordinator.ledger.public_ledger import Ledger, open_ledger
from pydantic import SecretStr

ALICE = Actor(login="alice", association=AuthorAssociation.MEMBER)
BOT = "agent-grid[bot]"
START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CONTEXT = MessageContext(queue="test", transport_id="m-1", receive_count=1)


@dataclass
class Nudges(Publisher):
    """The coordinator's nudges publisher, failing the next ``failures`` publishes, or holding them until ``hold``."""

    failures: int = 0
    hold: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish_many(self, envelopes: Sequence[Envelope[Any]], *, delay_s: int = 0) -> None:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise PublishError(self.queue_url, [str(envelope.message_id) for envelope in envelopes], "broker down")
        await super().publish_many(envelopes, delay_s=delay_s)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    github: FakeGitHub
    tracker: GitHubTracker
    ledger: Ledger
    broker: InMemoryBroker
    nudges_url: str
    launches_url: str
    clock: Clock

    def coordinator(self, nudges: Nudges | None = None) -> Coordinator:
        """A coordinator process over the shared ledger, broker and GitHub (a new one is a restart)."""
        return Coordinator(
            tracker=self.tracker,
            ledger=self.ledger,
            launches=Publisher(transport=self.broker, queue_url=self.launches_url),
            nudges=nudges or Nudges(transport=self.broker, queue_url=self.nudges_url, max_attempts=1),
            policy=Policy(caps=Caps(max_active_runs=1)),
            cancels=RunCanceller(transport=self.broker, queues=QueueSettings(prefix="unit")),
            clock=self.clock,
        )

    def issue(self, title: str) -> IssueRef:
        seeded = self.github.add_issue("octo", "widgets", title, author="alice", labels=["agent-grid"])
        return IssueRef(repo="octo/widgets", number=seeded.number)

    async def nudge(self, coordinator: Coordinator, ref: IssueRef) -> None:
        nudge = Nudge(issue=ref, reason=NudgeReason.ISSUE_LABELED, actor=ALICE)
        await coordinator.on_nudge(wrap(nudge, producer="test", occurred_at=self.clock()), CONTEXT)

    def launches(self) -> list[LaunchAgent]:
        return [decode(body).body for body in self.broker.bodies(self.launches_url)]

    def nudges(self) -> list[Nudge]:
        return [decode(body).body for body in self.broker.bodies(self.nudges_url)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    github = FakeGitHub()
    for login in ("alice", BOT):
        github.add_user(login)
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    token = github.add_token(BOT)
    broker = InMemoryBroker()
    async with (
        serve_github(github) as running,
        open_ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}") as ledger,
        open_github_tracker(
            GitHubSettings(api_url=running.base_url, token=SecretStr(token), write_interval_s=0)
        ) as tracker,
    ):
        nudges = await broker.ensure_queue("unit-nudges", {})
        launches = await broker.ensure_queue("unit-launches", {})
        yield World(github, tracker, ledger, broker, nudges, launches, Clock())


async def a_run_and_an_issue_waiting_for_its_slot(
    world: World, coordinator: Coordinator
) -> tuple[LaunchAgent, IssueRef]:
    """A run on one issue (the only slot), and another issue nudged by alice meanwhile: it waits for the slot."""
    running, waiting = world.issue("Runs"), world.issue("Waits")
    await world.nudge(coordinator, running)
    [launch] = world.launches()
    world.clock.now += timedelta(seconds=1)
    await world.nudge(coordinator, waiting)
    assert len(world.launches()) == 1  # no slot: remembered, to be re-decided when the run ends
    return launch, waiting


def exited(launch: LaunchAgent) -> Envelope[AgentExited]:
    exit_ = AgentExited(run_id=launch.run_id, issue=launch.issue, worker_id="w1", reason=ExitReason.SUCCESS)
    return wrap(exit_, producer="grid")


async def test_follow_ups_whose_publish_failed_are_made_when_the_exit_comes_back(world: World) -> None:
    nudges = Nudges(transport=world.broker, queue_url=world.nudges_url, max_attempts=1)
    coordinator = world.coordinator(nudges)
    launch, waiting = await a_run_and_an_issue_waiting_for_its_slot(world, coordinator)
    exit_ = exited(launch)

    nudges.failures = 1
    with pytest.raises(PublishError):
        await coordinator.on_exited(exit_, CONTEXT)  # the consumer leaves the message: it comes back
    record = await world.ledger.run_record(launch.run_id)
    assert record is not None
    assert record.state == "exited"  # the run's end is recorded...
    assert world.nudges() == []  # ...its follow-ups are not made yet

    await coordinator.on_exited(exit_, CONTEXT)  # the broker delivers the exit again
    [released] = world.nudges()
    assert (released.issue, released.reason, released.actor) == (waiting, NudgeReason.RUN_FINISHED, ALICE)

    await coordinator.on_exited(exit_, CONTEXT)  # and once more: made already, nothing more
    assert len(world.nudges()) == 1


async def test_follow_ups_of_a_handler_cancelled_mid_publish_are_made_by_the_next_coordinator(world: World) -> None:
    hold = asyncio.Event()
    nudges = Nudges(transport=world.broker, queue_url=world.nudges_url, max_attempts=1, hold=hold)
    coordinator = world.coordinator(nudges)
    launch, waiting = await a_run_and_an_issue_waiting_for_its_slot(world, coordinator)

    handling = asyncio.create_task(coordinator.on_exited(exited(launch), CONTEXT))
    async with asyncio.timeout(10):
        await nudges.entered.wait()
    handling.cancel()  # the coordinator stops (or crashes) between the run's end and its follow-ups
    with suppress(asyncio.CancelledError):
        await handling
    assert world.nudges() == []

    restarted = world.coordinator()
    assert await restarted.sweep_follow_ups() == 0  # the stopped handler may still be at it: not yet
    world.clock.now += timedelta(minutes=10)
    assert await restarted.sweep_follow_ups() == 1
    [released] = world.nudges()
    assert (released.issue, released.actor) == (waiting, ALICE)
    assert await restarted.sweep_follow_ups() == 0
    assert len(world.nudges()) == 1


async def test_a_finished_childs_successors_are_decided_once_the_tracker_answers_again(world: World) -> None:
    coordinator = world.coordinator()
    parent = world.github.add_issue("octo", "widgets", "Epic", author="alice", labels=["agent-grid"])
    first = world.github.add_issue("octo", "widgets", "Step 1", author="alice")
    second = world.github.add_issue("octo", "widgets", "Step 2", author="alice")
    world.github.add_sub_issue(parent, first)
    world.github.add_sub_issue(parent, second)
    await world.nudge(coordinator, IssueRef(repo="octo/widgets", number=first.number))
    [launch] = world.launches()
    await world.tracker.close(launch.issue, CloseReason.COMPLETED)  # the run did step 1

    world.github.fail_next(None, "/graphql", count=1000)  # GitHub is down as the run ends
    await coordinator.on_exited(exited(launch), CONTEXT)
    assert len(world.launches()) == 1  # the next step could not be looked up...

    world.github.clear_faults()
    world.clock.now += timedelta(minutes=10)
    assert await coordinator.sweep_follow_ups() == 1  # ...and is, once GitHub answers again
    assert [launched.issue.number for launched in world.launches()] == [first.number, second.number]
    assert await coordinator.sweep_follow_ups() == 0
