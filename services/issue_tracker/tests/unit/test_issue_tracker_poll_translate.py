from datetime import UTC, datetime

from agent_grid_contracts.public_issues import AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import NudgeReason, NudgeSource
from agent_grid_tracker.public_tracker import Issue, IssueState, PollCursor, PollResult, seen_mark
from issue_tracker.polling.translate import poll_nudges

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def issue(number: int, *, state: IssueState = IssueState.OPEN, labels: tuple[str, ...] = ()) -> Issue:
    return Issue(
        ref=IssueRef(repo="octo/repo", number=number),
        id=number,
        title="t",
        state=state,
        labels=labels,
        url="u",
        updated_at=T0,
        author="alice",
        author_association=AuthorAssociation.MEMBER,
        created_at=T0,
    )


def test_an_updated_issue_is_nudged_without_claiming_who_changed_it() -> None:
    polled = issue(7)
    result = PollResult(issues=(polled,), cursor=PollCursor(repo="octo/repo"))
    [(key, nudge)] = poll_nudges(result)
    assert key == f"github-poll:github:octo/repo#7@{T0.isoformat()}#{seen_mark(polled)}"
    assert (nudge.issue.number, nudge.reason, nudge.source) == (7, NudgeReason.POLLED_UPDATE, NudgeSource.GITHUB_POLL)
    # A poll cannot tell who changed the issue: the author's trust must not be lent to a commenter.
    assert nudge.actor is None


def test_two_changes_in_the_same_second_have_different_dedupe_keys() -> None:
    opened, labeled = issue(7), issue(7, labels=("agent-grid",))
    [(first, _)] = poll_nudges(PollResult(issues=(opened,), cursor=PollCursor(repo="octo/repo")))
    [(second, _)] = poll_nudges(PollResult(issues=(labeled,), cursor=PollCursor(repo="octo/repo")))
    assert first != second


def test_a_closed_sub_issue_nudges_itself_and_its_parent() -> None:
    parent = IssueRef(repo="octo/repo", number=1)
    result = PollResult(
        issues=(issue(7, state=IssueState.CLOSED),), parents={7: parent}, cursor=PollCursor(repo="octo/repo")
    )
    nudges = list(poll_nudges(result))
    assert [(n.issue.number, n.reason) for _, n in nudges] == [
        (7, NudgeReason.ISSUE_CLOSED),
        (1, NudgeReason.CHILD_CLOSED),
    ]
    assert len({key for key, _ in nudges}) == 2


def test_nothing_fresh_means_no_nudges() -> None:
    assert list(poll_nudges(PollResult(issues=(), cursor=PollCursor(repo="octo/repo"), not_modified=True))) == []
