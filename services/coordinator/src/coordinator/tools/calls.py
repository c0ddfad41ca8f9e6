"""What each tool does, once the run is known: scope, caps, then the tracker, the ledger and the queue.

What an agent writes goes out through agent-grid's own account, so it is made inert first (``public_records.inert``):
a comment, a workpad, a sub-issue's body or a finishing note can never pass for agent-grid's status comment, its
markers or its records.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, ActorKind, IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_contracts.public_tools import (
    CommentRequest,
    CommentResult,
    FinishOutcome,
    FinishRequest,
    FinishResult,
    IssueDetail,
    NudgeRequest,
    NudgeResult,
    SubIssuesRequest,
    SubIssuesResult,
    WorkpadRequest,
    WorkpadResult,
)
from agent_grid_runtime.public_sqs import Publisher, PublishError
from agent_grid_tracker.public_tracker import CloseReason, Issue, NewIssue, Tracker, TrackerError

from coordinator.decisions.public_policy import Policy
from coordinator.handling.public_records import inert
from coordinator.ledger.public_ledger import Ledger
from coordinator.tools.fan_out import FanOut, blocked_by_problem, fan_out_refusal
from coordinator.tools.refusals import cap_reached, invalid, run_over, tracker_refusal
from coordinator.tools.scope import Located, RunScope, count_tree, locate, parse_issue, same_issue
from coordinator.tools.views import issue_card, issue_detail, sticky_comment

_log = structlog.get_logger(__name__)

# The agents' one progress comment per issue; the coordinator's own status comment is "status".
WORKPAD_KEY = "workpad"
# Comments `show` returns, and how far back `workpad` looks for the current workpad (the tracker's page).
_SHOW_COMMENTS = 20
_WORKPAD_LOOKBACK = 100
_PRODUCER = "coordinator"


@dataclass
class AgentTools:
    """The tools of any run; every method takes the run's scope, established from its token."""

    ledger: Ledger
    tracker: Tracker
    nudges: Publisher
    policy: Policy
    clock: Callable[[], datetime]

    async def show(self, scope: RunScope, issue: str | None) -> IssueDetail:
        located = await self._locate(scope, parse_issue(issue, scope), comments=_SHOW_COMMENTS)
        return issue_detail(located.view, self.policy)

    async def create_sub_issues(self, scope: RunScope, request: SubIssuesRequest) -> SubIssuesResult:
        problem = blocked_by_problem(request.issues)
        if problem is not None:
            raise invalid(problem)
        parent = await self._locate(scope, parse_issue(request.parent, scope), comments=0)
        fan_out = await self._check_caps(scope, parent, len(request.issues))
        await self._reserve(scope, fan_out)
        created = await self._create(scope, parent.view.issue.ref, request)
        refs = ", ".join(str(issue.ref) for issue in created)
        await self.ledger.record_event(scope.run_id, "sub_issues_created", refs, at=self.clock())
        _log.info("sub_issues_created", run_id=scope.run_id, parent=str(parent.view.issue.ref), created=refs)
        # The first one needs no other to finish: it can start now rather than wait for the parent's next look.
        try:
            await self._nudge(scope, created[0].ref, NudgeReason.SUB_ISSUE_ADDED, f"created by run {scope.run_id}")
        except PublishError as error:  # created all the same; the parent's management run will get to them
            _log.warning("sub_issue_nudge_failed", run_id=scope.run_id, issue=str(created[0].ref), error=str(error))
        return SubIssuesResult(created=tuple(issue_card(issue) for issue in created))

    async def comment(self, scope: RunScope, request: CommentRequest) -> CommentResult:
        target = await self._in_scope(scope, parse_issue(request.issue, scope))
        written = await self.tracker.comment(target, inert(request.body))
        return CommentResult(url=written.url)

    async def workpad(self, scope: RunScope, request: WorkpadRequest) -> WorkpadResult:
        located = await self._locate(scope, parse_issue(request.issue, scope), comments=_WORKPAD_LOOKBACK)
        before = sticky_comment(located.view.comments, WORKPAD_KEY, self.policy.bot_login)
        written = await self.tracker.upsert_sticky_comment(located.view.issue.ref, WORKPAD_KEY, inert(request.body))
        # The tracker writes nothing for an identical body; a workpad older than the comments looked at
        # counts as changed.
        updated = before is None or (written.id, written.body) != (before.id, before.body)
        return WorkpadResult(updated=updated)

    async def nudge(self, scope: RunScope, request: NudgeRequest) -> NudgeResult:
        target = await self._in_scope(scope, parse_issue(request.issue, scope))
        await self._nudge(scope, target, NudgeReason.AGENT_REQUEST, request.reason)
        return NudgeResult(queued=True)

    async def finish(self, scope: RunScope, request: FinishRequest) -> FinishResult:
        outcome = request.outcome
        if request.close_issue and outcome is not FinishOutcome.DONE:
            raise invalid(f"close_issue goes with outcome 'done' only, not {outcome.value!r}")
        detail = request.summary + (f"\npull request: {request.pull_request}" if request.pull_request else "")
        await self.ledger.record_event(scope.run_id, f"finish:{outcome.value}", detail, at=self.clock())
        _log.info("run_finish_reported", run_id=scope.run_id, outcome=outcome.value)
        ref = scope.issue
        match outcome:
            case FinishOutcome.DONE:
                if request.pull_request:
                    await self.tracker.comment(ref, inert(f"Done in {request.pull_request}\n\n{request.summary}"))
                if request.close_issue:
                    await self.tracker.close(ref, CloseReason.COMPLETED)
                return FinishResult(recorded=True, closed=request.close_issue)
            case FinishOutcome.BLOCKED:
                label = self.policy.needs_human_label
                await self.tracker.add_labels(ref, (label,))
                await self.tracker.comment(ref, inert(f"Blocked: a human is needed (`{label}`).\n\n{request.summary}"))
                return FinishResult(recorded=True, labelled=(label,))
            case FinishOutcome.HANDOFF:
                await self.tracker.comment(ref, inert(f"Handed off.\n\n{request.summary}"))
        # split: the sub-issues carry on; unknown: an outcome this coordinator does not know, recorded only.
        return FinishResult(recorded=True)

    async def _locate(self, scope: RunScope, ref: IssueRef, *, comments: int) -> Located:
        max_depth = self.policy.caps.max_tree_depth
        return await locate(self.tracker, scope, ref, max_depth=max_depth, comments=comments)

    async def _in_scope(self, scope: RunScope, ref: IssueRef) -> IssueRef:
        """``ref`` as the tracker names it, once it is known to be in the tree (the run's own issue is)."""
        if same_issue(ref, scope.issue):
            return scope.issue
        return (await self._locate(scope, ref, comments=0)).view.issue.ref

    async def _check_caps(self, scope: RunScope, parent: Located, requested: int) -> FanOut:
        caps = self.policy.caps
        fan_out = FanOut(requested=requested, created_by_run=scope.sub_issues_created, parent_depth=parent.depth)
        refusal = fan_out_refusal(fan_out, caps)
        if refusal is None:
            fan_out = replace(fan_out, tree_size=await count_tree(self.tracker, scope.root, limit=caps.max_tree_size))
            refusal = fan_out_refusal(fan_out, caps)
        if refusal is not None:
            raise cap_reached(refusal)
        return fan_out

    async def _reserve(self, scope: RunScope, fan_out: FanOut) -> None:
        """Count the sub-issues against the run and the tree before creating them (a concurrent request sees them).

        The tree's size was counted on GitHub, where another run's sub-issues may not be yet: the ledger's
        reservation for the tree is what keeps two runs of one tree from both slipping under ``max_tree_size``.
        """
        caps = self.policy.caps
        if (
            await self.ledger.reserve_sub_issues(scope.run_id, fan_out.requested, cap=caps.max_sub_issues_per_run)
            is None
        ):
            run = await self.ledger.run_record(scope.run_id)
            if run is None or not run.active:
                raise run_over(f"run {scope.run_id} ended meanwhile")
            # Another request of this run counted its sub-issues since this one read the count.
            fresh = replace(fan_out, created_by_run=run.sub_issues_created)
            raise cap_reached(
                fan_out_refusal(fresh, caps) or f"max_sub_issues_per_run = {caps.max_sub_issues_per_run} reached"
            )
        counted = fan_out.tree_size if fan_out.tree_size is not None else 1
        tree = await self.ledger.reserve_tree_size(
            scope.root.key, fan_out.requested, counted=counted, cap=caps.max_tree_size
        )
        if not tree.reserved:
            await self.ledger.release_sub_issues(scope.run_id, fan_out.requested)
            # Another run of the tree reserved room for its sub-issues since this one counted the tree.
            fresh = replace(fan_out, tree_size=tree.size)
            raise cap_reached(fan_out_refusal(fresh, caps) or f"max_tree_size = {caps.max_tree_size} reached")

    async def _create(self, scope: RunScope, parent: IssueRef, request: SubIssuesRequest) -> list[Issue]:
        """Create the sub-issues in order, then their dependencies; a tracker fault gives back the rest."""
        # The opt-in label makes them agent-grid's on their own, whatever opted their tree in.
        labels = (self.policy.opt_in.label,)
        created: list[Issue] = []
        try:
            for new in request.issues:
                created.append(
                    await self.tracker.create_sub_issue(
                        parent, NewIssue(title=inert(new.title), body=inert(new.body), labels=labels)
                    )
                )
            for index, new in enumerate(request.issues):
                for blocker in dict.fromkeys(new.blocked_by):
                    await self.tracker.add_blocked_by(created[index].ref, created[blocker].ref)
        except TrackerError as error:
            wanted = len(request.issues)
            await self.ledger.release_sub_issues(scope.run_id, wanted - len(created))
            await self.ledger.release_tree_size(scope.root.key, wanted - len(created))
            done = ", ".join(str(issue.ref) for issue in created) or "none"
            if created:
                await self.ledger.record_event(scope.run_id, "sub_issues_created", done, at=self.clock())
            raise tracker_refusal(error, context=f"created {len(created)} of {wanted} sub-issues ({done})") from error
        return created

    async def _nudge(self, scope: RunScope, ref: IssueRef, reason: NudgeReason, detail: str) -> None:
        # An agent's nudge carries no authority of its own: the decision gives it the tree's authoriser.
        actor = Actor(login=self.policy.bot_login, kind=ActorKind.AGENT, run_id=scope.run_id)
        nudge = Nudge(issue=ref, reason=reason, source=NudgeSource.AGENT, actor=actor, detail=detail)
        await self.nudges.publish(wrap(nudge, producer=_PRODUCER))
