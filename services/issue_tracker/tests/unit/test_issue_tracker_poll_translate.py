from datetime import UTC, datetime

from agent_grid_contracts.public_issues import ActorKind, AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import NudgeReason, NudgeSource
from agent_grid_tracker.public_tracker import Issue, IssueState, PollCursor, PollResult
from issue_tracker.polling.translate import poll_nudges

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BOTS = frozenset({"agent-grid[bot]"})


def issue(number: int, *, state: IssueState = IssueState.OPEN, author: str = "alice") -> Issue:
    return Issue(
        ref=IssueRef(repo="octo/repo", number=number),
        id=number,
        title="t",
        state=state,
        url="u",
        updated_at=T0,
        author=author,
        author_association=AuthorAssociation.MEMBER,
        created_at=T0,
    )


def test_an_updated_issue_is_nudged_with_its_author_and_a_dedupe_key_per_change() -> None:
    result = PollResult(issues=(issue(7),), cursor=PollCursor(repo="octo/repo"))
    [(key, nudge)] = poll_nudges(result, BOTS)
    assert key == f"github-poll:github:octo/repo#7@{T0.isoformat()}"
    assert nudge.issue.number == 7
    assert nudge.reason is NudgeReason.POLLED_UPDATE
    assert nudge.source is NudgeSource.GITHUB_POLL
    assert nudge.actor is not None
    assert (nudge.actor.login, nudge.actor.kind, nudge.actor.association) == (
        "alice",
        ActorKind.HUMAN,
        AuthorAssociation.MEMBER,
    )


def test_a_closed_sub_issue_nudges_itself_and_its_parent() -> None:
    parent = IssueRef(repo="octo/repo", number=1)
    result = PollResult(
        issues=(issue(7, state=IssueState.CLOSED),), parents={7: parent}, cursor=PollCursor(repo="octo/repo")
    )
    nudges = list(poll_nudges(result, BOTS))
    assert [(n.issue.number, n.reason) for _, n in nudges] == [
        (7, NudgeReason.ISSUE_CLOSED),
        (1, NudgeReason.CHILD_CLOSED),
    ]
    assert len({key for key, _ in nudges}) == 2


def test_issues_opened_by_our_bot_carry_a_bot_actor() -> None:
    result = PollResult(issues=(issue(3, author="agent-grid[bot]"),), cursor=PollCursor(repo="octo/repo"))
    [(_, nudge)] = poll_nudges(result, BOTS)
    assert nudge.actor is not None
    assert nudge.actor.kind is ActorKind.BOT


def test_nothing_fresh_means_no_nudges() -> None:
    assert list(poll_nudges(PollResult(issues=(), cursor=PollCursor(repo="octo/repo"), not_modified=True), BOTS)) == []
