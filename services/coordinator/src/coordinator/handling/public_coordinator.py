"""The coordinator's message handling: nudges become decisions, lifecycle events move runs along.

Thin adapters around the pure decision: read the issue (tracker), then one ledger transaction reads the
counts, decides, takes the lease and records the GitHub writes that report the decision (the outbox); then
the launch is published. A redelivered nudge finds the lease taken; a crash before the publish leaves a run
``launching`` that the sweep declares lost, releasing the lease. GitHub writes (status comment, assignee,
labels, the roll-up) are never made on the handler's path: the outbox's writer makes them at GitHub's pace,
and a restart loses none. GitHub shows state, the ledger owns it.

Runs are stopped with ``CancelRun`` to the worker that holds them: when the kill switch is turned on for
their tree, and when a worker reports a run the ledger does not hold on it (unknown, already ended, or held
by another worker), so one run id never has two processes and a run the ledger ended never keeps running.
"""

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import Actor, IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunLimits
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted, ExitReason
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_runtime.public_sqs import MessageContext, Publisher, PublishError, RetryLater
from agent_grid_tracker.public_tracker import (
    IssueNotFound,
    IssueState,
    IssueView,
    RateLimited,
    Tracker,
    TrackerError,
    TrackerUnavailable,
)

from coordinator.decisions.public_decide import decide_launch
from coordinator.decisions.public_facts import AuthoriserCandidate, IssueFacts, LedgerFacts, Trigger
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.decisions.public_rebuild import Adoption, GitHubRecord, IssueRecord, TreeRecord, rebuild
from coordinator.decisions.public_verdicts import Ignore, Launch, Refuse, Verdict, Wait, WaitReason
from coordinator.handling import status
from coordinator.handling.facts import github_record, issue_facts, opt_in_labeller
from coordinator.handling.public_cancelling import RunCanceller
from coordinator.handling.public_records import RecordKey, issue_record
from coordinator.handling.writes import AssigneeWish, LabelWish, RollUpWish, StatusWish, entry, ref_of_key
from coordinator.ledger.public_ledger import (
    Changes,
    Claim,
    ClaimResult,
    Decided,
    FactsScope,
    FinishedRun,
    FollowUpKind,
    FollowUps,
    LaunchLimits,
    Ledger,
    NewRun,
    StartOutcome,
    WaitingNudge,
)
from coordinator.ledger.public_outbox import OutboxEntry
from coordinator.metrics.public_metrics import BUDGET_EXHAUSTED, CIRCUIT_BREAKER, CoordinatorCounters

__all__ = ["Coordinator", "LaunchPublisher"]

_log = structlog.get_logger(__name__)
_MAX_SQS_DELAY_S = 900
# Waiting issues re-decided when a run ends: a few, so that a burst of waiters does not become a burst of nudges.
_RELEASED_PER_EXIT = 3
# A run's follow-ups are made right after its end; those still not made this long after (a publish failed and no
# repeated exit came, the coordinator stopped mid-way) are made by the sweep, on whichever coordinator runs it.
_FOLLOW_UP_TAKEOVER = timedelta(minutes=2)
# Runs whose follow-ups one sweep makes, at most.
_FOLLOW_UPS_PER_SWEEP = 20
# Waits that end when something else happens (a run ends, a slot or its tree's budget frees): re-decide the issue then.
_REMEMBERED = frozenset(
    {WaitReason.RUN_IN_FLIGHT, WaitReason.CONCURRENCY, WaitReason.TREE_BUDGET_ALLOTTED, WaitReason.PAUSED}
)
# The reasons a CancelRun carries (the worker logs them).
_TREE_KILLED = "tree killed by the kill switch"
_ISSUE_KILLED = "the issue carries the kill label"


class LaunchPublisher(Protocol):
    """Where launch commands go: a :class:`Publisher`, or a ``CoalescingPublisher`` sharing batches."""

    async def publish(self, envelope: Envelope[Any]) -> None:
        """Return once the broker has the command; raise ``PublishError`` otherwise."""
        ...


@dataclass
class Coordinator:
    """Decides on nudges and records lifecycle events. One instance per process; stateless between messages.

    ``wake_writer`` is told whenever GitHub writes were added to the outbox (the writer's ``wake``); ``records``
    signs the records its status comments end with, and only records it signed are read back.
    """

    tracker: Tracker
    ledger: Ledger
    launches: LaunchPublisher
    nudges: Publisher
    policy: Policy
    cancels: RunCanceller
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    wake_writer: Callable[[], None] = field(default=lambda: None)
    counters: CoordinatorCounters = field(default_factory=CoordinatorCounters)
    records: RecordKey = field(default_factory=RecordKey.ephemeral)

    async def on_nudge(self, envelope: Envelope[Nudge], context: MessageContext) -> None:
        """Decide whether the nudged issue gets a run now, and act on the verdict."""
        await self._handle_nudge(envelope, receive_count=context.receive_count)

    async def _handle_nudge(self, envelope: Envelope[Nudge], *, receive_count: int) -> None:
        nudge = envelope.body
        try:
            view, ancestors = await self._read_tree(nudge.issue)
        except IssueNotFound:
            _log.info("nudge_dropped", issue=nudge.issue.key, reason="the issue does not exist or is hidden")
            return
        facts = issue_facts(view, ancestors)
        root = ancestors[-1] if ancestors else view
        record = github_record(view, root, bot_login=self.policy.bot_login, key=self.records)
        now = self.clock()
        trigger = Trigger(nudge.reason, nudge.actor, label=nudge.label)
        decided = await self._decide(facts, record, trigger, envelope, now)
        if isinstance(decided.verdict, Ignore) and decided.verdict.needs_authoriser:
            # An agent-grid trigger (a poll, say) in an opted-in tree the ledger has no authoriser for: who on
            # GitHub vouched for it, if anyone the policy trusts, authorises it.
            candidates = await self._authoriser_candidates(facts)
            facts = replace(facts, authoriser_candidates=candidates)
            decided = await self._decide(facts, record, trigger, envelope, now)
        verdict = decided.verdict
        # The decision refuses new launches under the kill switch; what already runs there is stopped here.
        await self._stop_killed(facts, decided.facts, envelope)
        _log.info(
            "nudge_decided",
            issue=facts.ref.key,
            reason=nudge.reason.value,
            verdict=type(verdict).__name__.lower(),
            detail=_detail(verdict),
            receive_count=receive_count,
        )
        self.counters.decided(verdict)
        await self._act(decided, envelope, facts.ref, facts.root, now)

    async def on_started(self, envelope: Envelope[AgentStarted], _context: MessageContext) -> None:
        """The grid started the run; a start the ledger does not record, or a run that must stop, is cancelled."""
        event = envelope.body
        claim = await self.ledger.mark_started(
            event.run_id, worker_id=event.worker_id, at=event.started_at, log_url=event.log_url
        )
        reason: str | None
        if not claim.held:
            _log.info("start_refused", run_id=event.run_id, worker_id=event.worker_id, claim=claim.claim.value)
            reason = _not_held(claim)
        else:
            # The run stays active until the worker's AgentExited(cancelled) ends it, as any run does.
            reason = claim.cancel_requested or (_TREE_KILLED if claim.tree_killed else None)
        if reason is not None:
            await self.cancels.cancel(event.run_id, event.worker_id, reason=reason, cause=envelope)

    async def on_heartbeat(self, envelope: Envelope[AgentHeartbeat], _context: MessageContext) -> None:
        """The run is alive; record what it has spent. A process the ledger no longer holds is told to stop."""
        event = envelope.body
        claim = await self.ledger.heartbeat(
            event.run_id,
            worker_id=event.worker_id,
            at=self.clock(),
            cost_usd=event.usage.cost_usd,
            tokens=event.usage.total_tokens,
        )
        # A heartbeat sent before its run ended is only late (it was overtaken by the exit); one sent after
        # the ledger ended the run comes from a process still running, e.g. a worker back from a partition
        # whose run was declared lost meanwhile.
        stale = claim.claim is Claim.ENDED and claim.ended_at is not None and envelope.occurred_at <= claim.ended_at
        if not claim.held and not stale:
            await self.cancels.cancel(event.run_id, event.worker_id, reason=_not_held(claim), cause=envelope)

    async def on_exited(self, envelope: Envelope[AgentExited], _context: MessageContext) -> None:
        """The run ended: record it once, tell the issue, and nudge what comes next."""
        event = envelope.body
        # Only the worker holding the run ends it. Another worker's exit is that of a duplicate process (the
        # one its start was refused for): the holder's process still runs and reports its own exit, or, if
        # it died, falls silent for the lost-run sweep. Ending the run on the duplicate's word would free
        # the issue's lease while the holder runs, and let a second run start on the issue.
        ended = await self._end_run(
            event.run_id,
            event.reason,
            cost_usd=event.usage.cost_usd,
            tokens=event.usage.total_tokens,
            summary=event.summary,
            worker_id=event.worker_id,
        )
        if ended:
            return
        # A repeated exit, most likely redelivered because its handler failed or stopped after the run's end was
        # recorded: the follow-ups not made then are made now (made twice is harmless, never made is lost work).
        if await self._follow_up(event.run_id):
            _log.info("follow_up_resumed", run_id=event.run_id, worker_id=event.worker_id)
        else:
            _log.info("exit_ignored", run_id=event.run_id, worker_id=event.worker_id, reason=event.reason.value)

    async def cancel_tree(self, root_key: str, *, reason: str = _TREE_KILLED) -> int:
        """Stop every active run of the tree (its kill switch was just turned on); returns the commands sent.

        A run still launching has no worker to tell yet: the ledger notes the request, and the run's
        ``AgentStarted`` is answered with the cancel.
        """
        return await self._cancel_runs(root_key=root_key, reason=reason)

    async def sweep_lost_runs(self, *, silent_for: timedelta) -> int:
        """Declare runs not heard from for ``silent_for`` lost, releasing their leases; returns how many."""
        lost = await self.ledger.silent_runs(seen_before=self.clock() - silent_for)
        declared = 0
        for run in lost:
            _log.warning("run_lost", run_id=run.run_id, issue=run.issue_key, last_seen_at=run.last_seen_at.isoformat())
            ended = await self._end_run(
                run.run_id, ExitReason.LOST, cost_usd=run.cost_usd, tokens=run.tokens, summary=""
            )
            declared += ended  # not when another coordinator ended it meanwhile
        self.counters.declared_lost(declared)
        return len(lost)

    async def sweep_follow_ups(self) -> int:
        """Make the follow-ups of run ends not made in time (a publish failed, a coordinator stopped); returns the runs.

        A run's follow-ups are taken by one sweep at a time (and again later if making them fails here).
        """
        now = self.clock()
        due = await self.ledger.due_follow_ups(now=now, until=now + _FOLLOW_UP_TAKEOVER, limit=_FOLLOW_UPS_PER_SWEEP)
        for run_id in due:
            try:
                await self._follow_up(run_id)
            except Exception as error:  # the broker or the ledger is away: the follow-ups stay, for a later sweep
                _log.warning("follow_up_failed", run_id=run_id, error=f"{type(error).__name__}: {error}")
        return len(due)

    async def sweep_management(self) -> int:
        """Nudge every parent whose management is due (the decision still enforces the minimum interval)."""
        interval = timedelta(seconds=self.policy.management.resume_interval_s)
        due = await self.ledger.due_for_management(last_before=self.clock() - interval)
        for key in due:
            await self._nudge(ref_of_key(key), NudgeReason.MANAGEMENT_DUE, "periodic resumption")
        return len(due)

    async def _stop_killed(self, facts: IssueFacts, ledger_facts: LedgerFacts, envelope: Envelope[Nudge]) -> None:
        """The kill switch on the tree (its root's label, or the API) stops the tree's runs; on an issue, its run."""
        kill_label = self.policy.kill_label
        if ledger_facts.tree_killed or kill_label in facts.root_labels:
            if ledger_facts.active_in_tree:
                await self._cancel_runs(root_key=facts.root.key, reason=_TREE_KILLED, cause=envelope)
        elif kill_label in facts.labels and ledger_facts.active_run_on_issue is not None:
            await self._cancel_runs(
                root_key=facts.root.key, issue_key=facts.ref.key, reason=_ISSUE_KILLED, cause=envelope
            )

    async def _cancel_runs(
        self, *, root_key: str, issue_key: str | None = None, reason: str, cause: Envelope[Nudge] | None = None
    ) -> int:
        active = await self.ledger.request_cancels(
            root_key=root_key, issue_key=issue_key, reason=reason, at=self.clock()
        )
        sent = 0
        for run in active:
            if run.worker_id is not None:  # a launching run is cancelled when its AgentStarted arrives
                sent += await self.cancels.cancel(run.run_id, run.worker_id, reason=reason, cause=cause)
        _log.info("runs_cancelled", root=root_key, issue=issue_key, active=len(active), sent=sent, reason=reason)
        return sent

    async def _read_tree(self, ref: IssueRef) -> tuple[IssueView, list[IssueView]]:
        try:
            view = await self.tracker.view(ref)
            ancestors: list[IssueView] = []
            parent = view.parent
            while parent is not None and len(ancestors) <= self.policy.caps.max_tree_depth:
                above = await self.tracker.view(parent.ref, comments=1)
                ancestors.append(above)
                parent = above.parent
        except RateLimited as error:
            raise RetryLater(int(min(error.retry_after_s, 900)) + 1, f"tracker rate limited: {error}") from error
        except TrackerUnavailable as error:
            raise RetryLater(30, f"tracker unavailable: {error}") from error
        return view, ancestors

    async def _decide(
        self, facts: IssueFacts, record: GitHubRecord, trigger: Trigger, envelope: Envelope[Nudge], now: datetime
    ) -> Decided[Verdict]:
        """One ledger transaction: the counts read, the pure decision, the lease, the outbox's GitHub writes.

        The counts are raised to what GitHub records where it says more (a ledger rebuilt from GitHub).
        """
        scope = FactsScope(
            issue_key=facts.ref.key,
            repo=facts.ref.repo,
            root_key=facts.root.key,
            agent_kind=self.policy.agent_kind,
            today=now.date(),
            shown_run=record.issue.running_run if record.issue else None,
        )

        adopted: list[Adoption] = []

        def plan(ledger_facts: LedgerFacts) -> tuple[Verdict, Changes]:
            seen, adoption = rebuild(ledger_facts, record, agent_kind=self.policy.agent_kind)
            adopted[:] = [adoption] if adoption is not None else []
            verdict = decide_launch(facts, seen, trigger, self.policy, now)
            return verdict, replace(self._changes(verdict, facts, seen, envelope, now), adopt=adoption)

        decided = await self.ledger.decide(scope, plan, now=now, limits=self._limits())
        if adopted and decided.started in (None, StartOutcome.STARTED):
            _log.warning("ledger_adopted_from_github", issue=facts.ref.key, root=facts.root.key, **asdict(adopted[0]))
        return decided

    async def _authoriser_candidates(self, facts: IssueFacts) -> tuple[AuthoriserCandidate, ...]:
        """Who GitHub shows vouched for the tree, with their role on the repository: whoever applied the opt-in label.

        To the issue, else to the root, as the issue's events (GitHub's own account of who did it) say. Never a
        name taken from text on GitHub, not even agent-grid's own records: anyone who may edit a description can
        type one.
        """
        label = self.policy.opt_in.label
        vouching: dict[str, str] = {}
        labelled = facts.ref if label in facts.labels else facts.root if label in facts.root_labels else None
        try:
            if labelled is not None:
                events = await self.tracker.label_events(labelled)
                labeller = opt_in_labeller(events, label, bot_login=self.policy.bot_login)
                if labeller is not None:
                    vouching[labeller] = f"applied the {label!r} label to {labelled}"
            candidates: list[AuthoriserCandidate] = []
            for login, source in vouching.items():
                permission = await self.tracker.permission(facts.ref.repo, login)
                candidates.append(AuthoriserCandidate(login, permission.value, source))
        except RateLimited as error:
            raise RetryLater(int(min(error.retry_after_s, 900)) + 1, f"tracker rate limited: {error}") from error
        except TrackerUnavailable as error:
            raise RetryLater(30, f"tracker unavailable: {error}") from error
        except IssueNotFound:
            return ()
        for candidate in candidates:
            _log.info(
                "authoriser_candidate",
                issue=facts.ref.key,
                login=candidate.login,
                permission=candidate.permission,
                source=candidate.source,
            )
        return tuple(candidates)

    def _changes(
        self, verdict: Verdict, facts: IssueFacts, seen: LedgerFacts, envelope: Envelope[Nudge], now: datetime
    ) -> Changes:
        """What the verdict changes in the ledger, and the GitHub writes that say so (pure)."""
        ref = facts.ref
        waiting = WaitingNudge(sent_at=envelope.occurred_at, actor=envelope.body.actor)
        standing = _issue_record(seen)
        match verdict:
            case Launch():
                run = NewRun(
                    run_id=f"run-{uuid.uuid4().hex[:20]}",
                    issue_key=ref.key,
                    repo=ref.repo,
                    root_key=facts.root.key,
                    mode=verdict.mode.value,
                    agent_kind=verdict.agent_kind,
                    authorised_by=verdict.authorised_by,
                    trigger_message_id=str(envelope.message_id),
                    max_cost_usd=verdict.max_cost_usd,
                    max_tokens=verdict.max_tokens,
                )
                record = replace(
                    standing,
                    runs=seen.runs_on_issue + 1,
                    consecutive_failures=0 if verdict.resets_failures else seen.consecutive_failures,
                    tree=replace(
                        standing.tree,
                        runs=seen.runs_in_tree + 1,
                        authorised_by=seen.tree_authorised_by or verdict.authorised_by,
                    ),
                    running_run=run.run_id,
                    mode=run.mode,
                    agent_kind=run.agent_kind,
                    authorised_by=verdict.authorised_by,
                )
                text = status.launched(verdict, run.run_id, now, record=self._sealed(ref, record))
                launched = (
                    entry(ref, StatusWish(body=text)),
                    entry(ref, AssigneeWish(login=self.policy.bot_login, assigned=True)),
                )
                return Changes(run=run, reset_failures=verdict.resets_failures, writes=launched)
            case Wait():
                remember = waiting if verdict.reason in _REMEMBERED else None
                if verdict.reason is WaitReason.RUN_IN_FLIGHT:
                    return Changes(remember=remember)  # the run's own status stands
                text = status.waiting(verdict, now, record=self._sealed(ref, standing))
                return Changes(remember=remember, writes=(entry(ref, StatusWish(body=text)),))
            case Refuse():
                label = self.policy.needs_human_label
                text = status.refused(verdict, now, needs_human_label=label, record=self._sealed(ref, standing))
                escalation = (entry(ref, LabelWish(name=label, present=True)),) if verdict.escalate else ()
                return Changes(writes=(*escalation, entry(ref, StatusWish(body=text))))
            case Ignore():
                return Changes(stop_managing=not facts.open)

    def _sealed(self, ref: IssueRef, record: IssueRecord) -> str:
        """The issue's record for its status comment, signed for that issue."""
        return issue_record(record, issue_key=ref.key, key=self.records)

    async def _act(
        self, decided: Decided[Verdict], envelope: Envelope[Nudge], ref: IssueRef, root: IssueRef, now: datetime
    ) -> None:
        verdict = decided.verdict
        if isinstance(verdict, Launch):
            await self._launch(decided, verdict, envelope, ref, root, now)
        elif isinstance(verdict, Wait) and verdict.reason is WaitReason.RESUMED_RECENTLY and verdict.not_before:
            delay = int((verdict.not_before - now).total_seconds()) + 1
            await self._nudge(ref, NudgeReason.MANAGEMENT_DUE, "resume when allowed", delay_s=delay)
        self.wake_writer()

    async def _launch(
        self,
        decided: Decided[Verdict],
        verdict: Launch,
        envelope: Envelope[Nudge],
        ref: IssueRef,
        root: IssueRef,
        now: datetime,
    ) -> None:
        if decided.started is not StartOutcome.STARTED:
            # Another launch took the issue's lease or the last slot since the decision read the counts
            # (PostgreSQL; on SQLite the decision's transaction held the write lock). Nothing was recorded.
            await self.ledger.remember_nudge(ref.key, sent_at=envelope.occurred_at, actor=envelope.body.actor)
            _log.info("launch_lost_race", issue=ref.key, outcome=str(decided.started))
            return
        run = decided.run
        assert run is not None  # a started launch recorded its run
        launch = LaunchAgent(
            run_id=run.run_id,
            issue=ref,
            root_issue=root,
            mode=verdict.mode,
            agent_kind=verdict.agent_kind,
            limits=RunLimits(max_cost_usd=verdict.max_cost_usd, max_tokens=verdict.max_tokens),
            prompt_inputs={"authorised_by": verdict.authorised_by},
        )
        try:
            await self.launches.publish(wrap(launch, producer="coordinator", cause=envelope))
        except PublishError as error:
            # The nudge comes back and is decided afresh; the run that never left ends here, and its status
            # and the bot's assignment are wished away again (newer wishes replace the launch's).
            await self.ledger.finish(
                run.run_id,
                reason=ExitReason.LAUNCH_FAILED,
                at=now,
                cost_usd=0,
                tokens=0,
                writes=lambda finished: self._exit_writes(finished, ExitReason.LAUNCH_FAILED, now, ""),
            )
            raise RetryLater(10, f"launch not published: {error}") from error
        _log.info("run_launched", run_id=run.run_id, issue=ref.key, mode=verdict.mode.value)

    def _limits(self) -> LaunchLimits:
        caps = self.policy.caps
        return LaunchLimits(
            max_active_runs=caps.max_active_runs,
            max_active_runs_per_repo=caps.max_active_runs_per_repo,
            max_active_runs_per_tree=caps.max_active_runs_per_tree,
            max_active_runs_of_kind=caps.max_active_runs_per_agent_kind.get(self.policy.agent_kind),
            max_runs_per_issue=caps.max_runs_per_issue,
            max_runs_per_tree=caps.max_runs_per_tree,
            max_cost_usd_per_tree=caps.max_cost_usd_per_tree,
            max_tokens_per_tree=caps.max_tokens_per_tree,
        )

    async def _end_run(
        self,
        run_id: str,
        reason: ExitReason,
        *,
        cost_usd: float,
        tokens: int,
        summary: str,
        worker_id: str | None = None,
    ) -> bool:
        now = self.clock()
        ended = await self.ledger.finish(
            run_id,
            reason=reason,
            at=now,
            cost_usd=cost_usd,
            tokens=tokens,
            summary=summary,
            worker_id=worker_id,
            writes=lambda finished: self._exit_writes(finished, reason, now, summary),
            # Recorded with the end, made below: a failure or a stop in between leaves them to be made again.
            follow_ups=FollowUps(due_at=now + _FOLLOW_UP_TAKEOVER, release_waiting=_RELEASED_PER_EXIT),
        )
        if ended is None:
            return False  # already ended (a repeated or late exit changes nothing), or not this worker's run
        self.counters.run_ended(reason, escalated_for=_escalation(ended, reason, self.policy.caps))
        self.wake_writer()
        run = ended.run
        _log.info("run_ended", run_id=run_id, issue=run.issue_key, reason=reason.value, cost_usd=run.cost_usd)
        await self._follow_up(run_id)
        return True

    def _exit_writes(self, ended: FinishedRun, reason: ExitReason, now: datetime, summary: str) -> list[OutboxEntry]:
        """The GitHub writes that report a run's end: its status, the bot unassigned, escalation, the roll-up."""
        run = ended.run
        ref, root = ref_of_key(run.issue_key), ref_of_key(run.root_key)
        escalate = _escalation(ended, reason, self.policy.caps) is not None
        label = self.policy.needs_human_label if escalate else None
        tree = ended.tree
        record = IssueRecord(
            runs=ended.issue_runs,
            consecutive_failures=ended.consecutive_failures,
            tree=TreeRecord(
                runs=tree.runs if tree else 0,
                cost_usd=tree.cost_usd if tree else 0.0,
                tokens=tree.tokens if tree else 0,
                authorised_by=tree.authorised_by if tree else run.authorised_by,
                killed=tree.killed if tree else False,
            ),
            authorised_by=run.authorised_by,
        )
        sealed = self._sealed(ref, record)
        text = status.finished(
            run.run_id, reason.value, run.cost_usd, run.tokens, now, summary, escalated_to=label, record=sealed
        )
        found = [
            entry(ref, StatusWish(body=text)),
            entry(ref, AssigneeWish(login=self.policy.bot_login, assigned=False)),
            entry(root, RollUpWish()),
        ]
        if label is not None:
            found.append(entry(ref, LabelWish(name=label, present=True)))
        return found

    async def _follow_up(self, run_id: str) -> bool:
        """Make the follow-ups of the run's end not made yet; False when there are none (made, or never recorded).

        The issue itself if news waited for it (or its run was lost), the nudges that waited longest for a slot
        elsewhere (on behalf of whoever sent them), then its next sibling and its parent. The sibling and the parent
        come first: they are decided here and now, so they take the run slot that just freed before the nudges
        queued or released meanwhile; the others are queued. Each follow-up is forgotten only once it is made, so a
        failure or a stop on the way leaves it to be made again (by a repeated exit, or the sweep).
        """
        pending = await self.ledger.follow_ups(run_id)
        if not pending:
            return False
        nudges: list[Nudge] = []
        made: list[int] = []
        for follow_up in pending:
            ref = ref_of_key(follow_up.issue_key)
            match follow_up.kind:
                case FollowUpKind.ISSUE:
                    detail = "re-decide after the run ended"
                    nudges.append(_nudge_of(ref, NudgeReason.RUN_FINISHED, detail, actor=follow_up.actor))
                case FollowUpKind.RELEASED:
                    detail = "a run slot was freed"
                    nudges.append(_nudge_of(ref, NudgeReason.RUN_FINISHED, detail, actor=follow_up.actor))
                case FollowUpKind.SUCCESSORS:
                    successors = await self._successors(ref)
                    if successors is None:
                        continue  # the tracker is away: kept, for the sweep to find them later
                    for successor in successors:
                        if not await self._decide_first(successor):
                            nudges.append(successor)
            made.append(follow_up.id)
        if nudges:
            await self.nudges.publish_many([wrap(nudge, producer="coordinator") for nudge in nudges])
        await self.ledger.forget_follow_ups(made)
        return True

    async def _successors(self, ref: IssueRef) -> list[Nudge] | None:
        """Nudges for the issue's next open sibling and its parent; None when the tracker could not be read."""
        try:
            view = await self.tracker.view(ref, comments=1)
            parent = await self.tracker.view(view.parent.ref, comments=1) if view.parent else None
        except IssueNotFound:
            return []  # deleted or hidden since: no successors to look for
        except TrackerError as error:
            _log.warning("follow_up_unavailable", issue=ref.key, error=str(error))
            return None
        if parent is None:
            return []
        successors: list[Nudge] = []
        siblings = [
            child for child in parent.children if child.state is IssueState.OPEN and child.ref != view.issue.ref
        ]
        if siblings:
            successors.append(_nudge_of(siblings[0].ref, NudgeReason.NEXT_SIBLING, f"{ref} finished"))
        successors.append(_nudge_of(parent.issue.ref, NudgeReason.RUN_FINISHED, f"child {ref} finished"))
        return successors

    async def _decide_first(self, nudge: Nudge) -> bool:
        """Decide ``nudge`` now, ahead of the queue; False when that failed and it must be queued instead."""
        try:
            await self._handle_nudge(wrap(nudge, producer="coordinator"), receive_count=0)
        except Exception as error:  # the exit is recorded already: the follow-up must not be lost with it
            _log.warning("follow_up_queued", issue=nudge.issue.key, error=f"{type(error).__name__}: {error}")
            return False
        return True

    async def _nudge(
        self, ref: IssueRef, reason: NudgeReason, detail: str, *, delay_s: int = 0, actor: Actor | None = None
    ) -> None:
        nudge = _nudge_of(ref, reason, detail, actor=actor)
        await self.nudges.publish(wrap(nudge, producer="coordinator"), delay_s=min(max(delay_s, 0), _MAX_SQS_DELAY_S))


def _issue_record(facts: LedgerFacts) -> IssueRecord:
    """The issue and its tree as the decision saw them, for the status comment's record."""
    tree = TreeRecord(
        runs=facts.runs_in_tree,
        cost_usd=facts.tree_cost_usd,
        tokens=facts.tree_tokens,
        authorised_by=facts.tree_authorised_by,
        killed=facts.tree_killed,
    )
    return IssueRecord(runs=facts.runs_on_issue, consecutive_failures=facts.consecutive_failures, tree=tree)


def _nudge_of(ref: IssueRef, reason: NudgeReason, detail: str, *, actor: Actor | None = None) -> Nudge:
    return Nudge(issue=ref, reason=reason, source=NudgeSource.COORDINATOR, detail=detail, actor=actor)


def _escalation(ended: FinishedRun, reason: ExitReason, caps: Caps) -> str | None:
    """Why a run's end hands its issue to a human, if it does."""
    # A run stopped at its budget would spend as much again on a retry: a person decides (raise the budget,
    # rescope the issue) before anything else runs on it. So does a tripped circuit breaker.
    if reason is ExitReason.BUDGET_EXHAUSTED:
        return BUDGET_EXHAUSTED
    if ended.consecutive_failures >= caps.max_consecutive_failures:
        return CIRCUIT_BREAKER
    return None


def _not_held(claim: ClaimResult) -> str:
    """Why a worker must stop a run the ledger does not hold on it (the reason its CancelRun carries)."""
    match claim.claim:
        case Claim.ENDED:
            return "the run already ended in the ledger (it exited, or was declared lost)"
        case Claim.ELSEWHERE:
            return f"the run is held by worker {claim.holder}: one run id, one process"
        case _:
            return "the coordinator has no such run"


def _detail(verdict: Verdict) -> str:
    match verdict:
        case Launch():
            return f"{verdict.mode.value} for {verdict.authorised_by}"
        case Wait():
            return verdict.detail
        case Refuse():
            return f"{verdict.cap}: {verdict.detail}"
        case Ignore():
            return verdict.reason
