"""A faithful subset of GitHub's public GraphQL schema: repositories, issues and their neighbourhood.

Type, field, argument and enum names are GitHub's, so a document that runs here runs against GitHub (for
these fields). Connections follow GitHub's rules: ``first`` or ``last`` is required and capped at 100.
"""

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, GraphQLObjectType, GraphQLResolveInfo, GraphQLSchema, build_schema

from agent_grid_github_test_server.core import Core
from agent_grid_github_test_server.entities import Comment, Issue, IssueState, Label, Repo, Token, User
from agent_grid_github_test_server.graphql_sdl import SDL
from agent_grid_github_test_server.render import node_id, timestamp

MAX_PAGE = 100
_CURSOR_PREFIX = "cursor:v2:"


@dataclass(frozen=True)
class GraphContext:
    core: Core
    token: Token


type Info = GraphQLResolveInfo[GraphContext]


class NotFound(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"type": "NOT_FOUND"})


def cursor_of(offset: int) -> str:
    return base64.b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode()


def _offset_of(cursor: str) -> int:
    try:
        decoded = base64.b64decode(cursor, validate=True).decode()
        if not decoded.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        return int(decoded.removeprefix(_CURSOR_PREFIX))
    except ValueError:
        raise GraphQLError(f"`{cursor}` does not appear to be a valid cursor.") from None


def connection(items: Sequence[object], info: Info, **args: Any) -> dict[str, object]:
    """Relay pagination with GitHub's boundary rules; cursors encode positions in ``items``."""
    first, last = args.get("first"), args.get("last")
    name = info.field_name
    if first is None and last is None:
        raise GraphQLError(f"You must provide a `first` or `last` value to properly paginate the `{name}` connection.")
    for bound, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise GraphQLError(
                f"Requesting {value} records on the `{name}` connection exceeds the `{bound}` limit of {MAX_PAGE} "
                "records."
            )
    start = _offset_of(args["after"]) + 1 if args.get("after") else 0
    end = _offset_of(args["before"]) if args.get("before") else len(items)
    window = list(range(max(start, 0), min(end, len(items))))
    has_next = end < len(items)
    has_previous = start > 0
    if first is not None and len(window) > first:
        window, has_next = window[:first], True
    if last is not None and len(window) > last:
        window, has_previous = window[len(window) - last :], True
    return {
        "edges": [{"cursor": cursor_of(i), "node": items[i]} for i in window],
        "nodes": [items[i] for i in window],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": cursor_of(window[0]) if window else None,
            "endCursor": cursor_of(window[-1]) if window else None,
        },
        "totalCount": len(items),
    }


def _ctx(info: Info) -> GraphContext:
    return info.context


def _web(info: Info) -> str:
    return _ctx(info).core.render.urls.web


# Query


def _repository(_: None, info: Info, owner: str, name: str, **_args: Any) -> Repo:
    store = _ctx(info).core.store
    found = store.repos.get((owner.lower(), name.lower()))
    if found is None or not _ctx(info).token.can_see(found):
        raise NotFound(f"Could not resolve to a Repository with the name '{owner}/{name}'.")
    return found


def _viewer(_: None, info: Info) -> User:
    return _ctx(info).token.user


# Repository


def _repo_issue(repo: Repo, _info: Info, number: int) -> Issue:
    found = repo.issues.get(number)
    if found is None:
        raise NotFound(f"Could not resolve to an Issue with the number of {number}.")
    return found


def _repo_issues(repo: Repo, info: Info, **args: Any) -> dict[str, object]:
    states = {state.lower() for state in args.get("states") or ("OPEN", "CLOSED")}
    wanted = {label.lower() for label in args.get("labels") or ()}
    issues = [
        issue
        for issue in sorted(repo.issues.values(), key=lambda i: i.number)
        if issue.state.value in states and (not wanted or wanted & {lbl.name.lower() for lbl in issue.labels})
    ]
    return connection(issues, info, **args)


# Issue


def _issue_field(issue: Issue, info: Info) -> object:  # noqa: C901 - one flat field table
    store = _ctx(info).core.store
    render = _ctx(info).core.render
    match info.field_name:
        case "id":
            return node_id("Issue", issue.id)
        case "databaseId":
            return issue.id
        case "number":
            return issue.number
        case "title":
            return issue.title
        case "body":
            return issue.body or ""
        case "state":
            return issue.state.value.upper()
        case "stateReason":
            return None if issue.state_reason is None else issue.state_reason.value.upper()
        case "closed":
            return issue.state == IssueState.CLOSED
        case "url":
            return render.urls.issue_html(issue)
        case "resourcePath":
            return f"/{issue.repo.full_name}/issues/{issue.number}"
        case "createdAt":
            return timestamp(issue.created_at)
        case "updatedAt":
            return timestamp(issue.updated_at)
        case "closedAt":
            return timestamp(issue.closed_at)
        case "author":
            return issue.user
        case "authorAssociation":
            return store.association_of(issue)
        case "parent":
            return store.parent_of(issue)
        case "repository":
            return issue.repo
        case "subIssuesSummary":
            summary = render.sub_issues_summary(issue)
            return {
                "total": summary["total"],
                "completed": summary["completed"],
                "percentCompleted": summary["percent_completed"],
            }
        case "issueDependenciesSummary":
            deps = render.dependencies_summary(issue)
            return {
                "blockedBy": deps["blocked_by"],
                "blocking": deps["blocking"],
                "totalBlockedBy": deps["total_blocked_by"],
                "totalBlocking": deps["total_blocking"],
            }
    raise GraphQLError(f"Field '{info.field_name}' doesn't exist on type 'Issue'")


def _issue_connection(select: Callable[[Core, Issue], Sequence[object]]) -> Callable[..., dict[str, object]]:
    def resolve(issue: Issue, info: Info, **args: Any) -> dict[str, object]:
        return connection(select(_ctx(info).core, issue), info, **args)

    return resolve


# Actors, comments, labels


def _actor_field(user: User, info: Info, **_args: Any) -> object:
    web = _web(info)
    type_name = user.type
    match info.field_name:
        case "id":
            return node_id(type_name, user.id)
        case "databaseId":
            return user.id
        case "login":
            # GraphQL names an app's bot by its slug ("agent-grid"); REST says "agent-grid[bot]".
            return user.login.removesuffix("[bot]") if user.type == "Bot" else user.login
        case "name":
            return user.name
        case "avatarUrl":
            return f"{web}avatars/u/{user.id}?v=4"
        case "resourcePath":
            return f"/apps/{user.login.removesuffix('[bot]')}" if user.type == "Bot" else f"/{user.login}"
        case "url":
            path = f"apps/{user.login.removesuffix('[bot]')}" if user.type == "Bot" else user.login
            return f"{web}{path}"
    raise GraphQLError(f"Field '{info.field_name}' doesn't exist on type '{type_name}'")


def _actor_type(user: User, *_: Any) -> str:
    return user.type


def _comment_field(comment: Comment, info: Info) -> object:
    core = _ctx(info).core
    match info.field_name:
        case "id":
            return node_id("IssueComment", comment.id)
        case "databaseId":
            return comment.id
        case "author":
            return comment.user
        case "authorAssociation":
            return comment.author_association or core.store.association(comment.issue.repo, comment.user)
        case "body":
            return comment.body
        case "createdAt":
            return timestamp(comment.created_at)
        case "updatedAt":
            return timestamp(comment.updated_at)
        case "url":
            return f"{core.render.urls.issue_html(comment.issue)}#issuecomment-{comment.id}"
        case "issue":
            return comment.issue
        case "repository":
            return comment.issue.repo
    raise GraphQLError(f"Field '{info.field_name}' doesn't exist on type 'IssueComment'")


def _label_field(label: Label, info: Info) -> object:
    match info.field_name:
        case "id":
            return node_id("Label", label.id)
        case "name":
            return label.name
        case "color":
            return label.color
        case "description":
            return label.description
        case "url":
            return f"{_web(info)}labels/{label.name}"
    raise GraphQLError(f"Field '{info.field_name}' doesn't exist on type 'Label'")


def _repo_field(repo: Repo, info: Info) -> object:
    match info.field_name:
        case "id":
            return node_id("Repository", repo.id)
        case "databaseId":
            return repo.id
        case "name":
            return repo.name
        case "nameWithOwner":
            return repo.full_name
        case "owner":
            return repo.owner
        case "isPrivate":
            return repo.private
        case "resourcePath":
            return f"/{repo.full_name}"
        case "url":
            return f"{_web(info)}{repo.full_name}"
    raise GraphQLError(f"Field '{info.field_name}' doesn't exist on type 'Repository'")


def build() -> GraphQLSchema:
    schema = build_schema(SDL)

    def fields(type_name: str, resolver: Callable[..., object], *names: str) -> None:
        object_type = schema.type_map[type_name]
        assert isinstance(object_type, GraphQLObjectType)
        for name in names or tuple(object_type.fields):
            object_type.fields[name].resolve = resolver

    fields("Query", _repository, "repository")
    fields("Query", _viewer, "viewer")
    fields("Repository", _repo_field)
    fields("Repository", _repo_issue, "issue")
    fields("Repository", _repo_issues, "issues")
    fields("Issue", _issue_field)
    fields("Issue", _issue_connection(lambda _, issue: issue.assignees), "assignees")
    fields("Issue", _issue_connection(lambda _, issue: issue.labels), "labels")
    fields("Issue", _issue_connection(lambda _, issue: issue.comments), "comments")
    fields("Issue", _issue_connection(lambda core, issue: core.store.sub_issues(issue)), "subIssues")
    fields("Issue", _issue_connection(lambda core, issue: core.store.blocked_by(issue)), "blockedBy")
    fields("Issue", _issue_connection(lambda core, issue: core.store.blocking(issue)), "blocking")
    fields("IssueComment", _comment_field)
    fields("Label", _label_field)
    for type_name in ("User", "Bot", "Organization"):
        fields(type_name, _actor_field)
    for interface in ("Actor", "RepositoryOwner"):
        schema.type_map[interface].resolve_type = _actor_type  # type: ignore[attr-defined]
    return schema


SCHEMA = build()
