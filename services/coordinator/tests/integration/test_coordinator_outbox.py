"""The outbox's writer against the GitHub test server: the latest wish only, retries with capped backoff, give-ups.

A manual clock drives the backoff: each ``write_due`` is one pass of the writer at the clock's time.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_github_test_server.public_server import FakeGitHub, serve_github
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import Comment, sticky_marker
from coordinator.decisions.public_policy import Policy
from coordinator.handling.public_outbox import OutboxSettings, OutboxWriter
from coordinator.handling.writes import AssigneeWish, StatusWish, Wish, entry
from coordinator.ledger.public_ledger import Ledger, open_ledger
from pydantic import SecretStr
from structlog.testing import capture_logs

BOT = "agent-grid[bot]"
START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Outboxed:
    github: FakeGitHub
    tracker: GitHubTracker
    ledger: Ledger
    writer: OutboxWriter
    clock: Clock
    issue: IssueRef

    async def wish(self, *wishes: Wish, ref: IssueRef | None = None) -> None:
        await self.ledger.outbox.enqueue([entry(ref or self.issue, wish) for wish in wishes], now=self.clock())

    async def comments(self) -> list[str]:
        return [comment.body for comment in (await self.tracker.view(self.issue)).comments]

    def comment_posts(self) -> int:
        path = f"/repos/octo/widgets/issues/{self.issue.number}/comments"
        return sum(1 for request in self.github.requests if request.method == "POST" and request.path == path)


@pytest.fixture
async def outboxed(tmp_path: Path) -> AsyncIterator[Outboxed]:
    github = FakeGitHub()
    for login in ("alice", BOT):
        github.add_user(login)
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    token = github.add_token(BOT)
    issue = github.add_issue("octo", "widgets", "Do it", author="alice", labels=["agent-grid"])
    clock = Clock()
    settings = OutboxSettings(retry_initial_s=2, retry_max_s=10, max_refused_attempts=3, concurrency=2)
    async with (
        serve_github(github) as running,
        open_ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}") as ledger,
        open_github_tracker(
            # No waiting inside a call: a rate limit surfaces at once, for the outbox to schedule.
            GitHubSettings(
                api_url=running.base_url, token=SecretStr(token), write_interval_s=0, max_rate_limit_wait_s=0
            )
        ) as tracker,
    ):
        writer = OutboxWriter(ledger, tracker, Policy(), settings, clock=clock)
        yield Outboxed(github, tracker, ledger, writer, clock, IssueRef(repo="octo/widgets", number=issue.number))


async def test_only_the_latest_wish_of_an_issue_is_written(outboxed: Outboxed) -> None:
    await outboxed.wish(StatusWish(body="waiting for a slot"), AssigneeWish(login=BOT, assigned=True))
    await outboxed.wish(StatusWish(body="running"), AssigneeWish(login=BOT, assigned=False))
    assert await outboxed.writer.write_due() == 2
    assert await outboxed.comments() == [f"{sticky_marker('status')}\nrunning"]
    assert outboxed.comment_posts() == 1  # the superseded status was never written
    assigned = [r for r in outboxed.github.requests if r.path.endswith("/assignees") and r.method == "POST"]
    assert assigned == []  # assigned then unassigned before the writer looked: nothing to add
    assert (await outboxed.ledger.outbox.backlog()).pending == 0
    assert await outboxed.writer.write_due() == 0


async def test_a_failing_write_is_retried_with_capped_backoff_and_lands_once(outboxed: Outboxed) -> None:
    outboxed.github.fail_next("POST", f"/repos/octo/widgets/issues/{outboxed.issue.number}/comments", count=4)
    await outboxed.wish(StatusWish(body="running"))
    delays = []
    for _ in range(4):
        assert await outboxed.writer.write_due() == 1  # fails: GitHub answers 502
        due = await outboxed.ledger.outbox.next_due_at()
        assert due is not None
        delays.append((due - outboxed.clock()).total_seconds())
        outboxed.clock.advance(delays[-1] - 0.5)
        assert await outboxed.writer.write_due() == 0  # not due yet
        outboxed.clock.advance(0.5)
    assert delays == [2, 4, 8, 10]  # doubling from retry_initial_s, capped at retry_max_s
    assert (await outboxed.ledger.outbox.backlog()).failing == 1
    assert await outboxed.writer.write_due() == 1
    assert await outboxed.comments() == [f"{sticky_marker('status')}\nrunning"]
    assert (await outboxed.ledger.outbox.backlog()).pending == 0


async def test_a_rate_limited_write_waits_for_the_limit_to_reset(outboxed: Outboxed) -> None:
    outboxed.github.secondary_rate_limit("POST", "/repos/", retry_after_s=30)
    await outboxed.wish(StatusWish(body="running"))
    assert await outboxed.writer.write_due() == 1
    due = await outboxed.ledger.outbox.next_due_at()
    assert due == outboxed.clock() + timedelta(seconds=30)  # GitHub's retry-after, not the 2 s backoff
    outboxed.clock.advance(30)
    assert await outboxed.writer.write_due() == 1
    assert await outboxed.comments() == [f"{sticky_marker('status')}\nrunning"]


async def test_a_refused_write_is_parked_after_a_few_attempts_and_one_for_a_vanished_issue_dropped_at_once(
    outboxed: Outboxed,
) -> None:
    outboxed.github.fail_next(
        "POST", f"/repos/octo/widgets/issues/{outboxed.issue.number}/comments", count=10, status=422
    )
    gone = IssueRef(repo="octo/widgets", number=999)
    await outboxed.wish(StatusWish(body="running"))
    await outboxed.wish(StatusWish(body="running"), ref=gone)
    with capture_logs() as logs:
        for _ in range(3):
            await outboxed.writer.write_due()
            outboxed.clock.advance(60)
    events = [(line["event"], line["issue"]) for line in logs if line["event"].startswith("tracker_write_")]
    assert ("tracker_write_dropped", gone.key) in events
    assert events.count(("tracker_write_failed", outboxed.issue.key)) == 2
    assert events[-1] == ("tracker_write_parked", outboxed.issue.key)  # the third refusal
    backlog = await outboxed.ledger.outbox.backlog()
    assert (backlog.pending, backlog.parked) == (0, 1)
    assert await outboxed.comments() == []


async def test_a_write_that_keeps_failing_is_parked_and_no_longer_tried(outboxed: Outboxed) -> None:
    # Not a refusal: GitHub fails (502) on every attempt, as for a wish that breaks something of GitHub's.
    outboxed.github.fail_next("POST", f"/repos/octo/widgets/issues/{outboxed.issue.number}/comments", count=1000)
    writer = OutboxWriter(
        outboxed.ledger,
        outboxed.tracker,
        Policy(),
        OutboxSettings(retry_initial_s=2, retry_max_s=10, max_attempts=4),
        clock=outboxed.clock,
    )
    await outboxed.wish(StatusWish(body="running"))
    with capture_logs() as logs:
        for _ in range(6):
            await writer.write_due()
            outboxed.clock.advance(60)
    failures = [line for line in logs if line["event"] == "tracker_write_failed"]
    [parked] = [line for line in logs if line["event"] == "tracker_write_parked"]
    assert len(failures) == 3
    assert (parked["issue"], parked["attempts"], parked["log_level"]) == (outboxed.issue.key, 4, "error")
    assert "502" in parked["error"]
    backlog = await outboxed.ledger.outbox.backlog()
    assert (backlog.pending, backlog.failing, backlog.parked) == (0, 0, 1)
    [kept] = await outboxed.ledger.outbox.parked(limit=10)
    assert (kept.issue_key, kept.key, kept.attempts) == (outboxed.issue.key, "status", 4)
    assert (await outboxed.ledger.stats.read(today=START.date())).outbox_parked == 1
    outboxed.clock.advance(3600)
    assert await writer.write_due() == 0  # never tried again...

    outboxed.github.clear_faults()
    await outboxed.wish(StatusWish(body="ended"))  # ...until a newer wish of its row replaces it
    assert await writer.write_due() == 1
    assert await outboxed.comments() == [f"{sticky_marker('status')}\nended"]
    assert (await outboxed.ledger.outbox.backlog()).parked == 0


async def test_a_long_write_keeps_its_claim_so_no_other_writer_writes_the_row_beside_it(
    outboxed: Outboxed, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = OutboxSettings(claim_s=0.3)
    writer = OutboxWriter(outboxed.ledger, outboxed.tracker, Policy(), settings, clock=outboxed.clock)
    other = OutboxWriter(outboxed.ledger, outboxed.tracker, Policy(), settings, clock=outboxed.clock)
    writing, finish = asyncio.Event(), asyncio.Event()
    upsert = outboxed.tracker.upsert_sticky_comment

    async def slow_upsert(ref: IssueRef, key: str, body: str) -> Comment:
        writing.set()
        await finish.wait()  # GitHub is slow, or the throttler holds the write back
        return await upsert(ref, key, body)

    renewed = asyncio.Event()
    renew = outboxed.ledger.outbox.renew

    async def renew_spy(claimed_by: str, *, until: datetime) -> int:
        held = await renew(claimed_by, until=until)
        renewed.set()
        return held

    monkeypatch.setattr(outboxed.tracker, "upsert_sticky_comment", slow_upsert)
    monkeypatch.setattr(outboxed.ledger.outbox, "renew", renew_spy)
    await outboxed.wish(StatusWish(body="running"))
    async with asyncio.timeout(5):
        first = asyncio.create_task(writer.write_due())
        await writing.wait()
        outboxed.clock.advance(60)  # long past the claim's first expiry
        await renewed.wait()
        assert await other.write_due() == 0  # the claim was renewed: the row is still the first writer's
        finish.set()
        assert await first == 1
    assert outboxed.comment_posts() == 1
    assert (await outboxed.ledger.outbox.backlog()).pending == 0
