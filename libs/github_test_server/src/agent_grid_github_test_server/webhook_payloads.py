"""State changes → webhook payloads shaped as GitHub's (event name, action, JSON body). Pure."""

from agent_grid_github_test_server.entities import Change, Issue
from agent_grid_github_test_server.render import Json, Renderer


def payload_for(change: Change, render: Renderer) -> Json:
    issue = change.issue
    body: Json = {"action": change.action}
    if change.event == "issues":
        body["issue"] = render.issue(issue)
        if change.changes is not None:
            body["changes"] = change.changes
        if change.label is not None:
            body["label"] = render.label(issue.repo, change.label)
        if change.action in ("assigned", "unassigned"):
            body["assignee"] = render.user(change.assignee)
    elif change.event == "issue_comment":
        body["issue"] = render.issue(issue)
        assert change.comment is not None
        body["comment"] = render.comment(change.comment)
        if change.changes is not None:
            body["changes"] = change.changes
    elif change.event == "sub_issues":
        body |= _sub_issue_fields(change, render)
    else:
        body |= _dependency_fields(change, render)
    return body | _envelope(change, render)


def _sub_issue_fields(change: Change, render: Renderer) -> Json:
    assert change.other is not None
    on_parent = change.action.startswith("sub_issue")
    parent, child = (change.issue, change.other) if on_parent else (change.other, change.issue)
    fields = _pair("parent_issue", parent, "sub_issue", child, render)
    # The other end's repository rides along: sub_issue_repo on the parent's delivery, and vice versa.
    other_repo = child if on_parent else parent
    fields["sub_issue_repo" if on_parent else "parent_issue_repo"] = render.repository(other_repo.repo)
    return fields


def _dependency_fields(change: Change, render: Renderer) -> Json:
    assert change.other is not None
    on_blocked = change.action.startswith("blocked_by")
    blocked, blocking = (change.issue, change.other) if on_blocked else (change.other, change.issue)
    fields = _pair("blocked_issue", blocked, "blocking_issue", blocking, render)
    other = blocking if on_blocked else blocked
    fields["blocking_issue_repo" if on_blocked else "blocked_issue_repo"] = render.repository(other.repo)
    return fields


def _pair(first_name: str, first: Issue, second_name: str, second: Issue, render: Renderer) -> Json:
    return {
        f"{first_name}_id": first.id,
        first_name: render.issue(first),
        f"{second_name}_id": second.id,
        second_name: render.issue(second),
    }


def _envelope(change: Change, render: Renderer) -> Json:
    repo = change.issue.repo
    envelope: Json = {"repository": render.repository(repo), "sender": render.user(change.actor)}
    if repo.owner.type == "Organization":
        envelope["organization"] = render.organization(repo.owner)
    installation = render.store.installation_for(repo)
    if installation is not None:
        envelope["installation"] = render.simple_installation(installation)
    return envelope
