"""Polled issue changes → nudges: a pure function, the polling counterpart of the webhook translation.

A poll sees that an issue changed, not who changed it; the actor is the issue's author with the
association GitHub reports for that author, so the coordinator's trust rules see the same facts as for an
``issues`` webhook. Our own accounts' issues carry a bot actor.
"""

from collections.abc import Iterator

from agent_grid_contracts.public_issues import Actor, ActorKind
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_tracker.public_tracker import Issue, IssueState, PollResult


def poll_nudges(result: PollResult, bot_logins: frozenset[str]) -> Iterator[tuple[str, Nudge]]:
    """(dedupe key, nudge) for every fresh issue in ``result``, and for the parent of each closed one."""
    bots = {login.lower() for login in bot_logins}
    for issue in result.issues:
        stamp = f"{issue.ref.key}@{issue.updated_at.isoformat()}"
        actor = _author(issue, bots)
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


def _author(issue: Issue, bots: set[str]) -> Actor:
    is_bot = issue.author.lower() in bots or issue.author.endswith("[bot]")
    return Actor(
        login=issue.author, kind=ActorKind.BOT if is_bot else ActorKind.HUMAN, association=issue.author_association
    )
