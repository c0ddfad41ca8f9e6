"""REST: the repository, its issues, comments, labels and assignees (API version 2022-11-28)."""

from fastapi import APIRouter, Request, Response

from agent_grid_github_test_server.errors import not_found
from agent_grid_github_test_server.http_common import (
    actor_of,
    caller_of,
    choice_param,
    core_of,
    json_object,
    json_value,
    paginate,
    reply,
    repo_of,
    require_issue_write,
    since_param,
)

router = APIRouter()

_ISSUES_DOCS = "https://docs.github.com/rest/issues/issues"
_COMMENTS_DOCS = "https://docs.github.com/rest/issues/comments"
_LABELS_DOCS = "https://docs.github.com/rest/issues/labels"
_ASSIGNEES_DOCS = "https://docs.github.com/rest/issues/assignees"
_COLLABORATORS_DOCS = "https://docs.github.com/rest/collaborators/collaborators"


@router.get("/repos/{owner}/{repo}")
async def get_repository(request: Request, owner: str, repo: str) -> Response:
    core = core_of(request)
    token = caller_of(request).token
    viewer = None if token is None else token.user
    return reply(core.render.repository(repo_of(request, owner, repo), full=True, viewer=viewer))


@router.get("/repos/{owner}/{repo}/issues")
async def list_issues(request: Request, owner: str, repo: str) -> Response:
    core = core_of(request)
    params = request.query_params
    labels = [name.strip() for name in params.get("labels", "").split(",") if name.strip()]
    issues = core.store.list_issues(
        repo_of(request, owner, repo),
        state=choice_param(request, "state", ("open", "closed", "all"), "open"),
        since=since_param(request, "Issue"),
        sort=choice_param(request, "sort", ("created", "updated", "comments"), "created"),
        direction=choice_param(request, "direction", ("asc", "desc"), "desc"),
        labels=labels,
        assignee=params.get("assignee"),
        creator=params.get("creator"),
    )
    page, headers = paginate(request, issues)
    return reply([core.render.issue(issue) for issue in page], headers=headers)


@router.post("/repos/{owner}/{repo}/issues")
async def create_issue(request: Request, owner: str, repo: str) -> Response:
    core = core_of(request)
    target = repo_of(request, owner, repo)
    require_issue_write(request, f"{_ISSUES_DOCS}#create-an-issue")
    body = await json_object(request)
    actor = actor_of(request)
    issue = core.store.create_issue(
        target,
        actor,
        title=body.get("title"),
        body=body.get("body"),
        labels=body.get("labels"),
        assignees=body.get("assignees") if "assignees" in body else [body["assignee"]] if body.get("assignee") else [],
    )
    core.publish()
    return reply(core.render.issue(issue, single=True), 201, {"location": core.render.urls.issue(issue)})


@router.get("/repos/{owner}/{repo}/issues/{issue_number}")
async def get_issue(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    return reply(core.render.issue(issue, single=True))


@router.patch("/repos/{owner}/{repo}/issues/{issue_number}")
async def update_issue(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_ISSUES_DOCS}#update-an-issue")
    fields = await json_object(request)
    editable = ("title", "body", "state", "state_reason", "labels", "assignees", "assignee")
    core.store.update_issue(issue, actor_of(request), {k: v for k, v in fields.items() if k in editable})
    core.publish()
    return reply(core.render.issue(issue, single=True))


# comments


@router.get("/repos/{owner}/{repo}/issues/{issue_number}/comments")
async def list_comments(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    comments = core.store.list_comments(issue, since=since_param(request, "IssueComment"))
    page, headers = paginate(request, comments)
    return reply([core.render.comment(comment) for comment in page], headers=headers)


@router.post("/repos/{owner}/{repo}/issues/{issue_number}/comments")
async def create_comment(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_COMMENTS_DOCS}#create-an-issue-comment")
    body = await json_object(request)
    actor = actor_of(request)
    comment = core.store.create_comment(issue, actor, body.get("body"))
    core.publish()
    rendered = core.render.comment(comment)
    return reply(rendered, 201, {"location": str(rendered["url"])})


@router.get("/repos/{owner}/{repo}/issues/comments/{comment_id}")
async def get_comment(request: Request, owner: str, repo: str, comment_id: int) -> Response:
    core = core_of(request)
    return reply(core.render.comment(core.store.comment(repo_of(request, owner, repo), comment_id)))


@router.patch("/repos/{owner}/{repo}/issues/comments/{comment_id}")
async def update_comment(request: Request, owner: str, repo: str, comment_id: int) -> Response:
    core = core_of(request)
    comment = core.store.comment(repo_of(request, owner, repo), comment_id)
    require_issue_write(request, f"{_COMMENTS_DOCS}#update-an-issue-comment")
    body = await json_object(request)
    core.store.update_comment(comment, actor_of(request), body.get("body"))
    core.publish()
    return reply(core.render.comment(comment))


@router.delete("/repos/{owner}/{repo}/issues/comments/{comment_id}")
async def delete_comment(request: Request, owner: str, repo: str, comment_id: int) -> Response:
    core = core_of(request)
    comment = core.store.comment(repo_of(request, owner, repo), comment_id)
    require_issue_write(request, f"{_COMMENTS_DOCS}#delete-an-issue-comment")
    core.store.delete_comment(comment, actor_of(request))
    core.publish()
    return Response(status_code=204)


# labels


@router.get("/repos/{owner}/{repo}/issues/{issue_number}/labels")
async def list_labels(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    page, headers = paginate(request, issue.labels)
    return reply([core.render.label(issue.repo, label) for label in page], headers=headers)


@router.post("/repos/{owner}/{repo}/issues/{issue_number}/labels")
@router.put("/repos/{owner}/{repo}/issues/{issue_number}/labels")
async def add_or_set_labels(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_LABELS_DOCS}#add-labels-to-an-issue")
    # GitHub accepts {"labels": [...]}, a bare array, or {"labels": [{"name": ...}]}.
    body = await json_value(request)
    names = body.get("labels", []) if isinstance(body, dict) else body
    if request.method == "PUT":
        labels = core.store.set_labels(issue, actor_of(request), names)
    else:
        labels = core.store.add_labels(issue, actor_of(request), names)
    core.publish()
    return reply([core.render.label(issue.repo, label) for label in labels])


@router.delete("/repos/{owner}/{repo}/issues/{issue_number}/labels/{name:path}")
async def remove_label(request: Request, owner: str, repo: str, issue_number: int, name: str) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_LABELS_DOCS}#remove-a-label-from-an-issue")
    labels = core.store.remove_label(issue, actor_of(request), name)
    core.publish()
    return reply([core.render.label(issue.repo, label) for label in labels])


# assignees


@router.post("/repos/{owner}/{repo}/issues/{issue_number}/assignees")
async def add_assignees(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_ASSIGNEES_DOCS}#add-assignees-to-an-issue")
    body = await json_object(request)
    core.store.add_assignees(issue, actor_of(request), body.get("assignees", []))
    core.publish()
    return reply(core.render.issue(issue, single=True), 201)


@router.delete("/repos/{owner}/{repo}/issues/{issue_number}/assignees")
async def remove_assignees(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_ASSIGNEES_DOCS}#remove-assignees-from-an-issue")
    body = await json_object(request, required=False)
    core.store.remove_assignees(issue, actor_of(request), body.get("assignees", []))
    core.publish()
    return reply(core.render.issue(issue, single=True))


# events and permissions


@router.get("/repos/{owner}/{repo}/issues/{issue_number}/events")
async def list_issue_events(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    page, headers = paginate(request, issue.events)
    return reply([core.render.issue_event(issue, event) for event in page], headers=headers)


@router.get("/repos/{owner}/{repo}/collaborators/{username}/permission")
async def get_collaborator_permission(request: Request, owner: str, repo: str, username: str) -> Response:
    core = core_of(request)
    target = repo_of(request, owner, repo)
    user = core.store.users.get(username.lower())
    if user is None:
        raise not_found(f"{_COLLABORATORS_DOCS}#get-repository-permissions-for-a-user")
    return reply(core.render.collaborator_permission(target, user))
