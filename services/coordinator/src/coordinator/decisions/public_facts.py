"""What a decision is made from: the issue as the tracker shows it, the ledger's counts, and the trigger.

Plain frozen records, built by the adapters (tracker view → :class:`IssueFacts`, ledger queries →
:class:`LedgerFacts`, a nudge → :class:`Trigger`); the decisions never do I/O.
"""

from dataclasses import dataclass
from datetime import datetime

from agent_grid_contracts.public_issues import Actor, ActorKind, IssueRef
from agent_grid_contracts.public_nudges import NudgeReason

__all__ = ["ChildFacts", "IssueFacts", "LedgerFacts", "Trigger"]


@dataclass(frozen=True)
class ChildFacts:
    """A sub-issue, in its parent's order."""

    ref: IssueRef
    open: bool
    assignees: tuple[str, ...] = ()


@dataclass(frozen=True)
class IssueFacts:
    """The issue and its place in its tree."""

    ref: IssueRef
    open: bool
    labels: frozenset[str]
    assignees: tuple[str, ...]
    root: IssueRef
    root_labels: frozenset[str]
    parent: IssueRef | None = None
    children: tuple[ChildFacts, ...] = ()
    open_blockers: tuple[IssueRef, ...] = ()
    # Open siblings that come before this issue in the parent's order (they run first).
    earlier_open_siblings: tuple[IssueRef, ...] = ()
    depth: int = 0  # the root is 0
    tree_size: int = 1


@dataclass(frozen=True)
class LedgerFacts:
    """What the ledger knows that bears on launching a run for one issue."""

    active_total: int = 0
    active_in_repo: int = 0
    active_in_tree: int = 0
    active_of_kind: int = 0
    active_run_on_issue: str | None = None
    runs_on_issue: int = 0
    runs_in_tree: int = 0
    consecutive_failures: int = 0
    tree_cost_usd: float = 0.0
    tree_tokens: int = 0
    repo_cost_today_usd: float = 0.0
    last_manage_started_at: datetime | None = None
    # The trusted human whose nudge first launched a run in this tree: agent-made sub-issues run on their word.
    tree_authorised_by: str | None = None
    paused: bool = False
    tree_killed: bool = False


@dataclass(frozen=True)
class Trigger:
    """Why the issue is being looked at: the nudge's reason and actor."""

    reason: NudgeReason
    actor: Actor | None

    @property
    def is_ours(self) -> bool:
        """Made by agent-grid itself (an agent run or the coordinator), not by a person."""
        return self.actor is None or self.actor.kind in (ActorKind.AGENT, ActorKind.SYSTEM) or bool(self.actor.run_id)
