"""The run ledger: every run, its transitions and usage, and the running totals decisions read.

The coordinator is its only writer. SQLite by default (``sqlite+aiosqlite:///path``), PostgreSQL for
production (``postgresql+asyncpg://…``); the same SQL runs on both. Each write is one transaction, and
every write is idempotent, so a redelivered message changes nothing twice.
"""

import functools
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from agent_grid_contracts.public_issues import Actor
from agent_grid_contracts.public_lifecycle import ExitReason
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from coordinator.decisions.public_facts import LedgerFacts
from coordinator.decisions.public_rebuild import Adoption
from coordinator.ledger.public_outbox import Outbox, OutboxEntry
from coordinator.ledger.public_stats import LedgerStats
from coordinator.ledger.schema import (
    ACTIVE_STATES,
    MIGRATIONS,
    follow_ups,
    issues,
    repo_days,
    run_events,
    runs,
    schema_versions,
    settings_table,
    trees,
)
from coordinator.ledger.sql import enqueue_writes, insert_for_dialect, upsert
from coordinator.ledger.transactions import (
    AsyncEngineTransactions,
    SqliteThreadTransactions,
    Transactions,
    sqlite_pragmas,
)

__all__ = [
    "ActiveRun",
    "Changes",
    "Claim",
    "ClaimResult",
    "Decided",
    "FactsScope",
    "FinishedRun",
    "FollowUp",
    "FollowUpKind",
    "FollowUps",
    "LaunchLimits",
    "Ledger",
    "LedgerEvent",
    "NewRun",
    "RunEvent",
    "RunRecord",
    "StartOutcome",
    "TreeSizeReservation",
    "TreeTotals",
    "WaitingNudge",
    "open_ledger",
]

_FAILURES = frozenset(
    {
        ExitReason.FAILED,
        ExitReason.TIMED_OUT,
        ExitReason.STALLED,
        ExitReason.LOST,
        ExitReason.LAUNCH_FAILED,
        ExitReason.LOST_WORKSPACE,
        ExitReason.UNKNOWN,
    }
)


@dataclass(frozen=True)
class NewRun:
    """A run about to be launched, with what it is allotted of its tree's budget (its launch's limits).

    While the run is active, what it has not spent of its allotment is not left for another run of its tree.
    """

    run_id: str
    issue_key: str
    repo: str
    root_key: str
    mode: str
    agent_kind: str
    authorised_by: str
    trigger_message_id: str | None
    attempt: int = 1
    max_cost_usd: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """A run as the ledger holds it."""

    run_id: str
    issue_key: str
    repo: str
    root_key: str
    mode: str
    agent_kind: str
    state: str
    authorised_by: str
    created_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    exit_reason: str | None
    cost_usd: float
    tokens: int
    sub_issues_created: int = 0
    log_url: str | None = None
    """Where the grid worker that ran it serves its log (from its ``AgentStarted``); None before it started."""
    max_cost_usd: float | None = None
    """What it was allotted (its launch's limits); None for a run launched before the ledger kept them."""
    max_tokens: int | None = None

    @property
    def active(self) -> bool:
        """Launching or running: the run has not ended."""
        return self.state in ACTIVE_STATES


class StartOutcome(StrEnum):
    """What became of an attempt to start a run."""

    STARTED = "started"
    LEASE_TAKEN = "lease_taken"  # another run is active on the issue
    AT_CAP = "at_cap"  # a concurrency or run-count cap would be exceeded


class Claim(StrEnum):
    """Whether the worker that reported a run holds it, as the ledger sees it."""

    HELD = "held"  # the run is active and this worker holds it (or no worker is recorded yet)
    UNKNOWN = "unknown"  # no such run
    ENDED = "ended"  # the run is over: it exited, or was declared lost while its worker was out of reach
    ELSEWHERE = "elsewhere"  # another worker holds the run


@dataclass(frozen=True)
class ClaimResult:
    """What the ledger made of a worker's ``AgentStarted`` or heartbeat.

    For a run the worker does not hold, ``holder`` is the worker the ledger records (None if it never
    started) and ``ended_at`` when it ended. For a start the ledger recorded, ``tree_killed`` and
    ``cancel_requested`` (the reason given) say the run must stop nevertheless: its tree's kill switch is
    on, or it was asked to stop while it was still launching, before its worker was known.
    """

    claim: Claim
    holder: str | None = None
    ended_at: datetime | None = None
    tree_killed: bool = False
    cancel_requested: str | None = None

    @property
    def held(self) -> bool:
        """The ledger holds the run on the reporting worker."""
        return self.claim is Claim.HELD


@dataclass(frozen=True)
class ActiveRun:
    """An active run and the worker that holds it (None while it is launching)."""

    run_id: str
    issue_key: str
    worker_id: str | None


@dataclass(frozen=True)
class LaunchLimits:
    """The caps re-checked inside the launch transaction, where no concurrent launch can slip past them.

    With the tree's budgets, a run's allotment (:attr:`NewRun.max_cost_usd`, ``max_tokens``) must fit in what is
    left of them: not spent, and not allotted to the tree's other runs in flight.
    """

    max_active_runs: int
    max_active_runs_per_repo: int
    max_active_runs_per_tree: int
    max_active_runs_of_kind: int | None
    max_runs_per_issue: int
    max_runs_per_tree: int
    max_cost_usd_per_tree: float | None = None
    max_tokens_per_tree: int | None = None


class _AtCap(Exception):
    pass


@dataclass(frozen=True)
class RunEvent:
    """One transition of a run."""

    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True)
class LedgerEvent:
    """One transition of any run, numbered: ``id`` grows with every event the ledger records."""

    id: int
    run_id: str
    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True)
class TreeTotals:
    """An issue tree's roll-up: every run in it, finished ones' spend plus what active ones reported."""

    root_key: str
    authorised_by: str | None
    runs: int
    active_runs: int
    cost_usd: float
    tokens: int
    killed: bool


@dataclass(frozen=True)
class TreeSizeReservation:
    """What became of a request for room in a tree: ``reserved`` or not, and the tree's ``size`` then.

    ``size`` counts the issues GitHub showed and the sub-issues reserved and not given back: after the reservation
    when it was made, the size that refused it otherwise.
    """

    reserved: bool
    size: int


@dataclass(frozen=True)
class FinishedRun:
    """A run that has just reached its terminal state (returned once, never for a repeat).

    With the figures its issue and tree stand at once it ended (runs, failures in a row, spend), for the
    record agent-grid keeps on GitHub.
    """

    run: RunRecord
    consecutive_failures: int
    issue_runs: int = 0
    tree: "TreeTotals | None" = None


class FollowUpKind(StrEnum):
    """What a follow-up of a run's end is."""

    ISSUE = "issue"  # the run's issue again: news waited for it (a nudge newer than the run), or its run was lost
    RELEASED = "released"  # a nudge that waited for a slot elsewhere: the run's end freed one
    SUCCESSORS = "successors"  # the issue's next open sibling and its parent (found on the tracker)


@dataclass(frozen=True)
class FollowUp:
    """A follow-up of a run's end, recorded with it, kept until it is made; ``actor``: whom a nudge is made for."""

    id: int
    run_id: str
    issue_key: str
    kind: FollowUpKind
    actor: Actor | None


@dataclass(frozen=True)
class FollowUps:
    """What :meth:`Ledger.finish` records to follow a run's end, in the transaction that ends it.

    The issue again if a nudge newer than the run waited for it (or the run was lost), the ``release_waiting``
    oldest nudges waiting elsewhere (taken off the waiting list), and the issue's successors. They are kept until
    :meth:`Ledger.forget_follow_ups`; the sweep makes those still there at ``due_at`` (:meth:`Ledger.due_follow_ups`).
    """

    due_at: datetime
    release_waiting: int


@dataclass(frozen=True)
class FactsScope:
    """Whose facts a decision reads: the issue, its repository and tree, the agent kind it would run, the day."""

    issue_key: str
    repo: str
    root_key: str
    agent_kind: str
    today: date
    # The run GitHub shows in flight on the issue, if any: whether the ledger knows it is part of the facts.
    shown_run: str | None = None


@dataclass(frozen=True)
class WaitingNudge:
    """A nudge that has to wait (for the issue's run, for a free slot): when it was sent, and by whom."""

    sent_at: datetime
    actor: Actor | None


@dataclass(frozen=True)
class Changes:
    """What one decision changes in the ledger, applied in the transaction that read the facts it was made from.

    ``run`` takes the issue's lease and records the run; ``reset_failures`` (a person handed the issue back)
    applies with it. ``writes`` are the tracker writes that report the decision (the outbox), kept only when
    the run, if any, started: a launch that lost its race reports nothing. ``adopt`` raises the ledger to
    what GitHub shows (a ledger rebuilt from GitHub), before the run is recorded.
    """

    adopt: Adoption | None = None
    run: "NewRun | None" = None
    reset_failures: bool = False
    remember: WaitingNudge | None = None
    stop_managing: bool = False
    writes: tuple[OutboxEntry, ...] = ()


@dataclass(frozen=True)
class Decided[T]:
    """What :meth:`Ledger.decide` decided: the plan's ``verdict``, the facts it saw, and what became of the run.

    ``run`` is the run the plan asked for, if any, and ``started`` what became of it (None without a run).
    Anything but :attr:`StartOutcome.STARTED` means that nothing of the decision was applied (the transaction
    rolled back): a concurrent launch took the lease or a slot.
    """

    verdict: T
    facts: LedgerFacts
    run: "NewRun | None" = None
    started: "StartOutcome | None" = None


# Literal, not bound: a planner can only use the partial indexes when it sees the same predicate they have.
_ACTIVE = sa.text("runs.state IN ('launching', 'running')")
# The run event noting that a run was asked to stop (kill switch): a run still launching then learns it at its
# start, when its worker is known.
_CANCEL_REQUESTED = "cancel_requested"


class Ledger:
    """Reads and writes of the ledger. Open it with :func:`open_ledger`.

    Every method is one transaction, run whole by the ledger's :class:`Transactions` (on SQLite in the one
    thread that owns the database's connection; on PostgreSQL on the async engine).
    """

    def __init__(self, engine: AsyncEngine, transactions: Transactions | None = None) -> None:
        """Wrap an engine whose database has been migrated (and, on SQLite, the thread that writes it)."""
        self._engine = engine
        self._tx: Transactions = transactions or AsyncEngineTransactions(engine)
        self.outbox = Outbox(self._tx)
        """The tracker writes not yet written."""
        self.stats = LedgerStats(engine)
        """What operators watch (the coordinator's metrics)."""

    async def facts(self, *, issue_key: str, repo: str, root_key: str, agent_kind: str, today: date) -> LedgerFacts:
        """What the decision needs for one issue: two indexed queries, whatever the history's size."""
        scope = FactsScope(issue_key=issue_key, repo=repo, root_key=root_key, agent_kind=agent_kind, today=today)
        return await self._tx.read(lambda connection: _read_facts(connection, scope))

    async def decide[T](
        self,
        scope: FactsScope,
        plan: Callable[[LedgerFacts], tuple[T, Changes]],
        *,
        now: datetime,
        limits: "LaunchLimits",
    ) -> Decided[T]:
        """Read the facts, let ``plan`` (pure) decide, and apply its changes: one transaction.

        On SQLite the transaction holds the write lock from its start, so the facts are the truth until it
        commits, for every coordinator sharing the file. On PostgreSQL decisions read without a lock, and a
        launch then takes the launch lock and checks the caps again (as :meth:`start_run` does), so that
        concurrent launches cannot slip past a cap the decision saw free.
        """

        def decide(connection: Connection) -> Decided[T]:
            facts = _read_facts(connection, scope)
            verdict, changes = plan(facts)
            if changes.adopt is not None:
                _adopt(connection, scope, changes.adopt)
            run = changes.run
            if run is not None:
                if connection.dialect.name == "postgresql":
                    connection.execute(_LAUNCH_LOCK)
                    if _over_a_cap(connection, run, limits):
                        raise _Refused(Decided(verdict, facts, run, StartOutcome.AT_CAP))
                try:
                    _record_run(connection, run, now=now, reset_failures=changes.reset_failures)
                except IntegrityError:
                    raise _Refused(Decided(verdict, facts, run, StartOutcome.LEASE_TAKEN)) from None
            if changes.remember is not None:
                _remember(connection, scope.issue_key, changes.remember)
            if changes.stop_managing:
                connection.execute(
                    issues.update().where(issues.c.issue_key == scope.issue_key).values(last_manage_started_at=None)
                )
            enqueue_writes(connection, [(e.issue_key, e.key, e.payload) for e in changes.writes], now)
            return Decided(verdict, facts, run, StartOutcome.STARTED if run is not None else None)

        try:
            return await self._tx.write(decide)
        except _Refused as refused:  # the transaction rolled back: nothing of the decision was applied
            return refused.decided

    async def start_run(self, run: NewRun, *, now: datetime, limits: LaunchLimits | None = None) -> StartOutcome:
        """Take the issue's lease and record the run, unless another run holds the lease or a cap is reached.

        The decision read the counts before; concurrent launches (other messages, other coordinators) may
        have changed them since, so the caps are checked again here, in the one transaction that launches.
        On PostgreSQL launches are serialised by an advisory lock for that; on SQLite by the write lock.
        """

        def start(connection: Connection) -> StartOutcome:
            if limits is not None:
                if connection.dialect.name == "postgresql":
                    connection.execute(_LAUNCH_LOCK)
                if _over_a_cap(connection, run, limits):
                    return StartOutcome.AT_CAP
            _record_run(connection, run, now=now)
            return StartOutcome.STARTED

        try:
            return await self._tx.write(start)
        except IntegrityError:
            return StartOutcome.LEASE_TAKEN

    async def mark_started(
        self, run_id: str, *, worker_id: str, at: datetime, log_url: str | None = None
    ) -> ClaimResult:
        """The grid started the run on ``worker_id``: recorded while the run is active and no other worker holds it.

        The first worker to report a start holds the run (and names its ``log_url``); the same worker repeating
        its ``AgentStarted`` is a no-op. An unknown or ended run, or one another worker holds, is left as it is:
        the caller tells that worker to stop, so one run id never has two processes and a run the ledger ended
        never keeps running.
        """

        def started(connection: Connection) -> ClaimResult:
            # Conditional on no worker yet: of two racing starts, the second finds the row taken (PostgreSQL
            # re-checks the predicate after waiting for the first's row lock; SQLite has a single writer).
            taken = connection.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.state.in_(ACTIVE_STATES), runs.c.worker_id.is_(None))
                .values(state="running", started_at=at, last_seen_at=at, worker_id=worker_id, log_url=log_url)
            )
            if taken.rowcount:
                _event(connection, run_id, at, "started", worker_id)
            found = _claim(connection, run_id, worker_id)
            if not found.held:
                return found
            root_key = sa.select(runs.c.root_key).where(runs.c.run_id == run_id).scalar_subquery()
            killed = connection.scalar(sa.select(trees.c.killed).where(trees.c.root_key == root_key))
            requested = connection.scalar(
                sa.select(run_events.c.detail)
                .where(run_events.c.run_id == run_id, run_events.c.kind == _CANCEL_REQUESTED)
                .limit(1)
            )
            return replace(found, tree_killed=bool(killed), cancel_requested=requested)

        return await self._tx.write(started)

    async def heartbeat(
        self, run_id: str, *, worker_id: str, at: datetime, cost_usd: float, tokens: int
    ) -> ClaimResult:
        """The run is alive on ``worker_id`` and has spent this much so far (usage only grows).

        Only the worker that holds the run refreshes it (any worker while none is recorded yet: a heartbeat
        may overtake its ``AgentStarted``); another worker's heartbeats would keep a run alive that its own
        worker no longer reports, and hide it from the lost-run sweep.
        """

        def beat(connection: Connection) -> ClaimResult:
            changed = connection.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.state.in_(ACTIVE_STATES), _held_by(worker_id))
                .values(
                    last_seen_at=at,
                    # Usage only grows: a reordered, older heartbeat must not lower it.
                    cost_usd=sa.case((runs.c.cost_usd > cost_usd, runs.c.cost_usd), else_=cost_usd),
                    tokens=sa.case((runs.c.tokens > tokens, runs.c.tokens), else_=tokens),
                )
            )
            if changed.rowcount:
                return ClaimResult(Claim.HELD)
            return _claim(connection, run_id, worker_id)

        return await self._tx.write(beat)

    async def finish(
        self,
        run_id: str,
        *,
        reason: ExitReason,
        at: datetime,
        cost_usd: float,
        tokens: int,
        summary: str = "",
        worker_id: str | None = None,
        writes: Callable[[FinishedRun], Sequence[OutboxEntry]] | None = None,
        follow_ups: FollowUps | None = None,
    ) -> FinishedRun | None:
        """End the run for ``reason``; None when it already ended (the first end wins, exactly once).

        With ``worker_id`` (a worker's ``AgentExited``) only the worker that holds the run ends it, or any worker
        while none is recorded; None (the lost-run sweep, a launch never published) ends it whoever holds it.
        ``writes`` gives the tracker writes that report the end, added to the outbox in the same transaction;
        ``follow_ups`` records what follows the end (:class:`FollowUps`), in the same transaction too.
        """
        holder = _held_by(worker_id) if worker_id is not None else sa.true()

        def end(connection: Connection) -> FinishedRun | None:
            current = connection.execute(
                sa.select(runs).where(runs.c.run_id == run_id, runs.c.state.in_(ACTIVE_STATES), holder)
            ).first()
            if current is None:
                return None
            cost, spent = max(cost_usd, current.cost_usd), max(tokens, current.tokens)
            ended = connection.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.state.in_(ACTIVE_STATES), holder)
                .values(
                    state="lost" if reason is ExitReason.LOST else "exited",
                    ended_at=at,
                    last_seen_at=at,
                    exit_reason=reason.value,
                    cost_usd=cost,
                    tokens=spent,
                    summary=summary,
                )
            )
            if not ended.rowcount:
                return None  # another coordinator ended it between our read and write
            failed = reason in _FAILURES
            connection.execute(
                issues.update()
                .where(issues.c.issue_key == current.issue_key)
                .values(consecutive_failures=issues.c.consecutive_failures + 1 if failed else 0)
            )
            connection.execute(
                trees.update()
                .where(trees.c.root_key == current.root_key)
                .values(cost_usd=trees.c.cost_usd + cost, tokens=trees.c.tokens + spent)
            )
            day = at.astimezone(UTC).date()
            upsert(connection, repo_days, {"repo": current.repo, "day": day}, add={"cost_usd": cost})
            _event(connection, run_id, at, "exited", reason.value)
            failures, issue_runs = connection.execute(
                sa.select(issues.c.consecutive_failures, issues.c.runs).where(issues.c.issue_key == current.issue_key)
            ).one_or_none() or (0, 0)
            record = connection.execute(sa.select(runs).where(runs.c.run_id == run_id)).one()
            tree = _tree_totals(connection, current.root_key)
            finished = FinishedRun(_record(record), int(failures or 0), int(issue_runs or 0), tree)
            if writes is not None:
                enqueue_writes(connection, [(e.issue_key, e.key, e.payload) for e in writes(finished)], at)
            if follow_ups is not None:
                _record_follow_ups(connection, finished.run, reason, follow_ups)
            return finished

        return await self._tx.write(end)

    async def reset_failures(self, issue_key: str) -> None:
        """Close the issue's circuit breaker: a person handed it back, its failed runs in a row count from zero."""
        statement = issues.update().where(issues.c.issue_key == issue_key).values(consecutive_failures=0)
        await self._tx.write(lambda connection: connection.execute(statement))

    async def silent_runs(self, *, seen_before: datetime) -> list[RunRecord]:
        """Active runs not heard from since ``seen_before`` (candidates for ``lost``)."""
        query = sa.select(runs).where(_ACTIVE, runs.c.last_seen_at < seen_before)
        return await self._tx.read(lambda connection: [_record(row) for row in connection.execute(query)])

    async def request_cancels(
        self, *, root_key: str, issue_key: str | None = None, reason: str, at: datetime
    ) -> list[ActiveRun]:
        """The active runs of a tree (or of one issue in it), each noted as asked to stop for ``reason``.

        The caller tells the runs' workers; a run still launching has no worker yet, and the note is how its
        ``AgentStarted`` learns that it must stop (:meth:`mark_started`). A run is noted once, however often
        it is asked.
        """
        # Through the partial indexes on active runs, however long the history.
        query = sa.select(runs.c.run_id, runs.c.issue_key, runs.c.worker_id).where(_ACTIVE, runs.c.root_key == root_key)
        if issue_key is not None:
            query = query.where(runs.c.issue_key == issue_key)

        def note(connection: Connection) -> list[ActiveRun]:
            found = [ActiveRun(row.run_id, row.issue_key, row.worker_id) for row in connection.execute(query)]
            if not found:
                return []
            noted = set(
                connection.scalars(
                    sa.select(run_events.c.run_id).where(
                        run_events.c.run_id.in_([run.run_id for run in found]), run_events.c.kind == _CANCEL_REQUESTED
                    )
                )
            )
            new = [
                {"run_id": run.run_id, "at": at, "kind": _CANCEL_REQUESTED, "detail": reason}
                for run in found
                if run.run_id not in noted
            ]
            if new:
                connection.execute(run_events.insert(), new)
            return found

        return await self._tx.write(note)

    async def remember_nudge(self, issue_key: str, *, sent_at: datetime, actor: Actor | None) -> None:
        """Note a nudge, sent at ``sent_at`` by ``actor``, that waits (for the issue's run, for a free slot)."""
        await self._tx.write(lambda connection: _remember(connection, issue_key, WaitingNudge(sent_at, actor)))

    async def follow_ups(self, run_id: str) -> list[FollowUp]:
        """The follow-ups of the run's end not made yet (recorded by :meth:`finish`), in the order recorded."""
        query = sa.select(follow_ups).where(follow_ups.c.run_id == run_id).order_by(follow_ups.c.id)
        return await self._tx.read(lambda connection: [_follow_up(row) for row in connection.execute(query)])

    async def forget_follow_ups(self, ids: Collection[int]) -> None:
        """These follow-ups were made (published, or decided at once): forget them."""
        if not ids:
            return
        statement = follow_ups.delete().where(follow_ups.c.id.in_(list(ids)))
        await self._tx.write(lambda connection: connection.execute(statement))

    async def due_follow_ups(self, *, now: datetime, until: datetime, limit: int) -> list[str]:
        """Runs (up to ``limit``) with follow-ups due at ``now``, taken by this caller: not due again before ``until``.

        What whoever recorded them did not make in time (a failed publish, a coordinator that stopped); taken one
        run at a time with a conditional write, so concurrent sweeps take each run once (a follow-up made twice
        is harmless, one never made is lost work).
        """

        def take(connection: Connection) -> list[str]:
            due = list(
                connection.scalars(
                    sa.select(follow_ups.c.run_id)
                    .where(follow_ups.c.due_at <= now)
                    .group_by(follow_ups.c.run_id)
                    .order_by(sa.func.min(follow_ups.c.due_at))
                    .limit(limit)
                )
            )
            taken = []
            for run_id in due:
                pushed = connection.execute(
                    follow_ups.update()
                    .where(follow_ups.c.run_id == run_id, follow_ups.c.due_at <= now)
                    .values(due_at=until)
                )
                if pushed.rowcount:
                    taken.append(run_id)
            return taken

        return await self._tx.write(take)

    async def due_for_management(self, *, last_before: datetime, limit: int = 100) -> list[str]:
        """Parents under management whose last management run began before ``last_before``, oldest first."""
        query = (
            sa.select(issues.c.issue_key)
            .where(issues.c.last_manage_started_at < last_before)
            .order_by(issues.c.last_manage_started_at)
            .limit(limit)
        )
        return await self._tx.read(lambda connection: list(connection.scalars(query)))

    async def stop_managing(self, issue_key: str) -> None:
        """The parent is done (closed): no more timed resumptions."""
        statement = issues.update().where(issues.c.issue_key == issue_key).values(last_manage_started_at=None)
        await self._tx.write(lambda connection: connection.execute(statement))

    async def set_paused(self, paused: bool) -> None:
        """Pause (or resume) every launch."""
        await self._tx.write(
            lambda connection: upsert(connection, settings_table, {"name": "paused"}, set_={"value": paused})
        )

    async def set_tree_killed(self, root_key: str, killed: bool) -> None:
        """Turn a tree's kill switch on or off."""
        await self._tx.write(
            lambda connection: upsert(connection, trees, {"root_key": root_key}, set_={"killed": killed})
        )

    async def runs(
        self,
        *,
        repo: str | None = None,
        issue_key: str | None = None,
        root_key: str | None = None,
        states: Sequence[str] = (),
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs, newest first, filtered (``root_key``: the runs of one issue tree)."""
        query = sa.select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if repo:
            query = query.where(runs.c.repo == repo)
        if issue_key:
            query = query.where(runs.c.issue_key == issue_key)
        if root_key:
            query = query.where(runs.c.root_key == root_key)
        if states:
            query = query.where(runs.c.state.in_(list(states)))
        return await self._tx.read(lambda connection: [_record(row) for row in connection.execute(query)])

    async def run(self, run_id: str) -> tuple[RunRecord, list[RunEvent]] | None:
        """One run with its transitions, oldest first."""

        def read(connection: Connection) -> tuple[RunRecord, list[RunEvent]] | None:
            row = connection.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
            if row is None:
                return None
            events = connection.execute(
                sa.select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.id)
            )
            return _record(row), [RunEvent(_aware(e.at) or e.at, e.kind, e.detail) for e in events]

        return await self._tx.read(read)

    async def run_record(self, run_id: str) -> RunRecord | None:
        """One run, without its transitions (one primary-key lookup)."""

        def read(connection: Connection) -> RunRecord | None:
            row = connection.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
            return _record(row) if row is not None else None

        return await self._tx.read(read)

    async def run_records(self, run_ids: Collection[str]) -> list[RunRecord]:
        """The runs with these ids that exist (primary-key lookups), in no particular order."""
        if not run_ids:
            return []
        query = sa.select(runs).where(runs.c.run_id.in_(list(run_ids)))
        return await self._tx.read(lambda connection: [_record(row) for row in connection.execute(query)])

    async def events_after(self, after_id: int, *, limit: int, also: Collection[int] = ()) -> list[LedgerEvent]:
        """Events numbered above ``after_id`` (at most ``limit``), plus those numbered ``also``; by number.

        A range of the primary key, so following the ledger costs the same however long its history. ``also``
        is for numbers skipped earlier: on PostgreSQL a transaction that began first may commit after a later
        one, so a number can show up behind a higher one (or never, after a rollback).
        """
        wanted = run_events.c.id > after_id
        if also:
            wanted = sa.or_(wanted, run_events.c.id.in_(list(also)))
        query = sa.select(run_events).where(wanted).order_by(run_events.c.id).limit(limit + len(also))
        return await self._tx.read(
            lambda connection: [
                LedgerEvent(e.id, e.run_id, _aware(e.at) or e.at, e.kind, e.detail) for e in connection.execute(query)
            ]
        )

    async def last_event_id(self) -> int:
        """The number of the latest event, 0 when there is none (the primary key's maximum: one index lookup)."""
        query = sa.select(sa.func.max(run_events.c.id))
        return int(await self._tx.read(lambda connection: connection.scalar(query)) or 0)

    async def reserve_sub_issues(self, run_id: str, count: int, *, cap: int) -> int | None:
        """Count ``count`` more sub-issues against the active run unless that takes it past ``cap``.

        Returns the run's new total, or None when the run is not active or the cap would be exceeded (read the
        run to tell which). The check and the count are one conditional write, so two concurrent requests of
        one run cannot both slip under the cap; sub-issues reserved but not created are given back with
        :meth:`release_sub_issues`.
        """

        def reserve(connection: Connection) -> int | None:
            reserved = connection.execute(
                runs.update()
                .where(
                    runs.c.run_id == run_id,
                    runs.c.state.in_(ACTIVE_STATES),
                    runs.c.sub_issues_created + count <= cap,
                )
                .values(sub_issues_created=runs.c.sub_issues_created + count)
            )
            if not reserved.rowcount:
                return None
            total = connection.scalar(sa.select(runs.c.sub_issues_created).where(runs.c.run_id == run_id))
            return int(total or 0)

        return await self._tx.write(reserve)

    async def release_sub_issues(self, run_id: str, count: int) -> None:
        """Give back ``count`` reserved sub-issues that were not created after all (never below zero)."""
        remaining = runs.c.sub_issues_created - count
        statement = (
            runs.update()
            .where(runs.c.run_id == run_id)
            .values(sub_issues_created=sa.case((remaining < 0, 0), else_=remaining))
        )
        await self._tx.write(lambda connection: connection.execute(statement))

    async def reserve_tree_size(self, root_key: str, count: int, *, counted: int, cap: int) -> TreeSizeReservation:
        """Make room for ``count`` more issues in the tree rooted at ``root_key`` unless that takes it past ``cap``.

        ``counted`` is the tree's size as GitHub shows it now (the root included). The tree's reserved size is
        raised to the larger of itself and ``counted``, plus ``count``, only if that stays within ``cap``: one
        conditional write, so two runs of one tree creating sub-issues at once cannot both slip under the cap,
        whatever each counted on GitHub before the other's sub-issues were there. Room reserved for sub-issues
        not created after all is given back with :meth:`release_tree_size`.
        """
        base = sa.case((trees.c.size_reserved > counted, trees.c.size_reserved), else_=counted)

        def reserve(connection: Connection) -> TreeSizeReservation:
            upsert(connection, trees, {"root_key": root_key})
            reserved = connection.execute(
                trees.update()
                .where(trees.c.root_key == root_key, base + count <= cap)
                .values(size_reserved=base + count)
            )
            size = int(connection.scalar(sa.select(base).where(trees.c.root_key == root_key)) or 0)
            return TreeSizeReservation(bool(reserved.rowcount), size)

        return await self._tx.write(reserve)

    async def release_tree_size(self, root_key: str, count: int) -> None:
        """Give back room for ``count`` issues reserved in the tree and not created after all (never below zero)."""
        remaining = trees.c.size_reserved - count
        statement = (
            trees.update()
            .where(trees.c.root_key == root_key)
            .values(size_reserved=sa.case((remaining < 0, 0), else_=remaining))
        )
        await self._tx.write(lambda connection: connection.execute(statement))

    async def record_event(self, run_id: str, kind: str, detail: str, *, at: datetime) -> None:
        """Note something a run did (e.g. ``finish:done``) among its transitions."""
        await self._tx.write(lambda connection: _event(connection, run_id, at, kind, detail))

    async def tree(self, root_key: str) -> TreeTotals | None:
        """The tree's totals, or None when no run ever happened in it."""
        return await self._tx.read(lambda connection: _tree_totals(connection, root_key))

    async def paused(self) -> bool:
        """Whether launches are paused."""
        return await self._tx.read(_is_paused)

    async def close(self) -> None:
        """Release connections."""
        await self._tx.close()
        await self._engine.dispose()


class _Refused(Exception):
    """A launch that lost its race: rolls the decision's transaction back, carrying what was decided."""

    def __init__(self, decided: "Decided[Any]") -> None:
        self.decided = decided


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None for another database).

    Raises:
        ValueError: an in-memory or unnamed SQLite database: the ledger's transactions run on a connection of
            their own thread, which must open the very database the migrations ran on.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise ValueError(f"a SQLite ledger must be a file path (sqlite+aiosqlite:///PATH), not {url!r}")
    return Path(parsed.database)


@asynccontextmanager
async def open_ledger(url: str) -> AsyncIterator[Ledger]:
    """Open (and migrate) the ledger at ``url``: ``sqlite+aiosqlite:///PATH`` or ``postgresql+asyncpg://…``."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite has one writer: queue transactions on one connection in-process rather than have several
        # connections wait on the file lock (busy-waiting costs seconds under concurrent messages).
        options |= {"pool_size": 1, "max_overflow": 0}
    engine = create_async_engine(url, **options)
    transactions: Transactions | None = None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    try:
        await migrate(engine)
        if engine.dialect.name == "sqlite":
            # Migrations done, the ledger's transactions run in the thread that owns the database's connection.
            assert sqlite_path is not None  # a SQLite URL names a file (_sqlite_path refuses any other)
            transactions = SqliteThreadTransactions(str(sqlite_path))
        ledger = Ledger(engine, transactions)
        yield ledger
    finally:
        if transactions is not None:
            await transactions.close()
        await engine.dispose()


async def migrate(engine: AsyncEngine) -> int:
    """Apply the migrations not applied yet, each in its own transaction; returns the schema version."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: schema_versions.create(sync, checkfirst=True))
    for version, migration in enumerate(MIGRATIONS, start=1):
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # concurrent coordinators: one migrates, the others wait
                await connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('agent_grid_ledger'))"))
            done = await connection.scalar(
                sa.select(schema_versions.c.version).where(schema_versions.c.version == version)
            )
            if done is None:
                await migration(connection)
                await connection.execute(schema_versions.insert().values(version=version, applied_at=datetime.now(UTC)))
    return len(MIGRATIONS)


@dataclass(frozen=True)
class _ActiveCounts:
    """Active runs: in all, in a repository, in a tree, of an agent kind; the issue's own; the tree's spend.

    ``tree_reserved_*``: what the tree's active runs were allotted and have not spent yet.
    """

    total: int
    in_repo: int
    in_tree: int
    of_kind: int
    run_on_issue: str | None
    tree_cost_usd: float
    tree_tokens: int
    tree_reserved_usd: float
    tree_reserved_tokens: int


def _active_counts(
    connection: Connection, *, issue_key: str, repo: str, root_key: str, agent_kind: str
) -> _ActiveCounts:
    params = {"issue_key": issue_key, "repo": repo, "root_key": root_key, "agent_kind": agent_kind}
    row = connection.execute(_ACTIVE_COUNTS, params).one()
    total, in_repo, in_tree, of_kind, on_issue, cost, tokens, reserved_usd, reserved_tokens = row
    return _ActiveCounts(
        total=total,
        in_repo=int(in_repo or 0),
        in_tree=int(in_tree or 0),
        of_kind=int(of_kind or 0),
        run_on_issue=on_issue,
        tree_cost_usd=float(cost or 0.0),
        tree_tokens=int(tokens or 0),
        tree_reserved_usd=float(reserved_usd or 0.0),
        tree_reserved_tokens=int(reserved_tokens or 0),
    )


_LAUNCH_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('agent_grid_launch'))")
_p = sa.bindparam
# Everything but the active runs a decision reads, in one statement of primary-key lookups.
_TOTALS = sa.select(
    sa.select(issues.c.runs).where(issues.c.issue_key == _p("issue_key")).scalar_subquery(),
    sa.select(issues.c.consecutive_failures).where(issues.c.issue_key == _p("issue_key")).scalar_subquery(),
    sa.select(issues.c.last_manage_started_at).where(issues.c.issue_key == _p("issue_key")).scalar_subquery(),
    sa.select(trees.c.runs).where(trees.c.root_key == _p("root_key")).scalar_subquery(),
    sa.select(trees.c.cost_usd).where(trees.c.root_key == _p("root_key")).scalar_subquery(),
    sa.select(trees.c.tokens).where(trees.c.root_key == _p("root_key")).scalar_subquery(),
    sa.select(trees.c.authorised_by).where(trees.c.root_key == _p("root_key")).scalar_subquery(),
    sa.select(trees.c.killed).where(trees.c.root_key == _p("root_key")).scalar_subquery(),
    sa.select(repo_days.c.cost_usd)
    .where(repo_days.c.repo == _p("repo"), repo_days.c.day == _p("today"))
    .scalar_subquery(),
    sa.select(settings_table.c.value).where(settings_table.c.name == "paused").scalar_subquery(),
    sa.exists().where(trees.c.root_key == _p("root_key")),
    sa.exists().where(runs.c.run_id == _p("shown_run")),
)
# One pass over the active runs only (through the partial indexes), however long the history.
_ACTIVE_COUNTS = sa.select(
    sa.func.count(),
    sa.func.sum(sa.case((runs.c.repo == _p("repo"), 1), else_=0)),
    sa.func.sum(sa.case((runs.c.root_key == _p("root_key"), 1), else_=0)),
    sa.func.sum(sa.case((runs.c.agent_kind == _p("agent_kind"), 1), else_=0)),
    sa.func.max(sa.case((runs.c.issue_key == _p("issue_key"), runs.c.run_id), else_=None)),
    sa.func.sum(sa.case((runs.c.root_key == _p("root_key"), runs.c.cost_usd), else_=0.0)),
    sa.func.sum(sa.case((runs.c.root_key == _p("root_key"), runs.c.tokens), else_=0)),
    # The unspent part of each allotment (none for a run without one: launched before the ledger kept them).
    sa.func.sum(
        sa.case(
            (
                sa.and_(runs.c.root_key == _p("root_key"), runs.c.max_cost_usd > runs.c.cost_usd),
                runs.c.max_cost_usd - runs.c.cost_usd,
            ),
            else_=0.0,
        )
    ),
    sa.func.sum(
        sa.case(
            (
                sa.and_(runs.c.root_key == _p("root_key"), runs.c.max_tokens > runs.c.tokens),
                runs.c.max_tokens - runs.c.tokens,
            ),
            else_=0,
        )
    ),
).where(_ACTIVE)


def _read_facts(connection: Connection, scope: FactsScope) -> LedgerFacts:
    active = _active_counts(
        connection, issue_key=scope.issue_key, repo=scope.repo, root_key=scope.root_key, agent_kind=scope.agent_kind
    )
    params = {
        "issue_key": scope.issue_key,
        "root_key": scope.root_key,
        "repo": scope.repo,
        "today": scope.today,
        "shown_run": scope.shown_run or "",
    }
    totals = connection.execute(_TOTALS, params).one()
    issue_runs, failures, managed_at, tree_runs, tree_cost, tree_tokens, authorised_by, killed, today, paused = totals[
        :10
    ]
    tree_known, shown_run_known = totals[10:]
    return LedgerFacts(
        active_total=active.total,
        active_in_repo=active.in_repo,
        active_in_tree=active.in_tree,
        active_of_kind=active.of_kind,
        active_run_on_issue=active.run_on_issue,
        runs_on_issue=int(issue_runs or 0),
        runs_in_tree=int(tree_runs or 0),
        consecutive_failures=int(failures or 0),
        # Finished runs' totals plus what the active ones have reported so far.
        tree_cost_usd=float(tree_cost or 0.0) + active.tree_cost_usd,
        tree_tokens=int(tree_tokens or 0) + active.tree_tokens,
        tree_reserved_usd=active.tree_reserved_usd,
        tree_reserved_tokens=active.tree_reserved_tokens,
        repo_cost_today_usd=float(today or 0.0),
        last_manage_started_at=_aware(managed_at),
        tree_authorised_by=authorised_by,
        paused=bool(paused),
        tree_killed=bool(killed),
        tree_known=bool(tree_known),
        shown_run_known=bool(shown_run_known),
    )


def _tree_totals(connection: Connection, root_key: str) -> TreeTotals | None:
    tree = connection.execute(sa.select(trees).where(trees.c.root_key == root_key)).first()
    if tree is None:
        return None
    active = connection.execute(
        sa.select(sa.func.count(), sa.func.sum(runs.c.cost_usd), sa.func.sum(runs.c.tokens)).where(
            runs.c.root_key == root_key, _ACTIVE
        )
    ).one()
    return TreeTotals(
        root_key=root_key,
        authorised_by=tree.authorised_by,
        runs=tree.runs,
        active_runs=active[0],
        cost_usd=tree.cost_usd + float(active[1] or 0.0),
        tokens=tree.tokens + int(active[2] or 0),
        killed=bool(tree.killed),
    )


def _adopt(connection: Connection, scope: FactsScope, adoption: Adoption) -> None:
    """Raise the ledger's figures to what GitHub shows, and take on the run GitHub shows in flight.

    Raised, never added to: decisions that read the ledger before either adopted (concurrent ones on PostgreSQL,
    which read without a lock) adopt the same figures, and the second finds them there already.
    """
    tree, issue = trees.c.root_key == scope.root_key, issues.c.issue_key == scope.issue_key
    tree_figures = (adoption.tree_runs_at_least, adoption.tree_cost_usd_at_least, adoption.tree_tokens_at_least)
    if adoption.tree_killed or any(tree_figures):
        upsert(connection, trees, {"root_key": scope.root_key}, set_={"killed": True} if adoption.tree_killed else {})
    if adoption.tree_runs_at_least:
        _raise(connection, trees, tree, trees.c.runs, sa.literal(adoption.tree_runs_at_least, sa.Integer))
    # GitHub's spend includes what the tree's runs in flight had reported, which the ledger keeps on those runs
    # until they end (and then adds to the tree's row): the row is raised to GitHub's spend less theirs.
    if adoption.tree_cost_usd_at_least:
        spent = sa.literal(adoption.tree_cost_usd_at_least, sa.Float) - _in_flight(runs.c.cost_usd, scope.root_key)
        _raise(connection, trees, tree, trees.c.cost_usd, spent)
    if adoption.tree_tokens_at_least:
        used = sa.literal(adoption.tree_tokens_at_least, sa.BigInteger) - _in_flight(runs.c.tokens, scope.root_key)
        _raise(connection, trees, tree, trees.c.tokens, used)
    if adoption.issue_runs_at_least or adoption.issue_failures_at_least:
        upsert(connection, issues, {"issue_key": scope.issue_key})
    if adoption.issue_runs_at_least:
        _raise(connection, issues, issue, issues.c.runs, sa.literal(adoption.issue_runs_at_least, sa.Integer))
    if adoption.issue_failures_at_least:
        failures = sa.literal(adoption.issue_failures_at_least, sa.Integer)
        _raise(connection, issues, issue, issues.c.consecutive_failures, failures)
    run = adoption.run
    if run is not None:
        # Not over a run the ledger knows, nor over another run holding the issue's lease: no conflict target,
        # so the primary key and the partial unique index both make it a no-op.
        taken = connection.execute(
            insert_for_dialect(connection.dialect.name, runs)
            .values(
                run_id=run.run_id,
                issue_key=scope.issue_key,
                repo=scope.repo,
                root_key=scope.root_key,
                mode=run.mode,
                agent_kind=run.agent_kind,
                state="running",
                authorised_by=run.authorised_by,
                created_at=run.last_seen_at,
                started_at=run.last_seen_at,
                last_seen_at=run.last_seen_at,
                cost_usd=0.0,
                tokens=0,
                sub_issues_created=0,
            )
            .on_conflict_do_nothing()
        )
        if taken.rowcount:
            _event(connection, run.run_id, run.last_seen_at, "adopted", "shown running on GitHub, unknown here")


def _raise(
    connection: Connection, table: sa.Table, row: sa.ColumnElement[bool], column: sa.Column[Any], to: Any
) -> None:
    """Raise ``column`` of ``row`` to at least ``to``; one conditional UPDATE, so raising twice changes nothing.

    Of two concurrent raises, the second waits for the first's row lock and then re-checks its condition against
    the row as the first left it (PostgreSQL's read committed; SQLite has one writer).
    """
    connection.execute(table.update().where(row, column < to).values({column.name: to}))


def _in_flight(column: sa.Column[Any], root_key: str) -> Any:
    """What the tree's active runs have reported so far (``column`` of ``runs``: cost or tokens)."""
    spent = sa.select(sa.func.coalesce(sa.func.sum(column), 0)).where(runs.c.root_key == root_key, _ACTIVE)
    return spent.scalar_subquery()


def _record_run(connection: Connection, run: NewRun, *, now: datetime, reset_failures: bool = False) -> None:
    """Take the issue's lease (the partial unique index raises IntegrityError when it is held) and count the run."""
    connection.execute(
        _INSERT_RUN,
        {
            "run_id": run.run_id,
            "issue_key": run.issue_key,
            "repo": run.repo,
            "root_key": run.root_key,
            "mode": run.mode,
            "agent_kind": run.agent_kind,
            "state": "launching",
            "authorised_by": run.authorised_by,
            "trigger_message_id": run.trigger_message_id,
            "attempt": run.attempt,
            "created_at": now,
            "last_seen_at": now,
            "cost_usd": 0.0,
            "tokens": 0,
            "sub_issues_created": 0,
            "max_cost_usd": run.max_cost_usd,
            "max_tokens": run.max_tokens,
        },
    )
    issue_values: dict[str, Any] = {"last_manage_started_at": now} if run.mode == "manage" else {}
    if reset_failures:
        issue_values["consecutive_failures"] = 0
    upsert(connection, issues, {"issue_key": run.issue_key}, add={"runs": 1}, set_=issue_values)
    connection.execute(
        _tree_launched(connection.dialect.name),
        {"root_key": run.root_key, "runs": 1, "authorised_by": run.authorised_by},
    )
    _event(connection, run.run_id, now, "launched", f"{run.mode} by {run.authorised_by}")


_INSERT_RUN = runs.insert()
_INSERT_EVENT = run_events.insert()


@functools.cache
def _tree_launched(dialect: str) -> Any:
    """Count a run in its tree; the first authoriser of a tree stays its authoriser."""
    tree = insert_for_dialect(dialect, trees)
    authoriser = sa.func.coalesce(trees.c.authorised_by, tree.excluded.authorised_by)
    return tree.on_conflict_do_update(
        index_elements=[trees.c.root_key], set_={"runs": trees.c.runs + 1, "authorised_by": authoriser}
    )


def _remember(connection: Connection, issue_key: str, nudge: WaitingNudge) -> None:
    """Keep the newest waiting nudge of the issue (an older one, delivered late, does not replace it)."""
    row = connection.scalar(sa.select(issues.c.pending_since).where(issues.c.issue_key == issue_key))
    if row is None or _aware(row) < nudge.sent_at:  # type: ignore[operator]
        actor = nudge.actor.model_dump_json() if nudge.actor else None
        upsert(
            connection,
            issues,
            {"issue_key": issue_key},
            set_={"pending_since": nudge.sent_at, "pending_actor": actor},
        )


def _record_follow_ups(connection: Connection, run: RunRecord, reason: ExitReason, plan: FollowUps) -> None:
    """Record what follows the run's end, taking the nudges it releases off the waiting list (same transaction)."""
    rows: list[dict[str, Any]] = []
    own = connection.execute(
        sa.select(issues.c.pending_since, issues.c.pending_actor).where(issues.c.issue_key == run.issue_key)
    ).first()
    waited_since = _aware(own.pending_since) if own is not None else None
    # A nudge sent before the run began is the one that started it, or older news: the run saw it.
    news = waited_since is not None and waited_since > run.created_at
    if news or reason is ExitReason.LOST:
        actor = own.pending_actor if news and own is not None else None
        rows.append({"issue_key": run.issue_key, "kind": FollowUpKind.ISSUE.value, "actor": actor})
    if waited_since is not None:
        connection.execute(
            issues.update().where(issues.c.issue_key == run.issue_key).values(pending_since=None, pending_actor=None)
        )
    released = list(
        connection.execute(
            sa.select(issues.c.issue_key, issues.c.pending_actor)
            .where(issues.c.pending_since.is_not(None))
            .order_by(issues.c.pending_since)
            .limit(plan.release_waiting)
        )
    )
    if released:
        connection.execute(
            issues.update()
            .where(issues.c.issue_key.in_([row.issue_key for row in released]))
            .values(pending_since=None, pending_actor=None)
        )
    rows.extend(
        {"issue_key": row.issue_key, "kind": FollowUpKind.RELEASED.value, "actor": row.pending_actor}
        for row in released
    )
    rows.append({"issue_key": run.issue_key, "kind": FollowUpKind.SUCCESSORS.value, "actor": None})
    connection.execute(follow_ups.insert(), [row | {"run_id": run.run_id, "due_at": plan.due_at} for row in rows])


def _follow_up(row: Any) -> FollowUp:
    actor = Actor.model_validate_json(row.actor) if row.actor else None
    return FollowUp(row.id, row.run_id, row.issue_key, FollowUpKind(row.kind), actor)


def _held_by(worker_id: str) -> sa.ColumnElement[bool]:
    return sa.or_(runs.c.worker_id.is_(None), runs.c.worker_id == worker_id)


def _claim(connection: Connection, run_id: str, worker_id: str) -> ClaimResult:
    """Whether ``worker_id`` holds the run, read after a write that was conditional on it."""
    row = connection.execute(
        sa.select(runs.c.state, runs.c.worker_id, runs.c.ended_at).where(runs.c.run_id == run_id)
    ).first()
    if row is None:
        return ClaimResult(Claim.UNKNOWN)
    if row.state not in ACTIVE_STATES:
        return ClaimResult(Claim.ENDED, holder=row.worker_id, ended_at=_aware(row.ended_at))
    if row.worker_id is not None and row.worker_id != worker_id:
        return ClaimResult(Claim.ELSEWHERE, holder=row.worker_id)
    return ClaimResult(Claim.HELD, holder=row.worker_id)


def _is_paused(connection: Connection) -> bool:
    value = connection.scalar(sa.select(settings_table.c.value).where(settings_table.c.name == "paused"))
    return bool(value)


def _over_a_cap(connection: Connection, run: NewRun, limits: LaunchLimits) -> bool:
    active = _active_counts(
        connection, issue_key=run.issue_key, repo=run.repo, root_key=run.root_key, agent_kind=run.agent_kind
    )
    on_issue = connection.scalar(sa.select(issues.c.runs).where(issues.c.issue_key == run.issue_key))
    tree = connection.execute(
        sa.select(trees.c.runs, trees.c.cost_usd, trees.c.tokens).where(trees.c.root_key == run.root_key)
    ).first()
    in_tree_total, finished_usd, finished_tokens = tree if tree is not None else (0, 0.0, 0)
    kind_cap = limits.max_active_runs_of_kind
    return (
        active.total >= limits.max_active_runs
        or active.in_repo >= limits.max_active_runs_per_repo
        or active.in_tree >= limits.max_active_runs_per_tree
        or (kind_cap is not None and active.of_kind >= kind_cap)
        or int(on_issue or 0) >= limits.max_runs_per_issue
        or int(in_tree_total or 0) >= limits.max_runs_per_tree
        or _over_the_tree_budget(
            run.max_cost_usd,
            limits.max_cost_usd_per_tree,
            float(finished_usd or 0.0) + active.tree_cost_usd + active.tree_reserved_usd,
            tolerance=_COST_TOLERANCE_USD,
        )
        or _over_the_tree_budget(
            run.max_tokens,
            limits.max_tokens_per_tree,
            int(finished_tokens or 0) + active.tree_tokens + active.tree_reserved_tokens,
        )
    )


# The decision computes an allotment as the cap less the spent and allotted figures; summed again here, in another
# order, they may differ in the last bits of a float.
_COST_TOLERANCE_USD = 1e-6


def _over_the_tree_budget(
    allotment: float | None, cap: float | None, committed: float, *, tolerance: float = 0
) -> bool:
    """Whether a run allotted ``allotment`` takes its tree past ``cap``, ``committed`` (spent or allotted) already."""
    if allotment is None or cap is None:
        return False
    return committed + allotment > cap + tolerance


def _event(connection: Connection, run_id: str, at: datetime, kind: str, detail: str) -> None:
    connection.execute(_INSERT_EVENT, {"run_id": run_id, "at": at, "kind": kind, "detail": detail})


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything the ledger stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _record(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        issue_key=row.issue_key,
        repo=row.repo,
        root_key=row.root_key,
        mode=row.mode,
        agent_kind=row.agent_kind,
        state=row.state,
        authorised_by=row.authorised_by,
        created_at=_aware(row.created_at) or row.created_at,
        last_seen_at=_aware(row.last_seen_at) or row.last_seen_at,
        ended_at=_aware(row.ended_at),
        exit_reason=row.exit_reason,
        cost_usd=row.cost_usd,
        tokens=row.tokens,
        sub_issues_created=row.sub_issues_created,
        log_url=row.log_url,
        max_cost_usd=row.max_cost_usd,
        max_tokens=row.max_tokens,
    )
