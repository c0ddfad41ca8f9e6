"""REST: sub-issues (ordered, one parent each) and "blocked by" dependencies between issues.

Bodies name the other issue by its REST ``id``, never by its number, as GitHub's API does. The write
endpoints answer with the issue named in the path (the parent, the blocked issue).
"""

from fastapi import APIRouter, Request, Response

from agent_grid_github_test_server.errors import invalid_field, missing_field, not_found
from agent_grid_github_test_server.http_common import (
    actor_of,
    core_of,
    json_object,
    paginate,
    reply,
    repo_of,
    require_issue_write,
)

router = APIRouter()

_SUB_ISSUES_DOCS = "https://docs.github.com/rest/issues/sub-issues"
_DEPENDENCIES_DOCS = "https://docs.github.com/rest/issues/issue-dependencies"
_ISSUE = "/repos/{owner}/{repo}/issues/{issue_number}"


@router.get(f"{_ISSUE}/sub_issues")
async def list_sub_issues(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    parent = core.store.issue(repo_of(request, owner, repo), issue_number)
    page, headers = paginate(request, core.store.sub_issues(parent))
    return reply([core.render.issue(issue) for issue in page], headers=headers)


@router.post(f"{_ISSUE}/sub_issues")
async def add_sub_issue(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    parent = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_SUB_ISSUES_DOCS}#add-sub-issue")
    body = await json_object(request)
    replace_parent = body.get("replace_parent", False)
    if not isinstance(replace_parent, bool):
        raise invalid_field("Issue", "replace_parent", str(replace_parent))
    core.store.add_sub_issue(parent, actor_of(request), _id_field(body, "sub_issue_id"), replace_parent=replace_parent)
    core.publish()
    return reply(core.render.issue(parent, single=True), 201)


@router.delete(f"{_ISSUE}/sub_issue")
async def remove_sub_issue(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    parent = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_SUB_ISSUES_DOCS}#remove-sub-issue")
    body = await json_object(request)
    core.store.remove_sub_issue(parent, actor_of(request), _id_field(body, "sub_issue_id"))
    core.publish()
    return reply(core.render.issue(parent, single=True))


@router.patch(f"{_ISSUE}/sub_issues/priority")
async def reprioritize_sub_issue(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    parent = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_SUB_ISSUES_DOCS}#reprioritize-sub-issue")
    body = await json_object(request)
    core.store.reprioritize_sub_issue(
        parent, _id_field(body, "sub_issue_id"), after_id=body.get("after_id"), before_id=body.get("before_id")
    )
    core.publish()
    return reply(core.render.issue(parent, single=True))


@router.get(f"{_ISSUE}/parent")
async def get_parent(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    parent = core.store.parent_of(issue)
    if parent is None:
        raise not_found(f"{_SUB_ISSUES_DOCS}#get-parent-issue")
    return reply(core.render.issue(parent, single=True))


@router.get(f"{_ISSUE}/dependencies/blocked_by")
async def list_blocked_by(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    page, headers = paginate(request, core.store.blocked_by(issue))
    return reply([core.render.issue(blocker) for blocker in page], headers=headers)


@router.post(f"{_ISSUE}/dependencies/blocked_by")
async def add_blocked_by(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_DEPENDENCIES_DOCS}#add-a-dependency-an-issue-is-blocked-by")
    body = await json_object(request)
    core.store.add_blocked_by(issue, actor_of(request), _id_field(body, "issue_id"))
    core.publish()
    return reply(core.render.issue(issue, single=True), 201)


@router.delete(f"{_ISSUE}/dependencies/blocked_by/{{issue_id}}")
async def remove_blocked_by(request: Request, owner: str, repo: str, issue_number: int, issue_id: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    require_issue_write(request, f"{_DEPENDENCIES_DOCS}#remove-dependency-an-issue-is-blocked-by")
    core.store.remove_blocked_by(issue, actor_of(request), issue_id)
    core.publish()
    return reply(core.render.issue(issue, single=True))


@router.get(f"{_ISSUE}/dependencies/blocking")
async def list_blocking(request: Request, owner: str, repo: str, issue_number: int) -> Response:
    core = core_of(request)
    issue = core.store.issue(repo_of(request, owner, repo), issue_number)
    page, headers = paginate(request, core.store.blocking(issue))
    return reply([core.render.issue(blocked) for blocked in page], headers=headers)


def _id_field(body: dict[str, object], name: str) -> int:
    value = body.get(name)
    if value is None:
        raise missing_field("Issue", name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_field("Issue", name, str(value))
    return value
