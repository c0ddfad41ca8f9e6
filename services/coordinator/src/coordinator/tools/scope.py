"""A run's scope: the issue tree under its root, as the tracker shows it now.

An issue is in scope when walking up its parents reaches the run's root (or it is the root), within the
depth cap plus one step; issues of other repositories are refused before any lookup (an agent-grid tree lives
in one repository). The walk reads the tracker every time: a tree changes under a run (people move issues),
and what the tracker shows is what the run may touch.
"""

from dataclasses import dataclass

from agent_grid_contracts.public_issues import IssueRef, parse_issue_ref
from agent_grid_tracker.public_tracker import IssueView, Tracker

from coordinator.ledger.public_ledger import RunRecord
from coordinator.tools.refusals import invalid, out_of_scope


@dataclass(frozen=True)
class RunScope:
    """The run a token names: its issue, its tree's root, and the sub-issues it created so far."""

    run_id: str
    issue: IssueRef
    root: IssueRef
    sub_issues_created: int

    @classmethod
    def of(cls, run: RunRecord) -> "RunScope":
        return cls(run.run_id, ref_of_key(run.issue_key), ref_of_key(run.root_key), run.sub_issues_created)


@dataclass(frozen=True)
class Located:
    """An issue of the run's tree and its depth below the root (the root is 0)."""

    view: IssueView
    depth: int


def ref_of_key(key: str) -> IssueRef:
    """The issue a ledger key (``tracker:owner/name#number``) names."""
    tracker, _, rest = key.partition(":")
    repo, _, number = rest.rpartition("#")
    return IssueRef(tracker=tracker, repo=repo, number=int(number))


def same_issue(one: IssueRef, other: IssueRef) -> bool:
    # GitHub names are case-insensitive; node ids are known to some producers and not to others.
    return (one.tracker, one.repo.lower(), one.number) == (other.tracker, other.repo.lower(), other.number)


def parse_issue(text: str | None, scope: RunScope) -> IssueRef:
    """The issue an agent names (``owner/repo#number``), the run's own when it names none.

    Raises:
        Refusal: 422 for text of another form, 403 for another repository than the run's tree.
    """
    if text is None or not text.strip():
        return scope.issue
    try:
        ref = parse_issue_ref(text, tracker=scope.root.tracker)
    except ValueError as error:
        raise invalid(f"issue: {error}") from None
    if ref.repo.lower() != scope.root.repo.lower():
        raise out_of_scope(f"{ref} is in another repository than this run's tree (rooted at {scope.root})")
    return ref


async def locate(tracker: Tracker, scope: RunScope, ref: IssueRef, *, max_depth: int, comments: int) -> Located:
    """``ref`` viewed (with its last ``comments`` comments) and placed in the run's tree.

    Raises:
        Refusal: 403 when walking up its parents does not reach the run's root within ``max_depth`` + 1 steps.
        TrackerError: the tracker could not be read.
    """
    view = await tracker.view(ref, comments=comments)
    depth, here, parent = 0, view.issue.ref, view.parent
    while not same_issue(here, scope.root):
        if parent is None or depth > max_depth:
            raise out_of_scope(f"{ref} is not in this run's tree (rooted at {scope.root})")
        depth, here = depth + 1, parent.ref
        if not same_issue(here, scope.root):
            parent = (await tracker.view(here, comments=0)).parent
    return Located(view, depth)


async def count_tree(tracker: Tracker, root: IssueRef, *, limit: int) -> int:
    """How many issues the tree under ``root`` has (the root included), breadth first from the root.

    The count stops once it passes ``limit``: a tree that large is refused whatever its exact size, and a
    tree's walk costs one tracker read per issue.
    """
    size, frontier = 1, [root]
    while frontier and size <= limit:
        view = await tracker.view(frontier.pop(0), comments=0)
        size += len(view.children)
        frontier.extend(child.ref for child in view.children)
    return size
