"""Every REST endpoint over real HTTP; every answer is validated against GitHub's published description (the
``api`` fixture) and the success bodies also parse with githubkit's 2022-11-28 models."""

from datetime import UTC, datetime
from typing import Any, TypedDict

import pytest
from agent_grid_github_test_server.public_models import SeededIssue
from agent_grid_github_test_server.public_server import FakeGitHub
from githubkit_schemas.v2022_11_28.models import (
    BasicError,
    FullRepository,
    Issue,
    IssueComment,
    Label,
    LabeledIssueEvent,
    RepositoryCollaboratorPermission,
    UnlabeledIssueEvent,
    ValidationError,
    ValidationErrorSimple,
)
from pydantic import TypeAdapter

from .contract import REST_SPEC, WEBHOOK_SPEC
from .harness import Api

ISSUE = "/repos/{owner}/{repo}/issues/{issue_number}"
ISSUES = "/repos/{owner}/{repo}/issues"


class RepoPath(TypedDict):
    owner: str
    repo: str


WIDGETS = RepoPath(owner="acme", repo="widgets")


def parse[T](model: type[T], body: Any) -> T:
    return TypeAdapter(model).validate_python(body)


def seed_issue(github: FakeGitHub, title: str = "An issue", **kwargs: Any) -> SeededIssue:
    return github.add_issue("acme", "widgets", title, author=kwargs.pop("author", "alice"), **kwargs)


def test_the_published_descriptions_are_installed() -> None:
    for path in (REST_SPEC, WEBHOOK_SPEC):
        assert path.is_file(), f"{path} is missing: run `make test-fixtures`"


async def test_get_repository_for_an_organization_and_a_user(api: Api) -> None:
    org = await api.get("/repos/{owner}/{repo}", **WIDGETS)
    solo = await api.get("/repos/{owner}/{repo}", owner="bob", repo="solo")
    missing = await api.get("/repos/{owner}/{repo}", owner="acme", repo="nope")

    repo = parse(FullRepository, org.json())
    assert (repo.full_name, repo.owner.type, repo.description) == ("acme/widgets", "Organization", "Widgets")
    assert org.json()["organization"]["login"] == "acme"
    assert org.json()["permissions"]["push"] is True
    assert "organization" not in solo.json()
    assert solo.json()["owner"]["type"] == "User"
    assert missing.status_code == 404
    assert parse(BasicError, missing.json()).message == "Not Found"


async def test_create_get_and_update_an_issue(api: Api, github: FakeGitHub) -> None:
    created = await api.post(
        ISSUES,
        json={"title": "Build it", "body": "Please", "labels": ["bug"], "assignees": ["alice", "ghost"]},
        **WIDGETS,
    )
    assert created.status_code == 201
    issue = parse(Issue, created.json())
    assert (issue.title, issue.body, issue.state, issue.author_association) == ("Build it", "Please", "open", "MEMBER")
    assert [label.name for label in issue.labels if not isinstance(label, str)] == ["bug"]
    assert [user.login for user in issue.assignees or []] == ["alice"]  # unknown logins are dropped, as on GitHub
    assert issue.id != issue.number
    assert created.headers["location"].endswith("/repos/acme/widgets/issues/1")

    fetched = await api.get(ISSUE, issue_number=1, **WIDGETS)
    assert fetched.json() == created.json()

    closed = await api.patch(
        ISSUE, json={"state": "closed", "state_reason": "not_planned", "title": "Won't"}, issue_number=1, **WIDGETS
    )
    assert (closed.json()["state"], closed.json()["state_reason"], closed.json()["title"]) == (
        "closed",
        "not_planned",
        "Won't",
    )
    assert closed.json()["closed_by"]["login"] == "alice"
    assert closed.json()["closed_at"] is not None
    reopened = await api.patch(ISSUE, json={"state": "open"}, issue_number=1, **WIDGETS)
    assert (reopened.json()["state_reason"], reopened.json()["closed_at"]) == ("reopened", None)
    relabeled = await api.patch(
        ISSUE, json={"labels": ["a", {"name": "b"}], "assignees": []}, issue_number=1, **WIDGETS
    )
    assert [label["name"] for label in relabeled.json()["labels"]] == ["a", "b"]
    assert relabeled.json()["assignees"] == []
    assert relabeled.json()["assignee"] is None

    outsider = seed_issue(github, "By an outsider", author="carol")
    assert (await api.get(ISSUE, issue_number=outsider.number, **WIDGETS)).json()["author_association"] == "NONE"


async def test_issue_validation_errors_are_github_shaped(api: Api) -> None:
    no_title = await api.post(ISSUES, json={"body": "x"}, **WIDGETS)
    bad_state = await api.post(ISSUES, json={"title": "t"}, **WIDGETS)
    bad_patch = await api.patch(ISSUE, json={"state": "done"}, issue_number=bad_state.json()["number"], **WIDGETS)
    missing = await api.get(ISSUE, issue_number=999, **WIDGETS)
    not_a_number = await api.client.get("repos/acme/widgets/issues/abc")

    assert no_title.status_code == 422
    assert parse(ValidationError, no_title.json()).errors[0].code == "missing_field"  # type: ignore[index]
    assert no_title.json()["errors"] == [{"resource": "Issue", "code": "missing_field", "field": "title"}]
    assert bad_patch.status_code == 422
    assert bad_patch.json()["errors"][0]["field"] == "state"
    assert missing.status_code == 404
    assert not_a_number.status_code == 404


async def test_list_issues_filters_sorts_and_paginates_with_link_headers(api: Api, github: FakeGitHub) -> None:
    for day in range(1, 8):
        seed_issue(
            github, f"Issue {day}", created_at=datetime(2024, 1, day, tzinfo=UTC), labels=["odd"] if day % 2 else []
        )
    seed_issue(github, "Closed one", state="closed", created_at=datetime(2024, 2, 1, tzinfo=UTC))
    await api.patch(ISSUE, json={"body": "touched"}, issue_number=2, **WIDGETS)  # updated now

    default = await api.get(ISSUES, **WIDGETS)
    assert [i["number"] for i in default.json()] == [7, 6, 5, 4, 3, 2, 1]  # open, newest first
    assert "link" not in default.headers
    everything = await api.get(ISSUES, params={"state": "all", "direction": "asc"}, **WIDGETS)
    assert [i["number"] for i in everything.json()] == [1, 2, 3, 4, 5, 6, 7, 8]
    closed = await api.get(ISSUES, params={"state": "closed"}, **WIDGETS)
    assert [i["number"] for i in closed.json()] == [8]
    odd = await api.get(ISSUES, params={"labels": "odd"}, **WIDGETS)
    assert [i["number"] for i in odd.json()] == [7, 5, 3, 1]
    since = await api.get(ISSUES, params={"since": "2024-01-06T00:00:00Z", "state": "all"}, **WIDGETS)
    assert sorted(i["number"] for i in since.json()) == [2, 6, 7, 8]
    updated = await api.get(ISSUES, params={"sort": "updated", "direction": "desc"}, **WIDGETS)
    assert updated.json()[0]["number"] == 2

    first = await api.get(ISSUES, params={"per_page": 3}, **WIDGETS)
    assert [i["number"] for i in first.json()] == [7, 6, 5]
    links = first.headers["link"]
    assert 'rel="next"' in links
    assert 'rel="last"' in links
    assert 'rel="prev"' not in links
    assert "page=2" in links.split(",")[0]
    assert "per_page=3" in links
    last = await api.get(ISSUES, params={"per_page": 3, "page": 3}, **WIDGETS)
    assert [i["number"] for i in last.json()] == [1]
    assert 'rel="prev"' in last.headers["link"]
    assert 'rel="first"' in last.headers["link"]
    assert 'rel="next"' not in last.headers["link"]
    capped = await api.get(ISSUES, params={"per_page": 500}, **WIDGETS)
    assert len(capped.json()) == 7
    bad_since = await api.get(ISSUES, params={"since": "yesterday"}, **WIDGETS)
    assert bad_since.status_code == 422


async def test_comments_lifecycle_and_pagination(api: Api, github: FakeGitHub) -> None:
    issue = seed_issue(github)
    comments = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
    comment = "/repos/{owner}/{repo}/issues/comments/{comment_id}"
    github.add_comment(
        "acme", "widgets", issue.number, "old", author="bob", created_at=datetime(2024, 1, 1, tzinfo=UTC)
    )

    created = await api.post(comments, json={"body": "Hello"}, issue_number=issue.number, **WIDGETS)
    assert created.status_code == 201
    parsed = parse(IssueComment, created.json())
    assert (parsed.body, parsed.user.login, parsed.author_association) == ("Hello", "alice", "MEMBER")  # type: ignore[union-attr]
    assert parsed.issue_url.endswith(f"/issues/{issue.number}")

    listed = await api.get(comments, issue_number=issue.number, **WIDGETS)
    assert [c["body"] for c in listed.json()] == ["old", "Hello"]
    paged = await api.get(comments, params={"per_page": 1}, issue_number=issue.number, **WIDGETS)
    assert [c["body"] for c in paged.json()] == ["old"]
    assert 'rel="next"' in paged.headers["link"]
    recent = await api.get(comments, params={"since": "2025-01-01T00:00:00Z"}, issue_number=issue.number, **WIDGETS)
    assert [c["body"] for c in recent.json()] == ["Hello"]
    assert (await api.get(ISSUE, issue_number=issue.number, **WIDGETS)).json()["comments"] == 2

    comment_id = created.json()["id"]
    assert (await api.get(comment, comment_id=comment_id, **WIDGETS)).json() == created.json()
    edited = await api.patch(comment, json={"body": "Hello again"}, comment_id=comment_id, **WIDGETS)
    assert edited.json()["body"] == "Hello again"
    assert (await api.delete(comment, comment_id=comment_id, **WIDGETS)).status_code == 204
    assert (await api.get(comment, comment_id=comment_id, **WIDGETS)).status_code == 404
    empty = await api.post(comments, json={"body": ""}, issue_number=issue.number, **WIDGETS)
    assert empty.status_code == 422


async def test_labels_are_added_replaced_listed_and_removed(api: Api, github: FakeGitHub) -> None:
    issue = seed_issue(github, labels=["bug"])
    labels = "/repos/{owner}/{repo}/issues/{issue_number}/labels"
    one = "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}"

    added = await api.post(labels, json={"labels": ["agent", "Bug"]}, issue_number=issue.number, **WIDGETS)
    assert [parse(Label, label).name for label in added.json()] == ["bug", "agent"]  # names match case-insensitively
    assert added.json()[1]["color"] == "ededed"  # created on the fly, as GitHub does
    replaced = await api.call("PUT", labels, json={"labels": ["x"]}, issue_number=issue.number, **WIDGETS)
    assert [label["name"] for label in replaced.json()] == ["x"]
    bare = await api.post(labels, json=["y"], issue_number=issue.number, **WIDGETS)
    assert [label["name"] for label in bare.json()] == ["x", "y"]
    assert [label["name"] for label in (await api.get(labels, issue_number=issue.number, **WIDGETS)).json()] == [
        "x",
        "y",
    ]

    removed = await api.delete(one, issue_number=issue.number, name="x", **WIDGETS)
    assert [label["name"] for label in removed.json()] == ["y"]
    absent = await api.delete(one, issue_number=issue.number, name="x", **WIDGETS)
    assert absent.status_code == 404
    assert absent.json()["message"] == "Label does not exist"


async def test_assignees_are_added_and_removed(api: Api, github: FakeGitHub) -> None:
    issue = seed_issue(github)
    assignees = "/repos/{owner}/{repo}/issues/{issue_number}/assignees"

    added = await api.post(
        assignees, json={"assignees": ["bob", "alice", "nobody"]}, issue_number=issue.number, **WIDGETS
    )
    assert added.status_code == 201
    assert [u["login"] for u in parse(Issue, added.json()).model_dump()["assignees"]] == ["bob", "alice"]
    removed = await api.delete(assignees, json={"assignees": ["bob"]}, issue_number=issue.number, **WIDGETS)
    assert removed.status_code == 200
    assert [u["login"] for u in removed.json()["assignees"]] == ["alice"]
    assert removed.json()["assignee"]["login"] == "alice"


async def test_an_issue_s_events_say_who_added_and_removed_each_label(api: Api, github: FakeGitHub) -> None:
    issue = seed_issue(github, labels=["bug"])  # labels given at creation: added by the author
    github.add_member("acme", "bob")
    github.label_issue("acme", "widgets", issue.number, ["agent-grid"], actor="bob")
    events = "/repos/{owner}/{repo}/issues/{issue_number}/events"
    await api.delete(
        "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}", issue_number=issue.number, name="bug", **WIDGETS
    )

    listed = await api.get(events, issue_number=issue.number, **WIDGETS)
    parsed = [
        parse(LabeledIssueEvent, event) if event["event"] == "labeled" else parse(UnlabeledIssueEvent, event)
        for event in listed.json()
    ]
    assert [(e.event, e.label.name, e.actor.login) for e in parsed] == [
        ("labeled", "bug", "alice"),
        ("labeled", "agent-grid", "bob"),
        ("unlabeled", "bug", "alice"),
    ]
    assert parsed[0].created_at <= parsed[-1].created_at  # oldest first
    first_page = await api.get(events, issue_number=issue.number, params={"per_page": 2}, **WIDGETS)
    assert len(first_page.json()) == 2
    assert 'rel="next"' in first_page.headers["link"]


async def test_a_user_s_permission_on_a_repository_by_role(api: Api, github: FakeGitHub) -> None:
    github.add_collaborator("acme", "widgets", "carol", role="triage")
    permission = "/repos/{owner}/{repo}/collaborators/{username}/permission"
    answers = {}
    for login in ("alice", "bob", "carol"):
        response = await api.get(permission, username=login, **WIDGETS)
        parsed = parse(RepositoryCollaboratorPermission, response.json())
        assert parsed.user is not None
        answers[login] = (parsed.permission, parsed.role_name, parsed.user.login)
    assert answers == {
        "alice": ("write", "write", "alice"),  # an organization member
        "bob": ("read", "read", "bob"),  # no grant: a public repository is readable by anyone
        "carol": ("read", "triage", "carol"),  # triage reads as read in the legacy field
    }
    owner = await api.get(permission, username="bob", owner="bob", repo="solo")
    assert owner.json()["permission"] == "admin"
    missing = await api.get(permission, username="nobody", **WIDGETS)
    assert missing.status_code == 404


async def test_sub_issues_by_id_with_order_parent_and_summary(api: Api, github: FakeGitHub) -> None:
    parent, a, b, c = (seed_issue(github, title) for title in ("Parent", "A", "B", "C"))
    other_parent = seed_issue(github, "Other parent")
    sub_issues = "/repos/{owner}/{repo}/issues/{issue_number}/sub_issues"
    on_parent = {"issue_number": parent.number, **WIDGETS}

    for child in (a, b, c):
        added = await api.post(sub_issues, json={"sub_issue_id": child.id}, **on_parent)
        assert added.status_code == 201
    assert added.json()["number"] == parent.number
    assert added.json()["sub_issues_summary"] == {"total": 3, "completed": 0, "percent_completed": 0}
    by_number = await api.post(sub_issues, json={"sub_issue_id": other_parent.number}, **on_parent)
    assert by_number.status_code == 404  # a number is not an id

    listed = await api.get(sub_issues, **on_parent)
    assert [i["title"] for i in listed.json()] == ["A", "B", "C"]
    assert all(i["parent_issue_url"].endswith(f"/issues/{parent.number}") for i in listed.json())
    in_list = {i["number"]: i for i in (await api.get(ISSUES, **WIDGETS)).json()}
    assert in_list[a.number]["parent_issue_url"].endswith(f"/issues/{parent.number}")
    assert "parent_issue_url" not in in_list[parent.number]

    taken = await api.post(sub_issues, json={"sub_issue_id": a.id}, issue_number=other_parent.number, **WIDGETS)
    assert taken.status_code == 422
    assert parse(ValidationError, taken.json()).message == "Validation Failed"
    moved = await api.post(
        sub_issues, json={"sub_issue_id": a.id, "replace_parent": True}, issue_number=other_parent.number, **WIDGETS
    )
    assert moved.status_code == 201
    cycle = await api.post(sub_issues, json={"sub_issue_id": other_parent.id}, issue_number=a.number, **WIDGETS)
    assert cycle.status_code == 422

    priority = "/repos/{owner}/{repo}/issues/{issue_number}/sub_issues/priority"
    await api.post(sub_issues, json={"sub_issue_id": a.id, "replace_parent": True}, **on_parent)  # B, C, A
    first = await api.patch(priority, json={"sub_issue_id": a.id, "before_id": b.id}, **on_parent)
    assert first.status_code == 200
    after = await api.patch(priority, json={"sub_issue_id": b.id, "after_id": c.id}, **on_parent)
    assert after.status_code == 200
    assert [i["title"] for i in (await api.get(sub_issues, **on_parent)).json()] == ["A", "C", "B"]
    neither = await api.patch(priority, json={"sub_issue_id": b.id}, **on_parent)
    assert neither.status_code == 422
    assert parse(ValidationErrorSimple, neither.json()).errors

    parent_of = "/repos/{owner}/{repo}/issues/{issue_number}/parent"
    assert (await api.get(parent_of, issue_number=c.number, **WIDGETS)).json()["number"] == parent.number
    assert (await api.get(parent_of, issue_number=parent.number, **WIDGETS)).status_code == 404

    await api.patch(ISSUE, json={"state": "closed"}, issue_number=c.number, **WIDGETS)
    summary = (await api.get(ISSUE, **on_parent)).json()["sub_issues_summary"]
    assert summary == {"total": 3, "completed": 1, "percent_completed": 33}

    removed = await api.delete(
        "/repos/{owner}/{repo}/issues/{issue_number}/sub_issue", json={"sub_issue_id": c.id}, **on_parent
    )
    assert removed.status_code == 200
    assert removed.json()["sub_issues_summary"]["total"] == 2
    assert (await api.get(parent_of, issue_number=c.number, **WIDGETS)).status_code == 404
    again = await api.delete(
        "/repos/{owner}/{repo}/issues/{issue_number}/sub_issue", json={"sub_issue_id": c.id}, **on_parent
    )
    assert again.status_code == 404


async def test_blocked_by_dependencies(api: Api, github: FakeGitHub) -> None:
    blocked, blocker, other = (seed_issue(github, title) for title in ("Blocked", "Blocker", "Other"))
    blocked_by = "/repos/{owner}/{repo}/issues/{issue_number}/dependencies/blocked_by"
    blocking = "/repos/{owner}/{repo}/issues/{issue_number}/dependencies/blocking"

    added = await api.post(blocked_by, json={"issue_id": blocker.id}, issue_number=blocked.number, **WIDGETS)
    assert added.status_code == 201
    assert added.json()["issue_dependencies_summary"] == {
        "blocked_by": 1,
        "blocking": 0,
        "total_blocked_by": 1,
        "total_blocking": 0,
    }
    await api.post(blocked_by, json={"issue_id": other.id}, issue_number=blocked.number, **WIDGETS)
    listed = await api.get(blocked_by, issue_number=blocked.number, **WIDGETS)
    assert [i["title"] for i in listed.json()] == ["Blocker", "Other"]
    assert [i["title"] for i in (await api.get(blocking, issue_number=blocker.number, **WIDGETS)).json()] == ["Blocked"]

    itself = await api.post(blocked_by, json={"issue_id": blocked.id}, issue_number=blocked.number, **WIDGETS)
    assert itself.status_code == 422
    duplicate = await api.post(blocked_by, json={"issue_id": blocker.id}, issue_number=blocked.number, **WIDGETS)
    assert duplicate.status_code == 422
    unknown = await api.post(blocked_by, json={"issue_id": 424242}, issue_number=blocked.number, **WIDGETS)
    assert unknown.status_code == 404

    await api.patch(ISSUE, json={"state": "closed"}, issue_number=blocker.number, **WIDGETS)
    summary = (await api.get(ISSUE, issue_number=blocked.number, **WIDGETS)).json()["issue_dependencies_summary"]
    assert (summary["blocked_by"], summary["total_blocked_by"]) == (1, 2)  # only open blockers block

    one = "/repos/{owner}/{repo}/issues/{issue_number}/dependencies/blocked_by/{issue_id}"
    removed = await api.delete(one, issue_number=blocked.number, issue_id=blocker.id, **WIDGETS)
    assert removed.status_code == 200
    assert [i["title"] for i in (await api.get(blocked_by, issue_number=blocked.number, **WIDGETS)).json()] == ["Other"]
    gone = await api.delete(one, issue_number=blocked.number, issue_id=blocker.id, **WIDGETS)
    assert gone.status_code == 404


@pytest.mark.parametrize("header", ["token nope", "Bearer nope", None])
async def test_unknown_or_missing_credentials_answer_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    if header is None:
        api.client.headers.pop("Authorization")
    answer = await api.get("/repos/{owner}/{repo}", headers=headers, **WIDGETS)

    assert answer.status_code == 401
    expected = "Requires authentication" if header is None else "Bad credentials"
    assert parse(BasicError, answer.json()).message == expected
