"""The tracker's view of an issue → the contract's ``show`` answer, with who is trusted (pure)."""

from collections.abc import Sequence

from agent_grid_contracts.public_issues import AuthorAssociation
from agent_grid_contracts.public_tools import IssueCard, IssueComment, IssueDetail
from agent_grid_tracker.public_tracker import Comment, IssueSummary, IssueView, sticky_marker

from coordinator.decisions.public_policy import Policy


def trusted(login: str, association: AuthorAssociation, policy: Policy) -> bool:
    """Whose text an agent may take as instructions: agent-grid itself, or whom the decisions trust."""
    return login == policy.bot_login or policy.trust.trusts(login, association)


def issue_card(summary: IssueSummary) -> IssueCard:
    return IssueCard(
        issue=str(summary.ref),
        title=summary.title,
        state=summary.state.value,
        assignees=summary.assignees,
        labels=summary.labels,
        url=summary.url,
    )


def issue_detail(view: IssueView, policy: Policy) -> IssueDetail:
    issue = view.issue
    return IssueDetail(
        issue=str(issue.ref),
        title=issue.title,
        body=issue.body,
        author=issue.author,
        author_trusted=trusted(issue.author, issue.author_association, policy),
        state=issue.state.value,
        assignees=issue.assignees,
        labels=issue.labels,
        url=issue.url,
        parent=issue_card(view.parent) if view.parent else None,
        children=tuple(issue_card(child) for child in view.children),
        blocked_by=tuple(issue_card(other) for other in view.blocked_by),
        blocking=tuple(issue_card(other) for other in view.blocking),
        comments=tuple(
            IssueComment(
                author=comment.author,
                trusted=trusted(comment.author, comment.author_association, policy),
                body=comment.body,
                created_at=comment.created_at,
                url=comment.url,
            )
            for comment in view.comments
        ),
    )


def sticky_comment(comments: Sequence[Comment], key: str, bot_login: str) -> Comment | None:
    """agent-grid's own comment named ``key`` among ``comments`` (anyone can paste the marker: only ours count)."""
    marker = sticky_marker(key)
    for comment in reversed(comments):
        if comment.author == bot_login and comment.body.startswith(marker):
            return comment
    return None
