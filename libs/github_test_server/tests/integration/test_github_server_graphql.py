"""GraphQL: the adapter's own document (ISSUE_VIEW) runs and agrees with the REST state; cursors page;
GitHub's error shapes for unknown fields, missing issues and unbounded connections."""

from typing import Any

import httpx
import pytest
from agent_grid_github_test_server.public_models import SeededIssue
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub
from agent_grid_tracker.public_github_queries import ISSUE_VIEW, SUMMARY_FIELDS
from githubkit.exception import GraphQLFailed

from .conftest import ALICE
from .harness import githubkit_client

VIEW = {"owner": "acme", "name": "widgets"}
MORE_SUB_ISSUES = (
    """
query MoreSubIssues($owner: String!, $name: String!, $number: Int!, $after: String!) {
  repository(owner: $owner, name: $name) {
    issue(number: $number) {
      subIssues(first: 100, after: $after) { nodes { ...Summary } pageInfo { hasNextPage endCursor } }
    }
  }
}
"""
    + SUMMARY_FIELDS
)


class Tree:
    def __init__(self, github: FakeGitHub) -> None:
        def issue(title: str, **kwargs: Any) -> SeededIssue:
            return github.add_issue("acme", "widgets", title, author=kwargs.pop("author", "alice"), **kwargs)

        self.parent = issue("Parent")
        self.target = issue("Target", body="Do the thing", labels=["agent", "bug"], assignees=["alice", "bob"])
        self.children = [issue(f"Child {n}") for n in range(3)]
        self.blocker = issue("Blocker", author="carol")
        self.blocked = issue("Blocked", state="closed", state_reason="not_planned")
        github.add_sub_issue(self.parent, self.target)
        for child in self.children:
            github.add_sub_issue(self.target, child)
        github.add_blocked_by(self.target, self.blocker)
        github.add_blocked_by(self.blocked, self.target)
        for n, author in enumerate(("alice", "bob", "carol")):
            github.add_comment("acme", "widgets", self.target.number, f"Comment {n}", author=author)


@pytest.fixture
def tree(github: FakeGitHub) -> Tree:
    return Tree(github)


async def graphql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def rest(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(f"repos/acme/widgets/{path}")
    assert response.status_code == 200
    return response.json()


def summary_of(issue: dict[str, Any]) -> dict[str, Any]:
    """The adapter's ``Summary`` fragment, computed from a REST issue."""
    reason = issue["state_reason"]
    return {
        "id": issue["node_id"],
        "databaseId": issue["id"],
        "number": issue["number"],
        "title": issue["title"],
        "state": issue["state"].upper(),
        "stateReason": None if reason is None else reason.upper(),
        "url": issue["html_url"],
        "updatedAt": issue["updated_at"],
        "repository": {"nameWithOwner": "acme/widgets"},
        "assignees": {"nodes": [{"login": user["login"]} for user in issue["assignees"]]},
        "labels": {"nodes": [{"name": label["name"]} for label in issue["labels"]]},
    }


async def test_issue_view_agrees_with_the_rest_state(client: httpx.AsyncClient, tree: Tree) -> None:
    answer = await graphql(client, ISSUE_VIEW, number=tree.target.number, comments=2, **VIEW)
    assert "errors" not in answer
    view = answer["data"]["repository"]["issue"]

    target = await rest(client, f"issues/{tree.target.number}")
    assert {key: view[key] for key in summary_of(target)} == summary_of(target)
    assert (view["body"], view["createdAt"]) == (target["body"], target["created_at"])
    assert (view["author"], view["authorAssociation"]) == (
        {"__typename": "User", "login": "alice"},
        target["author_association"],
    )
    assert view["parent"] == summary_of(await rest(client, f"issues/{tree.target.number}/parent"))
    sub_issues = await rest(client, f"issues/{tree.target.number}/sub_issues")
    assert view["subIssues"]["nodes"] == [summary_of(issue) for issue in sub_issues]
    blocked_by = await rest(client, f"issues/{tree.target.number}/dependencies/blocked_by")
    assert view["blockedBy"]["nodes"] == [summary_of(issue) for issue in blocked_by] != []
    blocking = await rest(client, f"issues/{tree.target.number}/dependencies/blocking")
    assert view["blocking"]["nodes"] == [summary_of(issue) for issue in blocking] != []
    assert view["blocking"]["nodes"][0]["stateReason"] == "NOT_PLANNED"
    comments = await rest(client, f"issues/{tree.target.number}/comments")
    assert view["comments"]["nodes"] == [
        {
            "databaseId": comment["id"],
            "author": {"__typename": "User", "login": comment["user"]["login"]},
            "authorAssociation": comment["author_association"],
            "body": comment["body"],
            "createdAt": comment["created_at"],
            "updatedAt": comment["updated_at"],
            "url": comment["html_url"],
        }
        for comment in comments[-2:]
    ]
    assert [c["author"]["login"] for c in view["comments"]["nodes"]] == ["bob", "carol"]


async def test_more_sub_issues_continues_after_a_cursor_and_follows_reprioritisation(
    client: httpx.AsyncClient, tree: Tree
) -> None:
    first_page = """
    query($owner: String!, $name: String!, $number: Int!) {
      repository(owner: $owner, name: $name) {
        issue(number: $number) {
          subIssues(first: 1) { totalCount nodes { number } pageInfo { hasNextPage endCursor } }
        }
      }
    }"""
    first = (await graphql(client, first_page, number=tree.target.number, **VIEW))["data"]["repository"]["issue"]
    assert first["subIssues"]["totalCount"] == 3
    assert first["subIssues"]["pageInfo"]["hasNextPage"] is True
    after = first["subIssues"]["pageInfo"]["endCursor"]
    rest_answer = await graphql(client, MORE_SUB_ISSUES, number=tree.target.number, after=after, **VIEW)
    more = rest_answer["data"]["repository"]["issue"]["subIssues"]
    assert [node["number"] for node in more["nodes"]] == [c.number for c in tree.children[1:]]
    assert more["pageInfo"]["hasNextPage"] is False

    last, first_child = tree.children[2], tree.children[0]
    moved = await client.patch(
        f"repos/acme/widgets/issues/{tree.target.number}/sub_issues/priority",
        json={"sub_issue_id": last.id, "before_id": first_child.id},
    )
    assert moved.status_code == 200
    view = await graphql(client, ISSUE_VIEW, number=tree.target.number, comments=1, **VIEW)
    order = [node["number"] for node in view["data"]["repository"]["issue"]["subIssues"]["nodes"]]
    rest_order = [issue["number"] for issue in await rest(client, f"issues/{tree.target.number}/sub_issues")]
    assert order == rest_order == [last.number, first_child.number, tree.children[1].number]


async def test_unknown_fields_fail_validation_like_github(client: httpx.AsyncClient, tree: Tree) -> None:
    answer = await graphql(
        client,
        'query($number: Int!) { repository(owner: "acme", name: "widgets") { issue(number: $number) { nope } } }',
        number=tree.target.number,
    )

    assert "data" not in answer
    [error] = answer["errors"]
    assert error["message"] == "Field 'nope' doesn't exist on type 'Issue'"
    assert error["extensions"] == {"code": "undefinedField", "typeName": "Issue", "fieldName": "nope"}


async def test_a_missing_issue_or_repository_is_not_found(client: httpx.AsyncClient, running: RunningGitHub) -> None:
    issue = await graphql(client, ISSUE_VIEW, number=999, comments=1, **VIEW)
    repo = await graphql(client, ISSUE_VIEW, owner="acme", name="nope", number=1, comments=1)

    assert issue["data"] == {"repository": {"issue": None}}
    assert issue["errors"] == [
        {
            "type": "NOT_FOUND",
            "path": ["repository", "issue"],
            "locations": issue["errors"][0]["locations"],
            "message": "Could not resolve to an Issue with the number of 999.",
        }
    ]
    assert repo["data"] == {"repository": None}
    assert repo["errors"][0]["type"] == "NOT_FOUND"
    assert repo["errors"][0]["message"] == "Could not resolve to a Repository with the name 'acme/nope'."
    async with githubkit_client(ALICE, running.base_url) as gh:
        with pytest.raises(GraphQLFailed) as raised:
            await gh.graphql.arequest(ISSUE_VIEW, {"number": 999, "comments": 1, **VIEW})
    assert raised.value.response.errors is not None
    assert raised.value.response.errors[0].type == "NOT_FOUND"


async def test_connections_need_a_bounded_first_or_last(client: httpx.AsyncClient, tree: Tree) -> None:
    template = '{ repository(owner: "acme", name: "widgets") { issue(number: %d) { subIssues%s { totalCount } } } }'
    unbounded = await graphql(client, template % (tree.target.number, ""))
    too_many = await graphql(client, template % (tree.target.number, "(first: 101)"))

    assert unbounded["errors"][0]["message"] == (
        "You must provide a `first` or `last` value to properly paginate the `subIssues` connection."
    )
    assert too_many["errors"][0]["message"].startswith("Requesting 101 records on the `subIssues` connection")


async def test_a_bot_is_named_by_its_slug_in_graphql_and_with_bot_in_rest(
    client: httpx.AsyncClient, github: FakeGitHub, rsa_keys: tuple[str, str]
) -> None:
    app = github.add_app("agent-grid", owner="acme", public_key_pem=rsa_keys[1])
    issue = github.add_issue("acme", "widgets", "Hi", author="alice")
    github.add_comment("acme", "widgets", issue.number, "Working on it", author=app.bot_login)

    view = await graphql(client, ISSUE_VIEW, number=issue.number, comments=1, **VIEW)
    [comment] = await rest(client, f"issues/{issue.number}/comments")

    assert view["data"]["repository"]["issue"]["comments"]["nodes"][0]["author"] == {
        "__typename": "Bot",
        "login": "agent-grid",
    }
    assert (comment["user"]["login"], comment["user"]["type"]) == ("agent-grid[bot]", "Bot")


async def test_githubkit_runs_the_adapter_documents(running: RunningGitHub, tree: Tree) -> None:
    async with githubkit_client(ALICE, running.base_url) as gh:
        data = await gh.graphql.arequest(ISSUE_VIEW, {"number": tree.target.number, "comments": 10, **VIEW})

    issue = data["repository"]["issue"]
    assert issue["parent"]["number"] == tree.parent.number
    assert len(issue["comments"]["nodes"]) == 3
    assert [label["name"] for label in issue["labels"]["nodes"]] == ["agent", "bug"]
