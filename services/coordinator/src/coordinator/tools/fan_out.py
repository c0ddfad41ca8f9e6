"""The fan-out caps on creating sub-issues, checked before anything is created (pure).

A request that would take any cap past its value is refused as a whole: the caps bound what one run can
spawn (``max_sub_issues_per_run``), how deep (``max_tree_depth``) and how wide (``max_tree_size``) a tree
grows, and a partial creation would leave the agent's plan half made.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from agent_grid_contracts.public_tools import NewSubIssue

from coordinator.decisions.public_policy import Caps

# Where an operator raises a cap: the coordinator's settings (``Settings.policy.caps``) read from the
# environment with this prefix. A test keeps the two in step.
CAPS_ENV_PREFIX = "COORDINATOR_POLICY__CAPS__"


@dataclass(frozen=True)
class FanOut:
    """A request to create sub-issues, and what it lands on."""

    requested: int
    # Sub-issues this run has created so far (the ledger's count).
    created_by_run: int
    # The depth of the parent they go under (the root is 0): the new ones are one deeper.
    parent_depth: int
    # Issues in the tree now, root included; None while not counted (it costs a read per issue, so the
    # cheaper caps are checked first).
    tree_size: int | None = None


def cap_label(name: str, caps: Caps) -> str:
    """A cap as an operator finds it: ``name (ENV_VARIABLE) = value``."""
    return f"{name} ({CAPS_ENV_PREFIX}{name.upper()}) = {getattr(caps, name)}"


def fan_out_refusal(fan_out: FanOut, caps: Caps) -> str | None:
    """Why the request is refused (the cap, where to change it, and the figures), or None when it fits."""
    wanted = fan_out.requested
    created = fan_out.created_by_run
    if created + wanted > caps.max_sub_issues_per_run:
        asked = f", and this request adds {wanted}" if created < caps.max_sub_issues_per_run else ""
        return f"{cap_label('max_sub_issues_per_run', caps)} reached: this run created {created}{asked}"
    depth = fan_out.parent_depth + 1
    if depth > caps.max_tree_depth:
        return (
            f"{cap_label('max_tree_depth', caps)} reached: the new sub-issues would be at depth {depth} "
            f"(the root is at 0, its sub-issues at 1)"
        )
    size = fan_out.tree_size
    if size is not None and size + wanted > caps.max_tree_size:
        has = f"{size} issues" if size <= caps.max_tree_size else f"more than {caps.max_tree_size} issues"
        return f"{cap_label('max_tree_size', caps)} reached: the tree has {has}, and this request adds {wanted}"
    return None


def blocked_by_problem(issues: Sequence[NewSubIssue]) -> str | None:
    """Why the request's ``blocked_by`` indices are wrong (each must name an earlier entry), or None."""
    for index, issue in enumerate(issues):
        for blocker in issue.blocked_by:
            if not 0 <= blocker < index:
                earlier = f"0 to {index - 1}" if index else "none: the first entry cannot wait for another"
                return f"issues.{index}.blocked_by: {blocker} is not an earlier entry (earlier entries: {earlier})"
    return None
