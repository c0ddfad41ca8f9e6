"""The tracker's view of an issue and its ancestors → the decision's facts and GitHub's records (pure)."""

from collections.abc import Sequence

from agent_grid_tracker.public_tracker import IssueState, IssueView, LabelEvent, sticky_marker

from coordinator.decisions.public_facts import ChildFacts, IssueFacts
from coordinator.decisions.public_rebuild import GitHubRecord
from coordinator.handling.public_records import RecordKey, read_issue_record, read_tree_record
from coordinator.handling.status import ROLL_UP_KEY, STATUS_KEY


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


def github_record(view: IssueView, root: IssueView, *, bot_login: str, key: RecordKey) -> GitHubRecord:
    """What agent-grid recorded on GitHub about the issue (its status comment) and its tree (the root's roll-up).

    Only agent-grid's own status comment counts (anyone can paste a marker), and only the roll-up block between
    agent-grid's markers in the root's description; of either, only a record signed with ``key`` for this issue
    (for the root, its tree) counts: anyone who may edit the description can type the block, and a signed record
    copied from another issue does not verify here.
    """
    status = sticky_marker(STATUS_KEY)
    ours = [c for c in view.comments if c.author == bot_login and c.body.startswith(status)]
    # The first, as the tracker's sticky-comment writer updates the first: a later one is not the one kept current.
    issue = (
        read_issue_record(ours[0].body, issue_key=view.issue.ref.key, key=key, recorded_at=ours[0].updated_at)
        if ours
        else None
    )
    # The tracker's block markers (``replace_body_block``): ``sticky_marker("<key>:start")`` … ``:end``.
    start, end = sticky_marker(f"{ROLL_UP_KEY}:start"), sticky_marker(f"{ROLL_UP_KEY}:end")
    body = root.issue.body
    begin = body.find(start)
    finish = body.find(end, begin + len(start)) if begin >= 0 else -1
    found = begin >= 0 and finish >= 0
    tree = read_tree_record(body[begin:finish], root_key=root.issue.ref.key, key=key) if found else None
    return GitHubRecord(tree=tree, issue=issue)


def opt_in_labeller(events: Sequence[LabelEvent], label: str, *, bot_login: str) -> str | None:
    """The person who last applied ``label`` (GitHub matches label names case-insensitively); never a bot."""
    for event in reversed(events):
        if event.action == "labeled" and event.label.lower() == label.lower():
            if event.actor_is_bot or event.actor == bot_login:
                return None  # the label as it stands was applied by a bot: no person vouched for it
            return event.actor
    return None
