"""A ledger rebuilt from GitHub: what agent-grid recorded there, adopted where it says more than the ledger does.

GitHub is the state: agent-grid writes, hidden in the root's roll-up block and in each issue's status comment,
the figures a decision needs (runs, spend, failures in a row, the run in flight). A fresh ledger, one restored
from an old backup, or one lost outright knows less than GitHub shows; a decision then takes the larger of the
two, so a lost ledger never resets a tree's spend or its run counts to zero. Figures that only grow (runs,
cost, tokens) are adopted whenever GitHub's are larger (a stale record is never larger than the ledger it was
written from), by raising the ledger's to them, never by adding the difference (two decisions that read the
same stale ledger would add it twice). Figures a person may lower (failures in a row, reset when they hand an
issue back; the kill switch, revived through the API) are adopted only when the ledger knows nothing of the
tree. A run GitHub shows running that the ledger does not know is taken on as running since GitHub last said
so: the lost-run sweep declares it lost unless its worker is still reporting it. Authorisation is never taken
from a record: its authorisers are kept for the record's readers, and a tree the ledger has no authoriser for
asks GitHub who applied its opt-in label (``IssueFacts.authoriser_candidates``).

Pure: the records come parsed, read only where agent-grid's signature verifies (``handling.public_records``);
the adoption is written by the ledger in the decision's transaction.
"""

from dataclasses import dataclass, replace
from datetime import datetime

from coordinator.decisions.public_facts import LedgerFacts

__all__ = ["AdoptedRun", "Adoption", "GitHubRecord", "IssueRecord", "TreeRecord", "rebuild"]


@dataclass(frozen=True)
class TreeRecord:
    """A tree's figures as agent-grid last recorded them on GitHub.

    Spend is finished runs' plus what active ones had reported, as in the ledger's roll-up. ``authorised_by`` is
    for people reading it, never an authority.
    """

    runs: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    authorised_by: str | None = None
    killed: bool = False


@dataclass(frozen=True)
class IssueRecord:
    """An issue as its status comment last recorded it, with its tree's figures at that moment.

    ``running_run`` is the run the status shows in flight (with its ``mode`` and ``agent_kind``), and
    ``recorded_at`` when the comment was last written (the tracker's timestamp, not the comment's text).
    """

    runs: int = 0
    consecutive_failures: int = 0
    tree: TreeRecord = TreeRecord()
    running_run: str | None = None
    mode: str = "work"
    agent_kind: str = ""
    authorised_by: str | None = None
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class GitHubRecord:
    """What GitHub shows of the decision's tree (the root's roll-up) and issue (its status comment)."""

    tree: TreeRecord | None = None
    issue: IssueRecord | None = None


@dataclass(frozen=True)
class AdoptedRun:
    """A run GitHub shows in flight that the ledger does not know: recorded as running since ``last_seen_at``.

    ``authorised_by`` is whom the status said it ran for, kept on the run; it authorises nothing else.
    """

    run_id: str
    mode: str
    agent_kind: str
    authorised_by: str
    last_seen_at: datetime


@dataclass(frozen=True)
class Adoption:
    """What the ledger takes on from GitHub: figures to raise its own to (0: none), the kill switch, a run.

    Figures are raised to at least GitHub's, never added to: decisions that read the ledger before another
    adopted (concurrent ones on PostgreSQL) adopt the same figures, and must not count them twice. The tree's
    spend is its whole, finished runs' and what active ones had reported, as :class:`LedgerFacts` counts it.
    """

    tree_runs_at_least: int = 0
    tree_cost_usd_at_least: float = 0.0
    tree_tokens_at_least: int = 0
    tree_killed: bool = False
    issue_runs_at_least: int = 0
    issue_failures_at_least: int = 0
    run: AdoptedRun | None = None


def rebuild(ledger: LedgerFacts, record: GitHubRecord, *, agent_kind: str) -> tuple[LedgerFacts, Adoption | None]:
    """The facts a decision sees (the ledger's, raised to what GitHub shows) and what the ledger adopts."""
    trees = [found for found in (record.tree, record.issue.tree if record.issue else None) if found is not None]
    runs = max((tree.runs for tree in trees), default=0)
    cost = max((tree.cost_usd for tree in trees), default=0.0)
    tokens = max((tree.tokens for tree in trees), default=0)
    killed = not ledger.tree_known and not ledger.tree_killed and any(tree.killed for tree in trees)
    issue = record.issue or IssueRecord()
    failures = issue.consecutive_failures if not ledger.tree_known else 0
    adoption = Adoption(
        tree_runs_at_least=runs if runs > ledger.runs_in_tree else 0,
        tree_cost_usd_at_least=cost if cost > ledger.tree_cost_usd else 0.0,
        tree_tokens_at_least=tokens if tokens > ledger.tree_tokens else 0,
        tree_killed=killed,
        issue_runs_at_least=issue.runs if issue.runs > ledger.runs_on_issue else 0,
        issue_failures_at_least=failures if failures > ledger.consecutive_failures else 0,
        run=_unknown_run(ledger, issue),
    )
    if adoption == Adoption():
        return ledger, None
    facts = replace(
        ledger,
        runs_in_tree=max(ledger.runs_in_tree, adoption.tree_runs_at_least),
        tree_cost_usd=max(ledger.tree_cost_usd, adoption.tree_cost_usd_at_least),
        tree_tokens=max(ledger.tree_tokens, adoption.tree_tokens_at_least),
        tree_killed=ledger.tree_killed or adoption.tree_killed,
        runs_on_issue=max(ledger.runs_on_issue, adoption.issue_runs_at_least),
        consecutive_failures=max(ledger.consecutive_failures, adoption.issue_failures_at_least),
    )
    if adoption.run is not None:
        of_kind = 1 if adoption.run.agent_kind == agent_kind else 0
        facts = replace(
            facts,
            active_run_on_issue=adoption.run.run_id,
            active_total=facts.active_total + 1,
            active_in_repo=facts.active_in_repo + 1,
            active_in_tree=facts.active_in_tree + 1,
            active_of_kind=facts.active_of_kind + of_kind,
        )
    return facts, adoption


def _unknown_run(ledger: LedgerFacts, issue: IssueRecord) -> AdoptedRun | None:
    """The run the status shows running, if the ledger neither knows it nor has another run on the issue."""
    if issue.running_run is None or issue.recorded_at is None or ledger.shown_run_known:
        return None
    if ledger.active_run_on_issue is not None:  # the ledger's own run holds the issue: the status is stale
        return None
    authorised_by = issue.authorised_by or issue.tree.authorised_by or "unknown"
    return AdoptedRun(issue.running_run, issue.mode, issue.agent_kind, authorised_by, issue.recorded_at)
