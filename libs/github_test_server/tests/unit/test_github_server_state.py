"""The pure parts: the store's rules, rate-limit windows, the fault plan, credentials, connection paging."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from agent_grid_github_test_server.auth import credential_of, is_app_route
from agent_grid_github_test_server.entities import Issue, IssueState, Repo, User
from agent_grid_github_test_server.errors import ApiError
from agent_grid_github_test_server.graphql_schema import connection, cursor_of
from agent_grid_github_test_server.limits import Fault, Faults, RateLimits
from agent_grid_github_test_server.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store(clock)


@pytest.fixture
def owner(store: Store) -> User:
    return store.add_user("owner")


@pytest.fixture
def repo(store: Store, owner: User) -> Repo:
    return store.add_repo(owner, "repo")


def issues(store: Store, repo: Repo, owner: User, count: int) -> list[Issue]:
    return [store.create_issue(repo, owner, title=f"Issue {n}") for n in range(count)]


def test_reprioritising_moves_a_sub_issue_before_or_after_another(store: Store, repo: Repo, owner: User) -> None:
    parent, a, b, c = issues(store, repo, owner, 4)
    for child in (a, b, c):
        store.add_sub_issue(parent, owner, child.id, replace_parent=False)

    store.reprioritize_sub_issue(parent, c.id, before_id=a.id)
    assert [i.title for i in store.sub_issues(parent)] == ["Issue 3", "Issue 1", "Issue 2"]
    store.reprioritize_sub_issue(parent, c.id, after_id=b.id)
    assert [i.title for i in store.sub_issues(parent)] == ["Issue 1", "Issue 2", "Issue 3"]
    with pytest.raises(ApiError):
        store.reprioritize_sub_issue(parent, c.id, after_id=a.id, before_id=b.id)


def test_sub_issues_refuse_cycles_and_nesting_deeper_than_eight(store: Store, repo: Repo, owner: User) -> None:
    chain = issues(store, repo, owner, 9)
    for parent, child in itertools.pairwise(chain[:7]):
        store.add_sub_issue(parent, owner, child.id, replace_parent=False)  # 7 levels
    store.add_sub_issue(chain[6], owner, chain[7].id, replace_parent=False)  # the 8th level
    with pytest.raises(ApiError, match="Validation Failed") as too_deep:
        store.add_sub_issue(chain[7], owner, chain[8].id, replace_parent=False)
    assert "8 levels" in str(too_deep.value.errors)
    with pytest.raises(ApiError) as cycle:
        store.add_sub_issue(chain[3], owner, chain[0].id, replace_parent=True)
    assert "ancestor" in str(cycle.value.errors)


def test_replacing_a_parent_records_the_removal_then_the_addition(store: Store, repo: Repo, owner: User) -> None:
    first, second, child = issues(store, repo, owner, 3)
    store.add_sub_issue(first, owner, child.id, replace_parent=False)
    store.take_changes()

    store.add_sub_issue(second, owner, child.id, replace_parent=True)

    assert [(c.action, c.issue.title) for c in store.take_changes()] == [
        ("sub_issue_removed", "Issue 0"),
        ("parent_issue_removed", "Issue 2"),
        ("sub_issue_added", "Issue 1"),
        ("parent_issue_added", "Issue 2"),
    ]
    assert store.sub_issues(first) == []


def test_a_patch_that_changes_nothing_records_nothing(store: Store, repo: Repo, owner: User, clock: Clock) -> None:
    [issue] = issues(store, repo, owner, 1)
    store.take_changes()
    clock.now += timedelta(hours=1)

    store.update_issue(issue, owner, {"title": issue.title, "state": "open", "labels": []})

    assert store.take_changes() == []
    assert issue.updated_at == datetime(2025, 1, 1, tzinfo=UTC)
    store.update_issue(issue, owner, {"state": "closed"})
    assert (issue.state, issue.state_reason, issue.updated_at) == (IssueState.CLOSED, "completed", clock.now)


def test_association_follows_ownership_membership_and_collaboration(store: Store, owner: User) -> None:
    org = store.add_user("org", type="Organization")
    member, collaborator, stranger = (store.add_user(login) for login in ("member", "collab", "stranger"))
    store.add_member(org, member)
    repo = store.add_repo(org, "r")
    store.add_collaborator(repo, collaborator)

    assert [store.association(repo, u) for u in (member, collaborator, stranger)] == ["MEMBER", "COLLABORATOR", "NONE"]
    assert store.association(store.add_repo(owner, "mine"), owner) == "OWNER"


def test_rate_limit_windows_refill_after_their_reset() -> None:
    now = [1000.0]
    limits = RateLimits(lambda: now[0], default_limit=2)
    limits.consume("t", "core")
    limits.consume("t", "core")
    assert limits.peek("t", "core").remaining == 0
    assert limits.peek("t", "graphql").remaining == 2
    now[0] += 3600
    assert limits.peek("t", "core").remaining == 2
    exhausted = limits.exhaust("t", "core", reset_in_s=5)
    assert (exhausted.remaining, exhausted.reset) == (0, 4605)


def test_faults_fire_in_order_for_matching_requests_only() -> None:
    faults = Faults()
    faults.add(Fault("error", "get", "/repos/a", 2, status=503))
    faults.add(Fault("secondary_rate_limit", None, "/", 1))

    assert faults.take("POST", "/repos/a/b").kind == "secondary_rate_limit"  # type: ignore[union-attr]
    assert faults.take("POST", "/repos/a/b") is None
    assert [faults.take("GET", "/repos/a/b").status for _ in range(2)] == [503, 503]  # type: ignore[union-attr]
    assert faults.take("GET", "/repos/a/b") is None


def test_credentials_and_app_routes() -> None:
    assert credential_of("token abc") == credential_of("Bearer abc") == credential_of("bearer  abc ") == "abc"
    assert credential_of("Basic abc") is None
    assert credential_of(None) is None
    assert is_app_route("/app/installations/1/access_tokens")
    assert is_app_route("/repos/o/r/installation")
    assert not is_app_route("/repos/o/r/issues")


def test_connections_page_forwards_and_backwards() -> None:
    class Info:
        field_name = "things"

    items = list("abcde")
    forward = connection(items, Info(), first=2, after=cursor_of(0))  # type: ignore[arg-type]
    backward = connection(items, Info(), last=2, before=cursor_of(4))  # type: ignore[arg-type]

    assert forward["nodes"] == ["b", "c"]
    assert forward["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": True,
        "startCursor": cursor_of(1),
        "endCursor": cursor_of(2),
    }
    assert backward["nodes"] == ["c", "d"]
    assert backward["totalCount"] == 5
