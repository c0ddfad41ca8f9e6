"""The tracker's view of an issue and its ancestors → the decision's :class:`IssueFacts` (pure)."""

from collections.abc import Sequence

from agent_grid_tracker.public_tracker import IssueState, IssueView

from coordinator.decisions.public_facts import ChildFacts, IssueFacts


def issue_facts(view: IssueView, ancestors: Sequence[IssueView]) -> IssueFacts:
    """``ancestors`` from the parent up to the root (empty for a root)."""
    issue = view.issue
    root = ancestors[-1].issue if ancestors else issue
    parent_view = ancestors[0] if ancestors else None
    earlier: list[ChildFacts] = []
    if parent_view is not None:
        for sibling in parent_view.children:
            if sibling.ref.number == issue.ref.number and sibling.ref.repo == issue.ref.repo:
                break
            if sibling.state is IssueState.OPEN:
                earlier.append(ChildFacts(sibling.ref, open=True, assignees=sibling.assignees))
    # What one look can see of the tree: the root, the path down, this issue's and its parent's children.
    known = {root.ref.key, issue.ref.key, *(a.issue.ref.key for a in ancestors)}
    known |= {child.ref.key for child in view.children}
    known |= {child.ref.key for a in ancestors for child in a.children}
    return IssueFacts(
        ref=issue.ref,
        open=issue.state is IssueState.OPEN,
        labels=frozenset(issue.labels),
        assignees=issue.assignees,
        root=root.ref,
        root_labels=frozenset(root.labels),
        parent=view.parent.ref if view.parent else None,
        children=tuple(
            ChildFacts(child.ref, open=child.state is IssueState.OPEN, assignees=child.assignees)
            for child in view.children
        ),
        open_blockers=tuple(other.ref for other in view.blocked_by if other.state is IssueState.OPEN),
        earlier_open_siblings=tuple(child.ref for child in earlier),
        depth=len(ancestors),
        tree_size=len(known),
    )
