"""Polled issue changes → nudges: a pure function, the polling counterpart of the webhook translation.

A poll sees that an issue changed, not who changed it. Naming the issue's author would lend an outsider's
comment on a maintainer's issue the maintainer's trust, so polled nudges carry no actor: the coordinator
treats them as agent-grid's own look at the issue, which can continue a tree a trusted person authorised
but never authorises one.
"""

from collections.abc import Iterator

from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_tracker.public_tracker import IssueState, PollResult, seen_mark


def poll_nudges(result: PollResult) -> Iterator[tuple[str, Nudge]]:
    """(dedupe key, nudge) for every fresh issue in ``result``, and for the parent of each closed one.

    The key names the issue in the state it was polled in, so two changes within one second differ.
    """
    for issue in result.issues:
        stamp = f"{issue.ref.key}@{issue.updated_at.isoformat()}#{seen_mark(issue)}"
        actor = None
        closed = issue.state is IssueState.CLOSED
        yield (
            f"github-poll:{stamp}",
            Nudge(
                issue=issue.ref,
                reason=NudgeReason.ISSUE_CLOSED if closed else NudgeReason.POLLED_UPDATE,
                source=NudgeSource.GITHUB_POLL,
                actor=actor,
                event="poll.issue_updated",
                detail=f"updated at {issue.updated_at.isoformat()}",
            ),
        )
        parent = result.parents.get(issue.ref.number)
        if closed and parent is not None:
            yield (
                f"github-poll:{stamp}:parent",
                Nudge(
                    issue=parent,
                    reason=NudgeReason.CHILD_CLOSED,
                    source=NudgeSource.GITHUB_POLL,
                    actor=actor,
                    event="poll.issue_updated",
                    detail=f"sub-issue {issue.ref} closed",
                ),
            )
