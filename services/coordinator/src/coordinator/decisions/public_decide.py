"""Should this issue get a run now? A pure function of (issue, ledger, trigger, policy, clock).

The checks run in a fixed order, cheapest and most final first: a closed, unclaimed, untrusted or
human-owned issue is ignored before any budget is looked at; a run in flight, a blocker or an earlier
sibling postpones; a cap refuses (and, for the caps that only a human can lift, escalates); concurrency,
a tree budget held by the tree's runs in flight and the repository's daily budget postpone. Only then a
launch, in the mode the tree shape calls for, allotted at most what is left of its tree's budget.
"""

from datetime import UTC, datetime, timedelta

from agent_grid_contracts.public_issues import ActorKind
from agent_grid_contracts.public_launches import RunMode
from agent_grid_contracts.public_nudges import NudgeReason

from coordinator.decisions.public_facts import IssueFacts, LedgerFacts, Trigger
from coordinator.decisions.public_policy import Policy
from coordinator.decisions.public_verdicts import Ignore, Launch, Refuse, Verdict, Wait, WaitReason

__all__ = ["authoriser", "decide_launch", "run_mode"]

# Less than this is nothing left of a tree's cost budget: float noise (25 - 23.3 - 1.7 is not 0), not a run's worth.
_NOTHING_LEFT_USD = 1e-6


def decide_launch(issue: IssueFacts, ledger: LedgerFacts, trigger: Trigger, policy: Policy, now: datetime) -> Verdict:
    """The verdict for one look at ``issue``."""
    authorised_by = authoriser(trigger, ledger, policy, issue)
    gate = _gate(issue, ledger, trigger, policy, authorised_by)
    if gate is not None:
        return gate
    assert authorised_by is not None  # _gate ignores untrusted triggers
    mode = run_mode(issue, ledger)
    hold = _hold(issue, ledger, policy, mode, now)
    if hold is not None:
        return hold
    hands_back = _hands_back(trigger, authorised_by, policy)
    refusal = _cap_refusal(issue, ledger, policy, breaker_reset=hands_back)
    if refusal is not None:
        return refusal
    postponement = _capacity_wait(issue, ledger, policy, now)
    if postponement is not None:
        return postponement
    caps = policy.caps
    left_usd, left_tokens = _tree_left(ledger, policy)
    return Launch(
        mode=mode,
        agent_kind=policy.agent_kind,
        authorised_by=authorised_by,
        # A run may spend its own cap, and never more than what is left of its tree's once what the tree's runs in
        # flight were allotted is set aside: concurrent runs together stay within the tree's budget.
        max_cost_usd=min(caps.max_cost_usd_per_run, left_usd),
        max_tokens=min(caps.max_tokens_per_run, left_tokens),
        resets_failures=hands_back and ledger.consecutive_failures > 0,
    )


def _tree_left(ledger: LedgerFacts, policy: Policy) -> tuple[float, int]:
    """What is left of the tree's cost and token budgets: not spent, and not allotted to a run in flight."""
    caps = policy.caps
    return (
        caps.max_cost_usd_per_tree - ledger.tree_cost_usd - ledger.tree_reserved_usd,
        caps.max_tokens_per_tree - ledger.tree_tokens - ledger.tree_reserved_tokens,
    )


def _hands_back(trigger: Trigger, authorised_by: str | None, policy: Policy) -> bool:
    """A trusted person took the issue back from escalation (removed its label, or nudged it by hand).

    Only that closes the circuit breaker: the person has looked at the failures. Removing another label is no
    such look, nor is a removal that does not say which label went (a producer from before nudges named it).
    agent-grid's own triggers never hand back, so a failing issue cannot talk itself back into running.
    """
    actor = trigger.actor
    if actor is None or trigger.is_ours or authorised_by != actor.login:
        return False
    if trigger.reason is NudgeReason.MANUAL:
        return True
    # GitHub matches label names without regard to case.
    removed = trigger.label.casefold() if trigger.label is not None else None
    return trigger.reason is NudgeReason.ISSUE_UNLABELED and removed == policy.needs_human_label.casefold()


def _gate(
    issue: IssueFacts, ledger: LedgerFacts, trigger: Trigger, policy: Policy, authorised_by: str | None
) -> Verdict | None:
    """Not agent-grid's issue, or stopped by the kill switch."""
    if not issue.open:
        return Ignore("the issue is closed")
    if policy.kill_label in issue.labels | issue.root_labels or ledger.tree_killed:
        return Refuse("kill_switch", "the kill switch is on for this tree", escalate=False)
    if not _opted_in(issue, policy):
        return Ignore(f"not opted in (no {policy.opt_in.label!r} label, not assigned to {policy.bot_login})")
    if authorised_by is None:
        unlooked = trigger.is_ours and ledger.tree_authorised_by is None and issue.authoriser_candidates is None
        return Ignore("the trigger is not trusted and the tree has no trusted authoriser", needs_authoriser=unlooked)
    humans = [login for login in issue.assignees if login != policy.bot_login]
    if humans:
        return Ignore(f"assigned to {', '.join('@' + h for h in humans)}: a human's issue")
    if policy.needs_human_label in issue.labels:
        # Escalated: the status comment says why. Removing the label hands the issue back.
        return Ignore(f"labelled {policy.needs_human_label!r}: held for a person until the label is removed")
    return None


def _hold(issue: IssueFacts, ledger: LedgerFacts, policy: Policy, mode: RunMode, now: datetime) -> Wait | None:
    """Agent-grid's issue, but its turn has not come."""
    if ledger.paused:
        return Wait(WaitReason.PAUSED, "agent-grid is paused")
    if ledger.active_run_on_issue is not None:
        return Wait(WaitReason.RUN_IN_FLIGHT, f"run {ledger.active_run_on_issue} is in flight")
    if issue.open_blockers:
        return Wait(WaitReason.BLOCKED, "blocked by " + ", ".join(str(ref) for ref in issue.open_blockers))
    if issue.earlier_open_siblings:
        return Wait(WaitReason.EARLIER_SIBLING_OPEN, f"{issue.earlier_open_siblings[0]} comes first")
    if mode is RunMode.MANAGE and ledger.last_manage_started_at is not None:
        allowed = ledger.last_manage_started_at + timedelta(seconds=policy.management.min_interval_s)
        if now < allowed:
            return Wait(WaitReason.RESUMED_RECENTLY, "resumed moments ago", not_before=allowed)
    return None


def run_mode(issue: IssueFacts, ledger: LedgerFacts) -> RunMode:
    """``manage`` a parent; ``plan`` (do it or split it) a leaf's first run; ``work`` on a leaf after that."""
    if issue.children:
        return RunMode.MANAGE
    return RunMode.WORK if ledger.runs_on_issue else RunMode.PLAN


def authoriser(trigger: Trigger, ledger: LedgerFacts, policy: Policy, issue: IssueFacts | None = None) -> str | None:
    """The trusted human a run would act for, or None.

    A person's trigger counts when they are trusted. agent-grid's own triggers (an agent's nudge, a finished
    run's follow-up, a management timer, a poll) carry the tree's existing authorisation and never create
    one: the ledger's, or, when the ledger has none (a polling-only install's first look at a tree, a lost
    ledger), a person GitHub shows authorised the tree, if the policy trusts them.
    """
    actor = trigger.actor
    if actor is not None and actor.kind in (ActorKind.HUMAN, ActorKind.UNKNOWN) and not actor.run_id:
        return actor.login if policy.trust.trusts(actor.login, actor.association) else None
    if trigger.is_ours:
        if ledger.tree_authorised_by is not None or issue is None:
            return ledger.tree_authorised_by
        trusted = (
            candidate.login
            for candidate in issue.authoriser_candidates or ()
            if candidate.login != policy.bot_login
            and policy.trust.trusts_permission(candidate.login, candidate.permission)
        )
        return next(trusted, None)
    return None  # another bot: never an authority


def _opted_in(issue: IssueFacts, policy: Policy) -> bool:
    label = policy.opt_in.label
    return (
        label in issue.labels
        or label in issue.root_labels
        or policy.bot_login in issue.assignees
        or issue.ref.repo in policy.opt_in.repos
    )


def _cap_refusal(issue: IssueFacts, ledger: LedgerFacts, policy: Policy, *, breaker_reset: bool) -> Refuse | None:
    caps = policy.caps
    checks = (
        (
            "max_consecutive_failures",
            0 if breaker_reset else ledger.consecutive_failures,
            caps.max_consecutive_failures,
            "failed runs in a row",
        ),
        ("max_runs_per_issue", ledger.runs_on_issue, caps.max_runs_per_issue, "runs on this issue"),
        ("max_runs_per_tree", ledger.runs_in_tree, caps.max_runs_per_tree, "runs in this tree"),
        ("max_cost_usd_per_tree", ledger.tree_cost_usd, caps.max_cost_usd_per_tree, "USD spent in this tree"),
        ("max_tokens_per_tree", ledger.tree_tokens, caps.max_tokens_per_tree, "tokens spent in this tree"),
    )
    for name, used, cap, what in checks:
        if used >= cap:
            return Refuse(name, f"{_figure(used)} {what} (cap {_figure(cap)})", escalate=True)
    if issue.depth > caps.max_tree_depth:
        return Refuse("max_tree_depth", f"depth {issue.depth} (cap {caps.max_tree_depth})", escalate=True)
    if issue.tree_size > caps.max_tree_size:
        return Refuse("max_tree_size", f"{issue.tree_size} issues in the tree (cap {caps.max_tree_size})", True)
    return None


def _capacity_wait(issue: IssueFacts, ledger: LedgerFacts, policy: Policy, now: datetime) -> Wait | None:
    caps = policy.caps
    kind_cap = caps.max_active_runs_per_agent_kind.get(policy.agent_kind)
    slots = (
        ("in all", ledger.active_total, caps.max_active_runs),
        (f"in {issue.ref.repo}", ledger.active_in_repo, caps.max_active_runs_per_repo),
        ("in this tree", ledger.active_in_tree, caps.max_active_runs_per_tree),
        *([(f"of {policy.agent_kind}", ledger.active_of_kind, kind_cap)] if kind_cap is not None else []),
    )
    for where, active, cap in slots:
        if active >= cap:
            return Wait(WaitReason.CONCURRENCY, f"{active} runs active {where} (cap {cap})")
    held = ledger.tree_reserved_usd > 0 or ledger.tree_reserved_tokens > 0
    left_usd, left_tokens = _tree_left(ledger, policy)
    if held and (left_usd < _NOTHING_LEFT_USD or left_tokens <= 0):
        # Not refused: what the runs in flight do not spend is left again when they end (re-decided then).
        detail = (
            f"what is left of this tree's budget is allotted to its runs in flight "
            f"({ledger.tree_reserved_usd:.2f} USD and {ledger.tree_reserved_tokens} tokens not spent yet; "
            f"{ledger.tree_cost_usd:.2f} USD and {ledger.tree_tokens} tokens spent, "
            f"caps {caps.max_cost_usd_per_tree:.2f} USD and {caps.max_tokens_per_tree} tokens)"
        )
        return Wait(WaitReason.TREE_BUDGET_ALLOTTED, detail)
    if ledger.repo_cost_today_usd >= caps.max_cost_usd_per_repo_per_day:
        tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        detail = f"{ledger.repo_cost_today_usd:.2f} USD spent today in {issue.ref.repo}"
        return Wait(WaitReason.REPO_DAILY_BUDGET, f"{detail} (cap {caps.max_cost_usd_per_repo_per_day:.2f})", tomorrow)
    return None


def _figure(value: float) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
