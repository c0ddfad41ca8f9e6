"""The words agent-grid writes on an issue: its one sticky status comment and the root's roll-up (pure rendering).

Each ends with its machine-readable record (``public_records``: hidden from readers, signed), for a ledger rebuilt
from GitHub.
"""

from datetime import datetime

from agent_grid_tracker.public_tracker import IssueState, IssueView

from coordinator.decisions.public_policy import Caps
from coordinator.decisions.public_rebuild import TreeRecord
from coordinator.decisions.public_verdicts import Launch, Refuse, Wait
from coordinator.handling.public_records import RecordKey, inert, tree_record
from coordinator.ledger.public_ledger import TreeTotals

STATUS_KEY = "status"
ROLL_UP_KEY = "tree"


def launched(verdict: Launch, run_id: str, now: datetime, *, record: str) -> str:
    """A run has been launched; ``record`` is the issue's signed record (``public_records.issue_record``)."""
    return (
        f"**agent-grid** · 🟡 **running** · `{verdict.mode.value}` run `{run_id}` ({verdict.agent_kind})\n\n"
        f"Started {_when(now)} on behalf of @{verdict.authorised_by}; "
        f"budget for this run: {verdict.max_cost_usd:.2f} USD, {verdict.max_tokens:,} tokens."
    ) + _hidden(record)


def waiting(verdict: Wait, now: datetime, *, record: str) -> str:
    """No run yet, and why."""
    until = f" (not before {_when(verdict.not_before)})" if verdict.not_before else ""
    text = f"**agent-grid** · ⏳ **waiting** · {verdict.detail}{until}\n\nChecked {_when(now)}."
    return text + _hidden(record)


def refused(verdict: Refuse, now: datetime, *, needs_human_label: str, record: str) -> str:
    """A cap or the kill switch forbids a run."""
    handoff = f" Labelled `{needs_human_label}`: a person must decide what happens next." if verdict.escalate else ""
    text = f"**agent-grid** · ⛔ **stopped** · `{verdict.cap}`: {verdict.detail}.{handoff}\n\nChecked {_when(now)}."
    return text + _hidden(record)


def finished(
    run_id: str,
    reason: str,
    cost_usd: float,
    tokens: int,
    now: datetime,
    summary: str,
    *,
    escalated_to: str | None = None,
    record: str,
) -> str:
    """A run has ended; ``escalated_to`` names the label that now holds the issue for a person."""
    mark = "✅" if reason == "success" else "❌"
    text = f"**agent-grid** · {mark} run `{run_id}` ended: **{reason}** · {cost_usd:.2f} USD, {tokens:,} tokens"
    if escalated_to is not None:
        text += (
            f"\n\nLabelled `{escalated_to}`: no run starts here until a person looks and removes the label "
            "(that also resets the failed-run count)."
        )
    quoted = "\n".join(f"> {inert(line)}" for line in summary.strip()[:500].splitlines())
    return text + f"\n\nEnded {_when(now)}." + (f"\n\n{quoted}" if quoted else "") + _hidden(record)


def tree_roll_up(root: IssueView, tree: TreeTotals, caps: Caps, now: datetime, *, key: RecordKey) -> str:
    """The block in the root issue's description: the children's states and the tree's spend against budget.

    It ends with the tree's record, signed with ``key``.
    """
    lines = [
        f"**agent-grid tree** · {tree.runs} run(s), {tree.active_runs} active · "
        f"{tree.cost_usd:.2f} / {caps.max_cost_usd_per_tree:.2f} USD · "
        f"{tree.tokens:,} / {caps.max_tokens_per_tree:,} tokens" + (" · ⛔ stopped" if tree.killed else ""),
        "",
    ]
    for child in root.children:
        done = child.state is IssueState.CLOSED
        holder = f" · @{', @'.join(child.assignees)}" if child.assignees else ""
        lines.append(f"- [{'x' if done else ' '}] {child.ref} {inert(child.title)}{holder}")
    lines.append(f"\n_Updated {_when(now)}._")
    record = TreeRecord(
        runs=tree.runs, cost_usd=tree.cost_usd, tokens=tree.tokens, authorised_by=tree.authorised_by, killed=tree.killed
    )
    return "\n".join(lines) + _hidden(tree_record(record, root_key=root.issue.ref.key, key=key))


def _hidden(record: str) -> str:
    return f"\n\n{record}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
