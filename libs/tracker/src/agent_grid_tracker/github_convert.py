"""GitHub's JSON (REST and GraphQL) into the tracker's own types; nothing GitHub-shaped goes further."""

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent_grid_contracts.public_issues import AuthorAssociation, IssueRef

from agent_grid_tracker.public_tracker import (
    Comment,
    Issue,
    IssueState,
    IssueSummary,
    IssueView,
    LabelEvent,
    RepoPermission,
)

_REPO_URL = re.compile(r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)(?:/issues/(?P<number>\d+))?/?$")

type Json = Mapping[str, Any]


def repo_of_url(url: str) -> str:
    """``owner/name`` from a REST ``repository_url`` (or an issue's ``url``)."""
    match = _REPO_URL.search(url)
    if not match:
        raise ValueError(f"not a GitHub repository URL: {url!r}")
    return f"{match['owner']}/{match['name']}"


def ref_of_issue_url(url: str) -> IssueRef:
    """The issue named by a REST issue URL such as ``parent_issue_url``."""
    match = _REPO_URL.search(url)
    if not match or not match["number"]:
        raise ValueError(f"not a GitHub issue URL: {url!r}")
    return IssueRef(repo=f"{match['owner']}/{match['name']}", number=int(match["number"]))


def issue_from_rest(data: Json) -> Issue:
    """A REST issue object."""
    labels = tuple(label if isinstance(label, str) else str(label.get("name", "")) for label in data["labels"])
    return Issue(
        ref=IssueRef(repo=repo_of_url(data["repository_url"]), number=data["number"], node_id=data.get("node_id")),
        id=data["id"],
        title=data["title"],
        state=IssueState(data["state"]),
        state_reason=data.get("state_reason"),
        assignees=tuple(user["login"] for user in data.get("assignees") or ()),
        labels=labels,
        url=data["html_url"],
        updated_at=_time(data["updated_at"]),
        body=data.get("body") or "",
        author=(data.get("user") or {}).get("login", "ghost"),
        author_association=AuthorAssociation(data.get("author_association", "unknown")),
        created_at=_time(data["created_at"]),
    )


def comment_from_rest(data: Json) -> Comment:
    """A REST issue comment object."""
    return Comment(
        id=data["id"],
        author=(data.get("user") or {}).get("login", "ghost"),
        author_association=AuthorAssociation(data.get("author_association", "unknown")),
        body=data.get("body") or "",
        created_at=_time(data["created_at"]),
        updated_at=_time(data["updated_at"]),
        url=data["html_url"],
    )


def summary_from_graphql(node: Json) -> IssueSummary:
    """An issue node selected with the ``Summary`` fragment."""
    return IssueSummary(**_summary_fields(node))


def view_from_graphql(node: Json) -> IssueView:
    """The ``IssueView`` query's issue node; sub-issues beyond its first page are added by the caller."""
    issue = Issue(
        **_summary_fields(node),
        body=node.get("body") or "",
        author=_graphql_login(node.get("author")),
        author_association=AuthorAssociation(node.get("authorAssociation", "unknown")),
        created_at=_time(node["createdAt"]),
    )
    return IssueView(
        issue=issue,
        parent=summary_from_graphql(node["parent"]) if node.get("parent") else None,
        # Connection nodes are nullable in GitHub's schema (an item we may not see comes back null).
        children=tuple(summary_from_graphql(child) for child in node["subIssues"]["nodes"] if child),
        blocked_by=tuple(summary_from_graphql(other) for other in node["blockedBy"]["nodes"] if other),
        blocking=tuple(summary_from_graphql(other) for other in node["blocking"]["nodes"] if other),
        comments=tuple(
            Comment(
                id=comment["databaseId"],
                author=_graphql_login(comment.get("author")),
                author_association=AuthorAssociation(comment.get("authorAssociation", "unknown")),
                body=comment.get("body") or "",
                created_at=_time(comment["createdAt"]),
                updated_at=_time(comment["updatedAt"]),
                url=comment["url"],
            )
            for comment in node["comments"]["nodes"]
            if comment
        ),
    )


def _summary_fields(node: Json) -> dict[str, Any]:
    reason = node.get("stateReason")
    return {
        "ref": IssueRef(repo=node["repository"]["nameWithOwner"], number=node["number"], node_id=node["id"]),
        "id": node["databaseId"],
        "title": node["title"],
        "state": IssueState(node["state"].lower()),
        "state_reason": reason.lower() if reason else None,
        "assignees": tuple(user["login"] for user in node["assignees"]["nodes"]),
        "labels": tuple(label["name"] for label in node["labels"]["nodes"]),
        "url": node["url"],
        "updated_at": _time(node["updatedAt"]),
    }


def _graphql_login(author: Json | None) -> str:
    # GraphQL names an App's bot by its slug; REST (and webhooks) by `slug[bot]`. Speak REST's dialect.
    if not author:
        return "ghost"
    login = str(author["login"])
    return f"{login}[bot]" if author.get("__typename") == "Bot" and not login.endswith("[bot]") else login


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def label_events_from_rest(items: Sequence[Json]) -> tuple[LabelEvent, ...]:
    """The ``labeled``/``unlabeled`` entries of an issue's REST events (others, and deleted accounts', skipped)."""
    events = []
    for item in items:
        action, actor, label = item.get("event"), item.get("actor"), item.get("label")
        if action not in ("labeled", "unlabeled") or not actor or not label:
            continue
        events.append(
            LabelEvent(
                action=action,
                label=str(label.get("name", "")),
                actor=actor["login"],
                actor_is_bot=actor.get("type") == "Bot",
                created_at=_time(item["created_at"]),
            )
        )
    return tuple(events)


def permission_from_rest(data: Json) -> RepoPermission:
    """``repository-collaborator-permission``: its role by name, or (a custom role) its legacy base permission."""
    known = {permission.value: permission for permission in RepoPermission}
    for value in (data.get("role_name"), data.get("permission")):
        if isinstance(value, str) and value in known:
            return known[value]
    return RepoPermission.NONE
