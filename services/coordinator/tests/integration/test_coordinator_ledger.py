"""The run ledger on SQLite and on PostgreSQL: the lease, idempotent transitions, totals, migrations."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_lifecycle import ExitReason
from agent_grid_contracts.public_nudges import NudgeReason
from coordinator.decisions.public_decide import decide_launch
from coordinator.decisions.public_facts import IssueFacts, LedgerFacts, Trigger
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.decisions.public_rebuild import GitHubRecord, IssueRecord, TreeRecord, rebuild
from coordinator.decisions.public_verdicts import Launch, Verdict, Wait, WaitReason
from coordinator.ledger.public_ledger import (
    ActiveRun,
    Changes,
    Claim,
    ClaimResult,
    FactsScope,
    FollowUp,
    FollowUpKind,
    FollowUps,
    LaunchLimits,
    Ledger,
    NewRun,
    StartOutcome,
    TreeSizeReservation,
    WaitingNudge,
    open_ledger,
)
from coordinator.ledger.public_outbox import OutboxBacklog, OutboxEntry
from sqlalchemy.ext.asyncio import create_async_engine

STARTED = StartOutcome.STARTED

POSTGRES_URL = os.environ.get("AGENT_GRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROOT = "github:octo/widgets#1"


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty ledger database: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"
        return
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {error}")
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url) as opened:
        yield opened


def new_run(run_id: str, issue: int = 7, *, mode: str = "plan", root: int = 1) -> NewRun:
    return NewRun(
        run_id=run_id,
        issue_key=f"github:octo/widgets#{issue}",
        repo="octo/widgets",
        root_key=f"github:octo/widgets#{root}",
        mode=mode,
        agent_kind="claude_code",
        authorised_by="alice",
        trigger_message_id="m-1",
    )


async def facts(ledger: Ledger, issue: int = 7, root: int = 1) -> LedgerFacts:
    return await ledger.facts(
        issue_key=f"github:octo/widgets#{issue}",
        repo="octo/widgets",
        root_key=f"github:octo/widgets#{root}",
        agent_kind="claude_code",
        today=NOW.date(),
    )


async def test_the_lease_admits_one_active_run_per_issue_even_when_raced(ledger: Ledger) -> None:
    attempts = await asyncio.gather(*(ledger.start_run(new_run(f"run-{n}"), now=NOW) for n in range(8)))
    assert attempts.count(STARTED) == 1
    assert set(attempts) == {STARTED, StartOutcome.LEASE_TAKEN}
    winner = f"run-{attempts.index(STARTED)}"
    assert (await facts(ledger)).active_run_on_issue == winner

    finished = await ledger.finish(winner, reason=ExitReason.SUCCESS, at=NOW, cost_usd=1.5, tokens=1000)
    assert finished is not None
    assert await ledger.start_run(new_run("run-next"), now=NOW) is STARTED  # the lease is free again


async def test_every_run_ends_exactly_once_and_usage_only_grows(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    assert (await ledger.mark_started("run-1", worker_id="w1", at=NOW)).held
    assert (await ledger.heartbeat("run-1", worker_id="w1", at=NOW, cost_usd=0.5, tokens=500)).held
    assert (await ledger.heartbeat("run-1", worker_id="w1", at=NOW, cost_usd=0.2, tokens=100)).held  # older
    during = await facts(ledger)
    assert (during.tree_cost_usd, during.tree_tokens) == (0.5, 500)

    first = await ledger.finish("run-1", reason=ExitReason.FAILED, at=NOW, cost_usd=0.75, tokens=700)
    again = await ledger.finish("run-1", reason=ExitReason.SUCCESS, at=NOW, cost_usd=9.0, tokens=9)
    assert first is not None
    assert again is None  # a redelivered or contradicting exit changes nothing
    assert (first.run.exit_reason, first.consecutive_failures) == ("failed", 1)
    late = await ledger.mark_started("run-1", worker_id="w2", at=NOW)  # a late start does not revive it
    assert (late.claim, late.holder, late.ended_at) == (Claim.ENDED, "w1", NOW)

    after = await facts(ledger)
    assert after.tree_cost_usd == pytest.approx(0.75)
    assert after.repo_cost_today_usd == pytest.approx(0.75)
    assert (after.runs_on_issue, after.runs_in_tree, after.active_total) == (1, 1, 0)


async def test_failures_in_a_row_count_until_a_success(ledger: Ledger) -> None:
    for n, reason in enumerate([ExitReason.FAILED, ExitReason.STALLED, ExitReason.SUCCESS, ExitReason.LOST]):
        assert await ledger.start_run(new_run(f"run-{n}"), now=NOW) is STARTED
        finished = await ledger.finish(f"run-{n}", reason=reason, at=NOW, cost_usd=0, tokens=0)
        assert finished is not None
    assert (await facts(ledger)).consecutive_failures == 1


async def test_the_tree_remembers_its_authoriser_counts_and_kill_switch(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("root-run", issue=1, mode="manage"), now=NOW) is STARTED
    assert await ledger.start_run(new_run("child-run", issue=2), now=NOW) is STARTED
    child = await facts(ledger, issue=2)
    assert child.tree_authorised_by == "alice"
    assert (child.active_total, child.active_in_tree, child.runs_in_tree) == (2, 2, 2)
    root = await facts(ledger, issue=1)
    assert root.last_manage_started_at == NOW

    await ledger.set_tree_killed("github:octo/widgets#1", True)
    await ledger.set_paused(True)
    stopped = await facts(ledger, issue=2)
    assert (stopped.tree_killed, stopped.paused) == (True, True)


FOLLOW_UPS = FollowUps(due_at=NOW + timedelta(minutes=2), release_waiting=2)


def kinds(found: list[FollowUp]) -> list[tuple[FollowUpKind, str, str | None]]:
    return [(f.kind, f.issue_key, f.actor.login if f.actor else None) for f in found]


async def test_a_runs_end_records_its_follow_ups_with_it_and_only_news_re_decides_its_issue(ledger: Ledger) -> None:
    key = "github:octo/widgets#7"
    alice = Actor(login="alice", association=AuthorAssociation.MEMBER)
    await ledger.remember_nudge(key, sent_at=NOW - timedelta(seconds=5), actor=alice)  # before the run began
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    await ledger.finish("run-1", reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
    assert kinds(await ledger.follow_ups("run-1")) == [(FollowUpKind.SUCCESSORS, key, None)]  # the run saw it

    assert await ledger.start_run(new_run("run-2"), now=NOW) is STARTED
    await ledger.remember_nudge(key, sent_at=NOW + timedelta(seconds=5), actor=alice)
    await ledger.remember_nudge(key, sent_at=NOW - timedelta(seconds=5), actor=None)  # older: does not overwrite
    await ledger.finish("run-2", reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
    # News for the issue, on behalf of whoever sent it: the deferred request keeps its sender's trust.
    assert kinds(await ledger.follow_ups("run-2")) == [
        (FollowUpKind.ISSUE, key, "alice"),
        (FollowUpKind.SUCCESSORS, key, None),
    ]
    # A lost run's issue is decided again, news or not; a repeated end records nothing more.
    assert await ledger.start_run(new_run("run-3"), now=NOW) is STARTED
    await ledger.finish("run-3", reason=ExitReason.LOST, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
    await ledger.finish("run-3", reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
    assert kinds(await ledger.follow_ups("run-3")) == [
        (FollowUpKind.ISSUE, key, None),
        (FollowUpKind.SUCCESSORS, key, None),
    ]


async def test_silent_runs_are_found(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("quiet"), now=NOW - timedelta(minutes=10)) is STARTED
    assert await ledger.start_run(new_run("chatty", issue=8), now=NOW) is STARTED
    silent = await ledger.silent_runs(seen_before=NOW - timedelta(minutes=5))
    assert [run.run_id for run in silent] == ["quiet"]


async def test_reopening_a_migrated_ledger_keeps_its_data(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("kept"), now=NOW) is STARTED
    async with open_ledger(ledger_url) as second:
        assert [run.run_id for run in await second.runs(issue_key="github:octo/widgets#7")] == ["kept"]


async def test_parents_come_due_for_management_until_they_are_done(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("manage-1", issue=1, mode="manage"), now=NOW - timedelta(hours=2)) is STARTED
    assert await ledger.start_run(new_run("manage-2", issue=2, mode="manage"), now=NOW) is STARTED
    assert await ledger.start_run(new_run("work-3", issue=3, mode="work"), now=NOW - timedelta(hours=3)) is STARTED
    assert await ledger.due_for_management(last_before=NOW - timedelta(hours=1)) == ["github:octo/widgets#1"]
    await ledger.stop_managing("github:octo/widgets#1")
    assert await ledger.due_for_management(last_before=NOW - timedelta(hours=1)) == []


async def test_concurrent_launches_never_exceed_the_caps(ledger: Ledger) -> None:
    limits = LaunchLimits(
        max_active_runs=3,
        max_active_runs_per_repo=3,
        max_active_runs_per_tree=3,
        max_active_runs_of_kind=None,
        max_runs_per_issue=5,
        max_runs_per_tree=40,
    )
    # Ten issues, each launched at once, each decision having seen free slots.
    outcomes = await asyncio.gather(
        *(ledger.start_run(new_run(f"run-{n}", issue=n, root=n), now=NOW, limits=limits) for n in range(10, 20))
    )
    assert outcomes.count(STARTED) == 3
    assert (await facts(ledger)).active_total == 3

    tree_limits = LaunchLimits(
        max_active_runs=100,
        max_active_runs_per_repo=100,
        max_active_runs_per_tree=100,
        max_active_runs_of_kind=None,
        max_runs_per_issue=5,
        max_runs_per_tree=2,
    )
    tree = await asyncio.gather(
        *(ledger.start_run(new_run(f"tree-{n}", issue=n, root=99), now=NOW, limits=tree_limits) for n in range(30, 36))
    )
    assert tree.count(STARTED) == 2


async def test_the_oldest_waiting_issues_are_released_first_each_by_one_run_end(ledger: Ledger) -> None:
    for number, seconds in ((1, 30), (2, 10), (3, 20)):
        await ledger.remember_nudge(
            f"github:octo/widgets#{number}", sent_at=NOW - timedelta(seconds=seconds), actor=None
        )
    for run_id, issue in (("run-8", 8), ("run-9", 9)):
        assert await ledger.start_run(new_run(run_id, issue=issue), now=NOW) is STARTED
    # Two runs end at once: each releases its own waiting nudges, taken off the waiting list with its end.
    await asyncio.gather(
        *(
            ledger.finish(run_id, reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
            for run_id in ("run-8", "run-9")
        )
    )
    released = {
        run_id: [f.issue_key for f in await ledger.follow_ups(run_id) if f.kind is FollowUpKind.RELEASED]
        for run_id in ("run-8", "run-9")
    }
    assert sorted(released.values(), key=len) == [
        ["github:octo/widgets#2"],
        ["github:octo/widgets#1", "github:octo/widgets#3"],  # oldest first
    ]


async def test_follow_ups_are_kept_until_made_and_each_late_run_is_taken_by_one_sweep(ledger: Ledger) -> None:
    for n in range(4):
        assert await ledger.start_run(new_run(f"run-{n}", issue=10 + n), now=NOW) is STARTED
        await ledger.finish(f"run-{n}", reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
    made = await ledger.follow_ups("run-0")
    await ledger.forget_follow_ups([f.id for f in made])  # made at once, as usual
    assert await ledger.follow_ups("run-0") == []

    until = NOW + timedelta(minutes=10)
    assert await ledger.due_follow_ups(now=NOW, until=until, limit=10) == []  # not late yet: their handler's
    late = FOLLOW_UPS.due_at
    # Two coordinators sweep at once: each late run is taken by one of them.
    sweeps = await asyncio.gather(*(ledger.due_follow_ups(now=late, until=until, limit=10) for _ in range(2)))
    assert sorted(sweeps[0] + sweeps[1]) == ["run-1", "run-2", "run-3"]
    assert await ledger.due_follow_ups(now=late, until=until, limit=10) == []  # taken: not due again before until
    assert sorted(await ledger.due_follow_ups(now=until, until=until, limit=2)) in (
        ["run-1", "run-2"],
        ["run-1", "run-3"],
        ["run-2", "run-3"],
    )  # not made by then: due again


async def test_the_first_worker_to_start_a_run_holds_it_and_only_its_reports_count(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    early = NOW - timedelta(seconds=1)
    # A heartbeat may overtake its AgentStarted: with no worker recorded yet, it counts.
    assert (await ledger.heartbeat("run-1", worker_id="w1", at=early, cost_usd=0.1, tokens=10)).held
    assert await ledger.mark_started("run-1", worker_id="w1", at=NOW) == ClaimResult(Claim.HELD, holder="w1")
    assert await ledger.mark_started("run-1", worker_id="w1", at=NOW + timedelta(seconds=5)) == ClaimResult(
        Claim.HELD, holder="w1"
    )  # the same worker repeating its start: a no-op
    assert await ledger.mark_started("run-1", worker_id="w2", at=NOW) == ClaimResult(Claim.ELSEWHERE, holder="w1")
    assert await ledger.mark_started("nope", worker_id="w2", at=NOW) == ClaimResult(Claim.UNKNOWN)

    later = NOW + timedelta(minutes=1)
    stray = await ledger.heartbeat("run-1", worker_id="w2", at=later, cost_usd=9.0, tokens=9000)
    assert stray == ClaimResult(Claim.ELSEWHERE, holder="w1")
    assert (
        await ledger.finish("run-1", reason=ExitReason.CANCELLED, at=later, cost_usd=0, tokens=0, worker_id="w2")
        is None
    )
    found = await ledger.run("run-1")
    assert found is not None
    run, events = found
    # The stray worker neither refreshed the run nor added its spend, nor ended it.
    assert (run.state, run.last_seen_at, run.cost_usd) == ("running", NOW, 0.1)
    assert [(event.kind, event.detail) for event in events] == [("launched", "plan by alice"), ("started", "w1")]

    finished = await ledger.finish("run-1", reason=ExitReason.SUCCESS, at=later, cost_usd=1, tokens=1, worker_id="w1")
    assert finished is not None
    assert finished.run.exit_reason == "success"
    assert await ledger.heartbeat("run-1", worker_id="w1", at=later, cost_usd=1, tokens=1) == ClaimResult(
        Claim.ENDED, holder="w1", ended_at=later
    )


async def test_racing_starts_from_several_workers_leave_the_run_with_exactly_one(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    claims = await asyncio.gather(*(ledger.mark_started("run-1", worker_id=f"w{n}", at=NOW) for n in range(6)))
    [holder] = [claim.holder for claim in claims if claim.held]
    assert holder is not None
    assert all(claim == ClaimResult(Claim.ELSEWHERE, holder=holder) for claim in claims if not claim.held)
    assert [run.worker_id for run in await ledger.request_cancels(root_key=ROOT, reason="x", at=NOW)] == [holder]


async def test_a_cancel_asked_for_before_a_worker_is_known_is_reported_at_the_start(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-7", issue=7), now=NOW) is STARTED
    assert await ledger.start_run(new_run("run-8", issue=8), now=NOW) is STARTED
    assert await ledger.start_run(new_run("run-9", issue=9, root=2), now=NOW) is STARTED
    assert (await ledger.mark_started("run-8", worker_id="w8", at=NOW)).held

    asked = await ledger.request_cancels(root_key=ROOT, issue_key="github:octo/widgets#7", reason="stop 7", at=NOW)
    assert asked == [ActiveRun("run-7", "github:octo/widgets#7", None)]
    tree = await ledger.request_cancels(root_key=ROOT, reason="stop the tree", at=NOW)
    assert sorted(tree, key=lambda run: run.run_id) == [
        ActiveRun("run-7", "github:octo/widgets#7", None),
        ActiveRun("run-8", "github:octo/widgets#8", "w8"),
    ]
    assert await ledger.request_cancels(root_key="github:octo/widgets#3", reason="nothing there", at=NOW) == []

    started = await ledger.mark_started("run-7", worker_id="w7", at=NOW)
    # Recorded (the run stays active until its worker reports the exit), with the first reason it was given.
    assert started == ClaimResult(Claim.HELD, holder="w7", cancel_requested="stop 7")
    found = await ledger.run("run-7")
    assert found is not None
    assert [event.kind for event in found[1]] == ["launched", "cancel_requested", "started"]

    assert await ledger.mark_started("run-9", worker_id="w9", at=NOW) == ClaimResult(Claim.HELD, holder="w9")
    await ledger.set_tree_killed("github:octo/widgets#2", True)
    again = await ledger.mark_started("run-9", worker_id="w9", at=NOW)
    assert again == ClaimResult(Claim.HELD, holder="w9", tree_killed=True)


async def test_sub_issues_are_counted_per_run_against_the_cap_even_when_raced(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    # Eight requests of three at once under a cap of ten: three fit, whatever the interleaving.
    totals = await asyncio.gather(*(ledger.reserve_sub_issues("run-1", 3, cap=10) for _ in range(8)))
    assert sorted(total for total in totals if total is not None) == [3, 6, 9]
    assert await ledger.reserve_sub_issues("run-1", 2, cap=10) is None
    await ledger.release_sub_issues("run-1", 2)  # two of a request were not created after all
    assert await ledger.reserve_sub_issues("run-1", 3, cap=10) == 10
    await ledger.release_sub_issues("run-1", 50)
    record = await ledger.run_record("run-1")
    assert record is not None
    assert (record.sub_issues_created, record.active) == (0, True)

    await ledger.record_event("run-1", "finish:done", "shipped", at=NOW)
    assert await ledger.finish("run-1", reason=ExitReason.SUCCESS, at=NOW, cost_usd=0, tokens=0) is not None
    assert await ledger.reserve_sub_issues("run-1", 1, cap=10) is None  # an ended run creates nothing more
    found = await ledger.run("run-1")
    assert found is not None
    run, events = found
    assert not run.active
    assert [(event.kind, event.detail) for event in events][1:] == [("finish:done", "shipped"), ("exited", "success")]
    assert await ledger.run_record("run-nobody") is None


async def test_a_ledger_from_before_the_sub_issue_count_is_migrated(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("old"), now=NOW) is STARTED
    # Back to the first schema version: no sub-issue count yet.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE runs DROP COLUMN sub_issues_created"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 1"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        assert await migrated.reserve_sub_issues("old", 2, cap=10) == 2
        record = await migrated.run_record("old")
        assert record is not None
        assert record.sub_issues_created == 2


async def test_a_run_keeps_the_log_url_of_the_worker_that_holds_it(ledger: Ledger) -> None:
    assert await ledger.start_run(new_run("run-1"), now=NOW) is STARTED
    assert (await ledger.run_record("run-1")).log_url is None  # type: ignore[union-attr]

    await ledger.mark_started("run-1", worker_id="w1", at=NOW, log_url="http://w1:8003/runs/run-1/log")
    await ledger.mark_started("run-1", worker_id="w2", at=NOW, log_url="http://w2:8003/runs/run-1/log")

    record = await ledger.run_record("run-1")
    assert record is not None
    assert record.log_url == "http://w1:8003/runs/run-1/log"
    assert [run.log_url for run in await ledger.runs()] == ["http://w1:8003/runs/run-1/log"]


async def test_a_ledger_from_before_log_urls_is_migrated(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("old"), now=NOW) is STARTED
    # Back to schema version 3: no log URLs, no index of the daily totals by day.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE runs DROP COLUMN log_url"))
            await connection.execute(sa.text("DROP INDEX repo_day_totals_by_day"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 3"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        await migrated.mark_started("old", worker_id="w1", at=NOW, log_url="http://w1:8003/runs/old/log")
        record = await migrated.run_record("old")
    engine = create_async_engine(ledger_url)
    try:
        async with engine.connect() as connection:
            indexes = await connection.run_sync(lambda sync: sa.inspect(sync).get_indexes("repo_day_totals"))
    finally:
        await engine.dispose()
    assert record is not None
    assert record.log_url == "http://w1:8003/runs/old/log"
    assert "repo_day_totals_by_day" in {index["name"] for index in indexes}


async def test_the_operator_view_counts_active_runs_and_spend_against_the_budgets(ledger: Ledger) -> None:
    empty = await ledger.stats.read(today=NOW.date())
    assert empty.active_runs == {"launching": 0, "running": 0}
    assert (empty.repo_spend_today_usd, empty.active_tree_spend_usd, empty.paused) == ({}, {}, False)

    for run_id, issue, root in (("done", 2, 1), ("busy", 3, 1), ("new", 4, 4), ("yesterday", 5, 5)):
        assert await ledger.start_run(new_run(run_id, issue, root=root), now=NOW) is STARTED
    await ledger.mark_started("done", worker_id="w1", at=NOW)
    await ledger.finish("done", reason=ExitReason.SUCCESS, at=NOW, cost_usd=1.5, tokens=10)
    await ledger.finish("yesterday", reason=ExitReason.FAILED, at=NOW - timedelta(days=1), cost_usd=4.0, tokens=10)
    await ledger.mark_started("busy", worker_id="w1", at=NOW)
    await ledger.heartbeat("busy", worker_id="w1", at=NOW, cost_usd=0.25, tokens=5)
    await ledger.set_paused(True)

    view = await ledger.stats.read(today=NOW.date())

    assert view.active_runs == {"launching": 1, "running": 1}
    assert view.repo_spend_today_usd == {"octo/widgets": 1.5}
    # Tree 1: its finished run and what its active one reported; tree 4: a launching run, nothing spent yet.
    assert view.active_tree_spend_usd == {ROOT: 1.75, "github:octo/widgets#4": 0.0}
    assert view.paused is True


async def test_the_outbox_keeps_the_latest_wish_per_issue_and_key_and_gives_each_to_one_writer(ledger: Ledger) -> None:
    outbox, issue = ledger.outbox, "github:octo/widgets#7"
    await outbox.enqueue(
        [OutboxEntry(issue, "status", "waiting"), OutboxEntry(issue, "assignee:bot", "assign")], now=NOW
    )
    await outbox.enqueue([OutboxEntry(issue, "status", "running")], now=NOW + timedelta(seconds=1))
    assert await outbox.pending(issue) == {"status": "running", "assignee:bot": "assign"}  # coalesced
    assert await outbox.backlog() == OutboxBacklog(pending=2, failing=0, oldest_enqueued_at=NOW)

    # Two writers (two coordinators) claim at once: each wish goes to one of them.
    later, until = NOW + timedelta(seconds=2), NOW + timedelta(minutes=2)
    claims = await asyncio.gather(*(outbox.claim(claimer=f"w{n}", now=later, until=until, limit=10) for n in range(2)))
    claimed = [write for claim in claims for write in claim]
    assert sorted(write.key for write in claimed) == ["assignee:bot", "status"]
    assert await outbox.claim(claimer="w3", now=later, until=until, limit=10) == []
    status = next(write for write in claimed if write.key == "status")
    assign = next(write for write in claimed if write.key == "assignee:bot")

    # A newer wish arrives while the older one is being written: completing the older keeps the newer, due at once.
    await outbox.enqueue([OutboxEntry(issue, "status", "ended")], now=later)
    assert not await outbox.complete(status)
    [newer] = await outbox.claim(claimer="w1", now=later, until=until, limit=10)
    assert (newer.payload, newer.version) == ("ended", status.version + 1)
    assert await outbox.complete(newer)

    # A failed write comes back when it is due, its attempts counted.
    await outbox.retry(assign, due_at=NOW + timedelta(seconds=30), error="GitHub answered 502")
    assert (await outbox.backlog()).failing == 1
    assert await outbox.claim(claimer="w1", now=NOW + timedelta(seconds=29), until=until, limit=10) == []
    assert await outbox.next_due_at() == NOW + timedelta(seconds=30)
    [again] = await outbox.claim(claimer="w1", now=NOW + timedelta(seconds=30), until=until, limit=10)
    assert (again.payload, again.attempts) == ("assign", 1)

    # A writer that stops mid-write gives its claims back; a claim whose writer vanished expires.
    await outbox.release("w1")
    [back] = await outbox.claim(claimer="w2", now=NOW + timedelta(seconds=31), until=until, limit=10)
    assert back.key == "assignee:bot"
    [expired] = await outbox.claim(
        claimer="w3", now=until + timedelta(seconds=1), until=until + timedelta(minutes=2), limit=10
    )
    assert expired.key == "assignee:bot"
    assert await outbox.complete(expired)
    assert await outbox.backlog() == OutboxBacklog(pending=0, failing=0, oldest_enqueued_at=None)


async def test_a_decision_reads_takes_the_lease_and_queues_its_github_writes_in_one_transaction(ledger: Ledger) -> None:
    scope = FactsScope(
        issue_key="github:octo/widgets#7",
        repo="octo/widgets",
        root_key=ROOT,
        agent_kind="claude_code",
        today=NOW.date(),
    )
    limits = LaunchLimits(
        max_active_runs=1,
        max_active_runs_per_repo=1,
        max_active_runs_per_tree=1,
        max_active_runs_of_kind=None,
        max_runs_per_issue=5,
        max_runs_per_tree=40,
    )
    write = OutboxEntry(scope.issue_key, "status", "running")

    def launch(facts: LedgerFacts) -> tuple[str, Changes]:
        if facts.active_total:
            return "wait", Changes(remember=WaitingNudge(NOW, None))
        return "launch", Changes(run=new_run(f"run-{uuid.uuid4().hex[:6]}"), writes=(write,))

    decided = await asyncio.gather(*(ledger.decide(scope, launch, now=NOW, limits=limits) for _ in range(4)))
    started = [d for d in decided if d.started is STARTED]
    assert len(started) == 1  # one launch; the others saw it (SQLite) or lost the race to it (PostgreSQL)
    assert all(d.started in (None, StartOutcome.LEASE_TAKEN, StartOutcome.AT_CAP) for d in decided if d not in started)
    assert (await facts(ledger)).active_run_on_issue == started[0].run.run_id  # type: ignore[union-attr]
    assert await ledger.outbox.pending(scope.issue_key) == {"status": "running"}

    def refuse(_facts: LedgerFacts) -> tuple[str, Changes]:
        return "launch", Changes(run=new_run("run-late"), writes=(OutboxEntry(scope.issue_key, "status", "x"),))

    lost = await ledger.decide(scope, refuse, now=NOW, limits=limits)
    assert lost.started in (StartOutcome.LEASE_TAKEN, StartOutcome.AT_CAP)
    assert await ledger.outbox.pending(scope.issue_key) == {"status": "running"}  # a lost launch reports nothing


async def test_a_writer_whose_claim_expired_never_frees_the_claim_of_the_writer_that_took_over(ledger: Ledger) -> None:
    outbox, issue = ledger.outbox, "github:octo/widgets#7"
    await outbox.enqueue([OutboxEntry(issue, "status", "running")], now=NOW)
    claim_s = timedelta(minutes=2)
    [slow] = await outbox.claim(claimer="a", now=NOW, until=NOW + claim_s, limit=10)
    # Writer a is still writing when its claim expires: writer b takes the row over and writes it too.
    took_over = NOW + claim_s + timedelta(seconds=1)
    [fast] = await outbox.claim(claimer="b", now=took_over, until=took_over + claim_s, limit=10)
    assert fast.version == slow.version
    assert fast.claimed_by != slow.claimed_by
    # A newer wish arrives while b writes the older one: it must wait for b, never be written beside it.
    await outbox.enqueue([OutboxEntry(issue, "status", "ended")], now=took_over)
    assert not await outbox.complete(slow)  # a finishes late: the newer wish stays...
    assert await outbox.claim(claimer="c", now=took_over, until=took_over + claim_s, limit=10) == []  # ...b's
    await outbox.retry(slow, due_at=took_over, error="late failure")
    assert await outbox.claim(claimer="c", now=took_over, until=took_over + claim_s, limit=10) == []
    assert (await outbox.backlog()).failing == 0  # a's late failure counted nothing against b's row

    assert not await outbox.complete(fast)  # b done with the older version: the newer one is free now
    [newer] = await outbox.claim(claimer="c", now=took_over, until=took_over + claim_s, limit=10)
    assert (newer.payload, newer.version) == ("ended", slow.version + 1)


async def test_a_long_write_renews_its_claim_and_learns_when_it_lost_it(ledger: Ledger) -> None:
    outbox, issue = ledger.outbox, "github:octo/widgets#7"
    await outbox.enqueue([OutboxEntry(issue, "status", "running")], now=NOW)
    claim_s = timedelta(minutes=2)
    [write] = await outbox.claim(claimer="a", now=NOW, until=NOW + claim_s, limit=10)
    renewed_at = NOW + timedelta(seconds=100)
    assert await outbox.renew(write.claimed_by, until=renewed_at + claim_s) == 1
    past_first = NOW + claim_s + timedelta(seconds=1)  # the first claim would have expired by now
    assert await outbox.claim(claimer="b", now=past_first, until=past_first + claim_s, limit=10) == []

    gone = renewed_at + claim_s + timedelta(seconds=1)
    [taken] = await outbox.claim(claimer="b", now=gone, until=gone + claim_s, limit=10)
    assert await outbox.renew(write.claimed_by, until=gone + claim_s) == 0  # a's claim is b's now
    assert await outbox.complete(taken)


async def test_a_write_that_keeps_failing_is_parked_visibly_until_a_newer_wish_replaces_it(ledger: Ledger) -> None:
    outbox, issue = ledger.outbox, "github:octo/widgets#7"
    await outbox.enqueue([OutboxEntry(issue, "status", "poison"), OutboxEntry(issue, "label:x", "add")], now=NOW)
    claimed = await outbox.claim(claimer="a", now=NOW, until=NOW + timedelta(minutes=2), limit=10)
    poison = next(write for write in claimed if write.key == "status")
    assert await outbox.park(poison, at=NOW, error="TypeError: boom")
    assert await outbox.complete(next(write for write in claimed if write.key == "label:x"))

    assert await outbox.backlog() == OutboxBacklog(pending=0, failing=0, oldest_enqueued_at=None, parked=1)
    [parked] = await outbox.parked(limit=10)
    assert (parked.issue_key, parked.key, parked.attempts, parked.last_error) == (issue, "status", 1, "TypeError: boom")
    later = NOW + timedelta(days=1)
    assert await outbox.claim(claimer="b", now=later, until=later + timedelta(minutes=2), limit=10) == []
    assert await outbox.next_due_at() is None

    await outbox.enqueue([OutboxEntry(issue, "status", "healthy")], now=later)
    assert await outbox.backlog() == OutboxBacklog(pending=1, failing=0, oldest_enqueued_at=NOW, parked=0)
    [fresh] = await outbox.claim(claimer="b", now=later, until=later + timedelta(minutes=2), limit=10)
    assert (fresh.payload, fresh.attempts) == ("healthy", 0)


async def test_a_ledger_from_before_parked_writes_is_migrated(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        await first.outbox.enqueue([OutboxEntry("github:octo/widgets#7", "status", "old")], now=NOW)
    # Back to schema version 4: no parked writes.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE tracker_writes DROP COLUMN parked_at"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 4"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        [write] = await migrated.outbox.claim(claimer="a", now=NOW, until=NOW + timedelta(minutes=2), limit=10)
        assert await migrated.outbox.park(write, at=NOW, error="boom")
        assert (await migrated.outbox.backlog()).parked == 1


BUDGET_CAPS = Caps(
    max_active_runs=10,
    max_active_runs_per_repo=10,
    max_active_runs_per_tree=10,
    max_cost_usd_per_run=5.0,
    max_cost_usd_per_tree=8.0,
    max_tokens_per_run=1_000,
    max_tokens_per_tree=1_500,
)
BUDGET_LIMITS = LaunchLimits(
    max_active_runs=10,
    max_active_runs_per_repo=10,
    max_active_runs_per_tree=10,
    max_active_runs_of_kind=None,
    max_runs_per_issue=5,
    max_runs_per_tree=40,
    max_cost_usd_per_tree=8.0,
    max_tokens_per_tree=1_500,
)


def budget_scope(issue: int) -> FactsScope:
    return FactsScope(
        issue_key=f"github:octo/widgets#{issue}",
        repo="octo/widgets",
        root_key=ROOT,
        agent_kind="claude_code",
        today=NOW.date(),
    )


def launching(issue: int) -> Callable[[LedgerFacts], tuple[Verdict, Changes]]:
    """The real decision for a trusted nudge of ``issue`` (in the tree rooted at #1), as the coordinator plans it."""
    facts = IssueFacts(
        ref=IssueRef(repo="octo/widgets", number=issue),
        open=True,
        labels=frozenset({"agent-grid"}),
        assignees=(),
        root=IssueRef(repo="octo/widgets", number=1),
        root_labels=frozenset(),
    )
    trigger = Trigger(NudgeReason.ISSUE_LABELED, Actor(login="alice", association=AuthorAssociation.MEMBER))

    def plan(seen: LedgerFacts) -> tuple[Verdict, Changes]:
        verdict = decide_launch(facts, seen, trigger, Policy(caps=BUDGET_CAPS), NOW)
        if not isinstance(verdict, Launch):
            return verdict, Changes()
        run = replace(
            new_run(f"run-{issue}-{uuid.uuid4().hex[:6]}", issue=issue),
            max_cost_usd=verdict.max_cost_usd,
            max_tokens=verdict.max_tokens,
        )
        return verdict, Changes(run=run)

    return plan


async def test_concurrent_decisions_in_one_tree_never_allot_more_than_its_budget(ledger: Ledger) -> None:
    # Six issues of one tree decided at once: 5 USD a run, 8 USD for the tree.
    decided = await asyncio.gather(
        *(ledger.decide(budget_scope(n), launching(n), now=NOW, limits=BUDGET_LIMITS) for n in range(2, 8))
    )
    started = [d.run for d in decided if d.started is STARTED and d.run is not None]
    assert started
    assert sum(run.max_cost_usd or 0 for run in started) <= 8.0
    assert sum(run.max_tokens or 0 for run in started) <= 1_500
    for other in decided:
        if other.started is not STARTED:  # saw the budget allotted (waits), or lost the race to it (PostgreSQL)
            assert other.started is StartOutcome.AT_CAP or (
                isinstance(other.verdict, Wait) and other.verdict.reason is WaitReason.TREE_BUDGET_ALLOTTED
            ), other
    allotted = await facts(ledger, issue=2)
    assert allotted.tree_reserved_usd == pytest.approx(sum(run.max_cost_usd or 0 for run in started))
    assert allotted.tree_reserved_tokens == sum(run.max_tokens or 0 for run in started)

    # Topped up to the budget one decision at a time; then the tree waits for a run to end.
    for number in range(20, 30):
        next_one = await ledger.decide(budget_scope(number), launching(number), now=NOW, limits=BUDGET_LIMITS)
        if not isinstance(next_one.verdict, Launch):
            break
        assert next_one.run is not None
        started.append(next_one.run)
    assert isinstance(next_one.verdict, Wait)
    assert next_one.verdict.reason is WaitReason.TREE_BUDGET_ALLOTTED
    full = await facts(ledger, issue=2)
    assert full.tree_reserved_usd == pytest.approx(8.0)
    assert full.tree_reserved_tokens == 1_500

    # A run that ends having spent 1 of its 5 USD gives the rest back to the tree.
    first = next(run for run in started if run.max_cost_usd == 5.0)  # the first launched got a whole run's cap
    await ledger.mark_started(first.run_id, worker_id="w1", at=NOW)
    await ledger.heartbeat(first.run_id, worker_id="w1", at=NOW, cost_usd=0.5, tokens=100)
    during = await facts(ledger, issue=2)
    assert during.tree_reserved_usd == pytest.approx(7.5)
    assert during.tree_cost_usd == pytest.approx(0.5)
    assert (during.tree_reserved_tokens, during.tree_tokens) == (1_400, 100)
    await ledger.finish(first.run_id, reason=ExitReason.SUCCESS, at=NOW, cost_usd=1.0, tokens=200, worker_id="w1")
    after = await ledger.decide(budget_scope(10), launching(10), now=NOW, limits=BUDGET_LIMITS)
    assert isinstance(after.verdict, Launch)
    assert after.started is STARTED
    # 8 USD, less the 1 spent and the 3 still allotted; 1,500 tokens, less 200 spent and 500 allotted.
    assert after.verdict.max_cost_usd == pytest.approx(4.0)
    assert after.verdict.max_tokens == 800


async def test_a_launch_allotted_more_than_is_left_of_its_tree_is_refused_under_the_launch_lock(ledger: Ledger) -> None:
    # What a decision saw may be stale by the time it launches (PostgreSQL: decisions read without the lock).
    first = replace(new_run("run-a", issue=2), max_cost_usd=5.0, max_tokens=100)
    assert await ledger.start_run(first, now=NOW, limits=BUDGET_LIMITS) is STARTED
    stale = replace(new_run("run-b", issue=3), max_cost_usd=5.0, max_tokens=100)
    assert await ledger.start_run(stale, now=NOW, limits=BUDGET_LIMITS) is StartOutcome.AT_CAP
    tokens = replace(new_run("run-c", issue=4), max_cost_usd=1.0, max_tokens=1_401)
    assert await ledger.start_run(tokens, now=NOW, limits=BUDGET_LIMITS) is StartOutcome.AT_CAP
    fits = replace(new_run("run-d", issue=5), max_cost_usd=3.0, max_tokens=1_400)
    assert await ledger.start_run(fits, now=NOW, limits=BUDGET_LIMITS) is STARTED
    record = await ledger.run_record("run-d")
    assert record is not None
    assert (record.max_cost_usd, record.max_tokens) == (3.0, 1_400)


async def test_a_ledger_from_before_allotments_is_migrated_and_its_runs_hold_nothing_back(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("old", issue=2), now=NOW) is STARTED
    # Back to schema version 5: runs keep no allotment.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE runs DROP COLUMN max_cost_usd"))
            await connection.execute(sa.text("ALTER TABLE runs DROP COLUMN max_tokens"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 5"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        allotted = replace(new_run("new", issue=3), max_cost_usd=2.5, max_tokens=300)
        assert await migrated.start_run(allotted, now=NOW, limits=BUDGET_LIMITS) is STARTED
        seen = await facts(migrated, issue=4)
        old = await migrated.run_record("old")
    assert (seen.tree_reserved_usd, seen.tree_reserved_tokens) == (2.5, 300)  # the old run's allotment is unknown
    assert old is not None
    assert (old.max_cost_usd, old.max_tokens) == (None, None)


async def test_a_trees_size_is_reserved_against_its_cap_even_when_raced(ledger: Ledger) -> None:
    # Eight requests of three at once in a tree GitHub shows with 2 issues, under a cap of 12: three fit.
    reservations = await asyncio.gather(*(ledger.reserve_tree_size(ROOT, 3, counted=2, cap=12) for _ in range(8)))
    assert sorted(r.size for r in reservations if r.reserved) == [5, 8, 11]
    refused = [r for r in reservations if not r.reserved]
    assert len(refused) == 5
    assert all(r.size >= 8 for r in refused)  # the size that refused it, reservations included
    # A count from GitHub that lags behind the reservations (their issues not all created yet) lowers nothing.
    assert not (await ledger.reserve_tree_size(ROOT, 2, counted=5, cap=12)).reserved
    # Issues added by people count too: GitHub's count is taken when it is the larger.
    assert not (await ledger.reserve_tree_size(ROOT, 1, counted=12, cap=12)).reserved
    await ledger.release_tree_size(ROOT, 3)  # a request whose sub-issues were not created after all
    assert await ledger.reserve_tree_size(ROOT, 1, counted=8, cap=12) == TreeSizeReservation(True, 9)
    await ledger.release_tree_size(ROOT, 50)
    assert await ledger.reserve_tree_size(ROOT, 2, counted=1, cap=12) == TreeSizeReservation(True, 3)
    # Another tree is counted apart, from its own first reservation.
    assert await ledger.reserve_tree_size("github:octo/widgets#2", 4, counted=1, cap=4) == TreeSizeReservation(False, 1)


async def test_a_ledger_from_before_tree_size_reservations_is_migrated(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("old"), now=NOW) is STARTED
    # Back to schema version 6: no tree size kept.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE tree_totals DROP COLUMN size_reserved"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 6"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        assert await migrated.reserve_tree_size(ROOT, 2, counted=3, cap=5) == TreeSizeReservation(True, 5)


# What GitHub shows of a tree (its roll-up) and of issue #7 (its status comment), for a ledger rebuilt from it.
GITHUB_TREE = TreeRecord(runs=3, cost_usd=4.5, tokens=9_000)
GITHUB_SHOWS = GitHubRecord(tree=GITHUB_TREE, issue=IssueRecord(runs=2, consecutive_failures=1, tree=GITHUB_TREE))


def adopting(*, saw: LedgerFacts | None = None) -> Callable[[LedgerFacts], tuple[None, Changes]]:
    """A decision that adopts what GitHub shows, as the coordinator plans it; ``saw`` fixes the facts it read."""

    def plan(seen: LedgerFacts) -> tuple[None, Changes]:
        _, adoption = rebuild(saw if saw is not None else seen, GITHUB_SHOWS, agent_kind="claude_code")
        return None, Changes(adopt=adoption)

    return plan


async def test_decisions_that_saw_the_same_fresh_ledger_adopt_githubs_figures_once(ledger: Ledger) -> None:
    # On PostgreSQL decisions read without a lock: two in one tree may both read the fresh ledger, and both adopt
    # what GitHub shows. Adopting raises the ledger to GitHub's figures; it never adds them twice.
    for _ in range(2):
        await ledger.decide(budget_scope(7), adopting(saw=LedgerFacts()), now=NOW, limits=BUDGET_LIMITS)
    once = await facts(ledger, issue=7)
    assert (once.runs_in_tree, once.tree_cost_usd, once.tree_tokens) == pytest.approx((3, 4.5, 9_000))
    assert (once.runs_on_issue, once.consecutive_failures) == (2, 1)
    # Concurrent decisions, each reading as it goes, change nothing more.
    await asyncio.gather(
        *(ledger.decide(budget_scope(n), adopting(), now=NOW, limits=BUDGET_LIMITS) for n in (7, 7, 8, 8, 9))
    )
    again = await facts(ledger, issue=7)
    assert (again.runs_in_tree, again.tree_cost_usd, again.tree_tokens) == pytest.approx((3, 4.5, 9_000))
    assert (again.runs_on_issue, again.consecutive_failures) == (2, 1)
    assert (await facts(ledger, issue=8)).runs_on_issue == 2
    # Runs counted since add to what was adopted, as any run does.
    assert await ledger.start_run(new_run("run-next", issue=9), now=NOW) is STARTED
    assert (await facts(ledger, issue=7)).runs_in_tree == 4


async def test_adoption_beside_a_run_in_flight_counts_its_spend_once(ledger: Ledger) -> None:
    # GitHub's spend includes what the tree's runs in flight had reported; the ledger counts those runs apart.
    assert await ledger.start_run(new_run("run-a", issue=5), now=NOW) is STARTED
    assert (await ledger.mark_started("run-a", worker_id="w1", at=NOW)).held
    assert (await ledger.heartbeat("run-a", worker_id="w1", at=NOW, cost_usd=1.0, tokens=2_000)).held
    await asyncio.gather(
        *(ledger.decide(budget_scope(7), adopting(), now=NOW, limits=BUDGET_LIMITS) for _ in range(3)),
        ledger.decide(budget_scope(7), adopting(saw=LedgerFacts()), now=NOW, limits=BUDGET_LIMITS),
    )
    during = await facts(ledger, issue=7)
    assert (during.tree_cost_usd, during.tree_tokens) == pytest.approx((4.5, 9_000))
    await ledger.finish("run-a", reason=ExitReason.SUCCESS, at=NOW, cost_usd=1.5, tokens=2_500, worker_id="w1")
    after = await facts(ledger, issue=7)
    assert (after.tree_cost_usd, after.tree_tokens) == pytest.approx((5.0, 9_500))


async def test_a_ledger_from_before_follow_ups_is_migrated(ledger_url: str) -> None:
    async with open_ledger(ledger_url) as first:
        assert await first.start_run(new_run("old"), now=NOW) is STARTED
    # Back to schema version 7: no outbox of follow-ups.
    engine = create_async_engine(ledger_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("DROP TABLE run_follow_ups"))
            await connection.execute(sa.text("DELETE FROM schema_versions WHERE version > 7"))
    finally:
        await engine.dispose()

    async with open_ledger(ledger_url) as migrated:
        await migrated.finish("old", reason=ExitReason.LOST, at=NOW, cost_usd=0, tokens=0, follow_ups=FOLLOW_UPS)
        assert [f.kind for f in await migrated.follow_ups("old")] == [FollowUpKind.ISSUE, FollowUpKind.SUCCESSORS]
