"""What a decision is made from: the issue as the tracker shows it, the ledger's counts, and the trigger.

Plain frozen records, built by the adapters (tracker view → :class:`IssueFacts`, ledger queries →
:class:`LedgerFacts`, a nudge → :class:`Trigger`); the decisions never do I/O.
"""

from dataclasses import dataclass
from datetime import datetime

from agent_grid_contracts.public_issues import Actor, ActorKind, IssueRef
from agent_grid_contracts.public_nudges import NudgeReason

__all__ = ["AuthoriserCandidate", "ChildFacts", "IssueFacts", "LedgerFacts", "Trigger"]


@dataclass(frozen=True)
class ChildFacts:
    """A sub-issue, in its parent's order."""

    ref: IssueRef
    open: bool
    assignees: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthoriserCandidate:
    """A person GitHub shows vouching for the tree, with their role on the repository (``RepoPermission`` values).

    Who applied the opt-in label, as the issue's events say: GitHub's account of what someone did, never a name
    read from text on GitHub (anyone who may edit a description can type one). They authorise agent-grid's own
    triggers only if the trust policy trusts them now.
    """

    login: str
    permission: str
    source: str


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
    # Looked up only when a decision needs them (an agent-grid trigger in a tree the ledger has no authoriser
    # for): None until then, () when GitHub shows no one.
    authoriser_candidates: tuple[AuthoriserCandidate, ...] | None = None


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
    # What the tree has spent: its finished runs, and what its active runs have reported so far.
    tree_cost_usd: float = 0.0
    tree_tokens: int = 0
    # What the tree's active runs were allotted and have not reported spending yet (each run's limit less its
    # spend so far, never below zero): they may still spend it, so it is not left for another run.
    tree_reserved_usd: float = 0.0
    tree_reserved_tokens: int = 0
    repo_cost_today_usd: float = 0.0
    last_manage_started_at: datetime | None = None
    # The trusted human whose nudge first launched a run in this tree: agent-made sub-issues run on their word.
    tree_authorised_by: str | None = None
    paused: bool = False
    tree_killed: bool = False
    # Whether the ledger has any record of the tree (a fresh or lost ledger has none), and of the run GitHub
    # shows running on the issue: what a rebuild from GitHub may adopt (``public_rebuild``).
    tree_known: bool = False
    shown_run_known: bool = False


@dataclass(frozen=True)
class Trigger:
    """Why the issue is being looked at: the nudge's reason and actor, and the label it added or removed, if any."""

    reason: NudgeReason
    actor: Actor | None
    label: str | None = None

    @property
    def is_ours(self) -> bool:
        """Made by agent-grid itself (an agent run or the coordinator), not by a person."""
        return self.actor is None or self.actor.kind in (ActorKind.AGENT, ActorKind.SYSTEM) or bool(self.actor.run_id)
