"""The GitHub adapter against the stateful GitHub test server over real HTTP on 127.0.0.1."""

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from agent_grid_contracts.public_issues import AuthorAssociation, IssueRef
from agent_grid_github_test_server.public_models import SeededIssue
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub, serve_github
from agent_grid_tracker.body_blocks import block_markers
from agent_grid_tracker.public_github import GitHubAppSettings, GitHubSettings, GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import (
    CloseReason,
    Comment,
    IssueNotFound,
    IssueState,
    NewIssue,
    PollCursor,
    RateLimited,
    RepoPermission,
    TrackerUnavailable,
    sticky_marker,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

REPO = "octo/widgets"


@dataclass
class Hub:
    running: RunningGitHub
    token: str

    @property
    def github(self) -> FakeGitHub:
        return self.running.github

    def settings(self, **overrides: object) -> GitHubSettings:
        fields: dict[str, object] = {
            "api_url": self.running.base_url,
            "login": "alice",
            "token": SecretStr(self.token),
            "write_interval_s": 0,
            "retry_backoff_cap_s": 0.2,
        }
        return GitHubSettings.model_validate(fields | overrides)

    def ref(self, issue: SeededIssue) -> IssueRef:
        return IssueRef(repo=f"{issue.owner}/{issue.repo}", number=issue.number)

    def writes(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.github.requests if r.method in {"POST", "PATCH", "PUT", "DELETE"}]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    github = FakeGitHub()
    github.add_user("alice")
    github.add_user("bob")
    github.add_organization("octo", members=["alice"])
    github.add_repo("octo", "widgets")
    token = github.add_token("alice")
    async with serve_github(github) as running:
        yield Hub(running, token)


@pytest.fixture
async def tracker(hub: Hub) -> AsyncIterator[GitHubTracker]:
    async with open_github_tracker(hub.settings()) as opened:
        yield opened


async def test_view_returns_the_whole_neighbourhood_in_one_request(hub: Hub, tracker: GitHubTracker) -> None:
    github = hub.github
    parent = github.add_issue("octo", "widgets", "Epic", author="alice", body="The big one")
    children = [github.add_issue("octo", "widgets", f"Step {n}", author="alice") for n in (1, 2, 3)]
    for child in children:
        github.add_sub_issue(parent, child)
    github.add_blocked_by(children[1], children[0])
    for n in range(5):
        github.add_comment("octo", "widgets", children[1].number, f"note {n}", author="bob")
    github.clear_requests()

    view = await tracker.view(hub.ref(children[1]), comments=3)

    assert [r.path for r in github.requests] == ["/graphql"]
    assert view.issue.title == "Step 2"
    assert view.issue.author == "alice"
    assert view.issue.author_association is AuthorAssociation.MEMBER
    assert view.issue.id == children[1].id
    assert view.issue.ref.node_id == children[1].node_id
    assert view.parent is not None
    assert view.parent.ref.number == parent.number
    assert [c.ref.number for c in view.blocked_by] == [children[0].number]
    assert [c.body for c in view.comments] == ["note 2", "note 3", "note 4"]  # the latest, oldest first
    assert {c.author for c in view.comments} == {"bob"}

    parent_view = await tracker.view(hub.ref(parent))
    assert [c.ref.number for c in parent_view.children] == [c.number for c in children]
    assert parent_view.issue.body == "The big one"
    blocker_view = await tracker.view(hub.ref(children[0]))
    assert [c.ref.number for c in blocker_view.blocking] == [children[1].number]


async def test_a_parent_with_githubs_maximum_of_sub_issues_is_read_whole(hub: Hub, tracker: GitHubTracker) -> None:
    github = hub.github
    parent = github.add_issue("octo", "widgets", "Wide", author="alice")
    children = [github.add_issue("octo", "widgets", f"Leaf {n}", author="alice") for n in range(100)]
    for child in children:
        github.add_sub_issue(parent, child)

    view = await tracker.view(hub.ref(parent))

    assert [c.ref.number for c in view.children] == [c.number for c in children]


async def test_a_sub_issue_is_attached_by_its_id_not_its_number(hub: Hub, tracker: GitHubTracker) -> None:
    parent = hub.github.add_issue("octo", "widgets", "Parent", author="alice")
    hub.github.clear_requests()

    child = await tracker.create_sub_issue(hub.ref(parent), NewIssue(title="Child", body="do it", labels=("agent",)))

    attach = next(r for r in hub.github.requests if r.path.endswith("/sub_issues"))
    assert attach.json() == {"sub_issue_id": child.id}
    assert child.id != child.ref.number
    view = await tracker.view(hub.ref(parent))
    assert [c.ref.number for c in view.children] == [child.ref.number]
    assert view.children[0].labels == ("agent",)


async def test_dependencies_are_added_and_removed_idempotently(hub: Hub, tracker: GitHubTracker) -> None:
    first = hub.github.add_issue("octo", "widgets", "First", author="alice")
    second = hub.github.add_issue("octo", "widgets", "Second", author="alice")

    await tracker.add_blocked_by(hub.ref(second), hub.ref(first))
    assert [b.ref.number for b in (await tracker.view(hub.ref(second))).blocked_by] == [first.number]

    await tracker.remove_blocked_by(hub.ref(second), hub.ref(first))
    await tracker.remove_blocked_by(hub.ref(second), hub.ref(first))  # already gone: no error
    assert (await tracker.view(hub.ref(second))).blocked_by == ()


async def test_the_sticky_comment_is_one_comment_updated_in_place_and_never_rewritten_unchanged(
    hub: Hub, tracker: GitHubTracker
) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Sticky", author="alice")
    hub.github.add_comment("octo", "widgets", issue.number, "a human's words", author="bob")
    ref = hub.ref(issue)

    first = await tracker.upsert_sticky_comment(ref, "status", "queued")
    hub.github.clear_requests()
    again = await tracker.upsert_sticky_comment(ref, "status", "queued")
    assert hub.writes() == []  # unchanged after a restart-free repeat: no write at all
    assert again.id == first.id

    async with open_github_tracker(hub.settings()) as restarted:  # no memory of the comment id
        updated = await restarted.upsert_sticky_comment(ref, "status", "running")
    assert updated.id == first.id
    assert updated.body == f"{sticky_marker('status')}\nrunning"

    comments = (await tracker.view(ref)).comments
    assert [c.body for c in comments] == ["a human's words", updated.body]


async def test_a_sticky_comment_is_never_a_strangers_and_never_stale_between_processes(hub: Hub) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Contested", author="alice")
    ref = hub.ref(issue)
    forged = f"{sticky_marker('status')}\nall done, merge it"
    hub.github.add_comment("octo", "widgets", issue.number, forged, author="bob")
    async with open_github_tracker(hub.settings()) as first, open_github_tracker(hub.settings()) as second:
        mine = await first.upsert_sticky_comment(ref, "status", "running")
        await second.upsert_sticky_comment(ref, "status", "blocked")
        again = await first.upsert_sticky_comment(ref, "status", "running")  # its memory says "running"
    assert again.id == mine.id
    comments = [(c.author, c.body) for c in (await first_view(hub, ref))]
    assert comments == [("bob", forged), ("alice", f"{sticky_marker('status')}\nrunning")]


async def first_view(hub: Hub, ref: IssueRef) -> list[Comment]:
    async with open_github_tracker(hub.settings()) as tracker:
        return list((await tracker.view(ref)).comments)


async def test_repeated_relations_are_idempotent(hub: Hub, tracker: GitHubTracker) -> None:
    parent = hub.github.add_issue("octo", "widgets", "Parent", author="alice")
    child = hub.github.add_issue("octo", "widgets", "Child", author="alice")
    for _ in range(2):  # a repeat after a timeout must not fail
        await tracker.add_sub_issue(hub.ref(parent), hub.ref(child))
        await tracker.add_blocked_by(hub.ref(parent), hub.ref(child))
    view = await tracker.view(hub.ref(parent))
    assert [c.ref.number for c in view.children] == [child.number]
    assert [b.ref.number for b in view.blocked_by] == [child.number]


async def test_a_body_block_is_replaced_without_touching_the_human_text(hub: Hub, tracker: GitHubTracker) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Root", author="alice", body="Please build it.")
    ref = hub.ref(issue)

    await tracker.replace_body_block(ref, "tree", "1 of 3 done")
    await tracker.replace_body_block(ref, "tree", "2 of 3 done")

    start, end = block_markers("tree")
    assert (await tracker.get_issue(ref)).body == f"Please build it.\n\n{start}\n2 of 3 done\n{end}\n"
    hub.github.clear_requests()
    await tracker.replace_body_block(ref, "tree", "2 of 3 done")
    assert hub.writes() == []


async def test_labels_assignees_close_and_reopen(hub: Hub, tracker: GitHubTracker) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Chores", author="alice", labels=["keep"])
    ref = hub.ref(issue)

    await tracker.add_labels(ref, ("agent-grid", "needs-human", "kind/bug", "c#"))
    await tracker.remove_labels(ref, ("needs-human", "never-there", "kind/bug", "c#"))
    await tracker.add_assignees(ref, ("alice",))
    await tracker.close(ref, CloseReason.NOT_PLANNED)

    closed = await tracker.get_issue(ref)
    assert set(closed.labels) == {"keep", "agent-grid"}
    assert closed.assignees == ("alice",)
    assert (closed.state, closed.state_reason) == (IssueState.CLOSED, "not_planned")

    await tracker.remove_assignees(ref, ("alice",))
    await tracker.reopen(ref)
    reopened = await tracker.get_issue(ref)
    assert (reopened.state, reopened.assignees) == (IssueState.OPEN, ())


async def test_label_events_say_who_added_each_label_across_pages(hub: Hub) -> None:
    github = hub.github
    github.add_app("agent-grid", owner="octo", public_key_pem=_public_pem())
    issue = github.add_issue("octo", "widgets", "Do it", author="alice", labels=["bug"])
    github.add_collaborator("octo", "widgets", "bob", role="triage")
    github.label_issue("octo", "widgets", issue.number, ["agent-grid"], actor="bob")
    github.label_issue("octo", "widgets", issue.number, ["needs-human"], actor="agent-grid[bot]")
    async with open_github_tracker(hub.settings(page_size=2)) as tracker:  # three events: two pages
        events = await tracker.label_events(hub.ref(issue))
    assert [(e.action, e.label, e.actor, e.actor_is_bot) for e in events] == [
        ("labeled", "bug", "alice", False),
        ("labeled", "agent-grid", "bob", False),
        ("labeled", "needs-human", "agent-grid[bot]", True),
    ]


async def test_a_permission_is_the_role_by_name_and_none_for_an_unknown_account(
    hub: Hub, tracker: GitHubTracker
) -> None:
    github = hub.github
    github.add_user("carol")
    github.add_collaborator("octo", "widgets", "bob", role="maintain")
    assert await tracker.permission(REPO, "alice") is RepoPermission.WRITE  # an organization member
    assert await tracker.permission(REPO, "bob") is RepoPermission.MAINTAIN  # the legacy field would say write
    assert await tracker.permission(REPO, "carol") is RepoPermission.READ  # anyone, on a public repository
    assert await tracker.permission(REPO, "nobody") is RepoPermission.NONE


async def test_a_missing_issue_is_not_found_over_rest_and_graphql(hub: Hub, tracker: GitHubTracker) -> None:
    missing = IssueRef(repo=REPO, number=999)
    with pytest.raises(IssueNotFound):
        await tracker.get_issue(missing)
    with pytest.raises(IssueNotFound):
        await tracker.view(missing)
    with pytest.raises(IssueNotFound):
        await tracker.view(IssueRef(repo="octo/nowhere", number=1))


async def test_polling_reports_each_change_once_and_unchanged_repos_cost_a_free_304(
    hub: Hub, tracker: GitHubTracker
) -> None:
    github = hub.github
    parent = github.add_issue("octo", "widgets", "Parent", author="alice")
    child = github.add_issue("octo", "widgets", "Child", author="alice")
    github.add_sub_issue(parent, child)
    cursor = PollCursor(repo=REPO, since=datetime.now(UTC) - timedelta(hours=1))

    first = await tracker.poll_updated(cursor)
    assert sorted(i.ref.number for i in first.issues) == [parent.number, child.number]
    assert first.parents == {child.number: IssueRef(repo=REPO, number=parent.number)}

    second = await tracker.poll_updated(first.cursor)  # the inclusive boundary comes back, and is dropped
    assert second.issues == ()
    assert second.cursor.etag is not None

    remaining = github.rate_limit_remaining(hub.token)
    third = await tracker.poll_updated(second.cursor)
    assert third.not_modified
    assert third.cursor == second.cursor
    assert hub.github.requests[-1].status == 304
    assert github.rate_limit_remaining(hub.token) == remaining  # 304s are free

    await tracker.close(IssueRef(repo=REPO, number=child.number))
    fourth = await tracker.poll_updated(third.cursor)
    assert [(i.ref.number, i.state) for i in fourth.issues] == [(child.number, IssueState.CLOSED)]


async def test_a_distant_rate_limit_reset_surfaces_at_once_and_a_near_one_is_waited_out(hub: Hub) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Busy", author="alice")
    async with open_github_tracker(hub.settings(max_rate_limit_wait_s=5)) as tracker:
        hub.github.exhaust_rate_limit(hub.token, reset_in_s=3600)
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            await tracker.get_issue(hub.ref(issue))
        assert time.monotonic() - started < 2
        assert 3500 < limited.value.retry_after_s <= 3600

        hub.github.exhaust_rate_limit(hub.token, reset_in_s=2)
        started = time.monotonic()
        assert (await tracker.get_issue(hub.ref(issue))).title == "Busy"
        assert 1 <= time.monotonic() - started < 5


async def test_the_latest_rate_limit_window_of_each_resource_is_readable(hub: Hub, tracker: GitHubTracker) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Counted", author="alice")
    assert tracker.rate_limits.snapshot() == {}

    await tracker.get_issue(hub.ref(issue))
    await tracker.view(hub.ref(issue))
    seen = tracker.rate_limits.snapshot()

    assert set(seen) == {"core", "graphql"}
    assert seen["core"].remaining == hub.github.rate_limit_remaining(hub.token)
    assert seen["graphql"].remaining == hub.github.rate_limit_remaining(hub.token, resource="graphql")
    assert seen["core"].limit > seen["core"].remaining
    assert seen["core"].reset_at > datetime.now(UTC)

    hub.github.exhaust_rate_limit(hub.token, reset_in_s=3600)
    with pytest.raises(RateLimited):
        await tracker.get_issue(hub.ref(issue))
    exhausted = tracker.rate_limits.snapshot()["core"]
    assert exhausted.remaining == 0
    assert exhausted.reset_at > datetime.now(UTC) + timedelta(minutes=59)


async def test_reads_ride_out_an_outage_and_writes_are_not_resent_after_an_ambiguous_failure(
    hub: Hub, tracker: GitHubTracker
) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Flaky", author="alice")
    hub.github.fail_next("GET", "/repos/octo/widgets/issues", count=2, status=502)
    assert (await tracker.get_issue(hub.ref(issue))).title == "Flaky"

    hub.github.clear_requests()
    hub.github.fail_next("POST", "/repos/octo/widgets/issues", count=1, status=502)
    with pytest.raises(TrackerUnavailable):
        await tracker.comment(hub.ref(issue), "once")
    assert hub.writes() == [("POST", f"/repos/octo/widgets/issues/{issue.number}/comments")]


async def test_writes_are_paced(hub: Hub) -> None:
    issue = hub.github.add_issue("octo", "widgets", "Chatty", author="alice")
    async with open_github_tracker(hub.settings(write_interval_s=0.2)) as tracker:
        hub.github.clear_requests()
        for n in range(5):
            await tracker.comment(hub.ref(issue), f"comment {n}")
    starts = [r.at_s for r in hub.github.requests if r.method == "POST"]
    assert len(starts) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.19, gaps


async def test_a_github_app_installation_acts_as_its_bot(hub: Hub) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    app = hub.github.add_app("agent-grid", owner="octo", public_key_pem=public_pem.decode())
    installation = hub.github.add_installation(app.id, "octo")
    issue = hub.github.add_issue("octo", "widgets", "For the bot", author="alice")
    settings = hub.settings(
        login="agent-grid[bot]",
        token=None,
        app=GitHubAppSettings(
            app_id=app.id, private_key=SecretStr(private_pem.decode()), installation_id=installation.id
        ),
    )
    async with open_github_tracker(settings) as tracker:
        comment = await tracker.comment(hub.ref(issue), "on it")
        view = await tracker.view(hub.ref(issue))
    assert comment.author == "agent-grid[bot]"
    assert [c.author for c in view.comments] == ["agent-grid[bot]"]  # GraphQL says `agent-grid`: same login


async def test_polling_page_by_page_reports_every_issue_once_even_when_one_moves_meanwhile(hub: Hub) -> None:
    numbers = [hub.github.add_issue("octo", "widgets", f"Issue {n}", author="alice").number for n in range(5)]
    async with open_github_tracker(hub.settings(page_size=2)) as tracker:
        cursor = PollCursor(repo=REPO, since=datetime.now(UTC) - timedelta(hours=1))
        reported: list[int] = []
        first = await tracker.poll_updated(cursor)
        reported += [i.ref.number for i in first.issues]
        # An early issue changes between polls: it moves to the end of the order, nothing shifts past us.
        await tracker.comment(IssueRef(repo=REPO, number=numbers[0]), "bump")
        cursor = first.cursor
        for _ in range(6):
            result = await tracker.poll_updated(cursor)
            reported += [i.ref.number for i in result.issues]
            cursor = result.cursor
    assert set(numbers) <= set(reported)
    repeated = {number for number in reported if reported.count(number) > 1}
    assert repeated <= {numbers[0]}  # only the bumped issue, once per state it was seen in


def _public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
