"""The adapter's pure rules: write pacing, marked blocks, the poll window, retry decisions, error mapping."""

import itertools
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_tracker.body_blocks import block_markers, replace_block
from agent_grid_tracker.github_convert import permission_from_rest
from agent_grid_tracker.github_retry import RetryPolicy, tracker_error
from agent_grid_tracker.poll_window import advance, fresh_issues
from agent_grid_tracker.public_github import GitHubSettings, open_github_tracker
from agent_grid_tracker.public_rate_limits import RateLimitBook
from agent_grid_tracker.public_tracker import (
    Issue,
    IssueNotFound,
    IssueState,
    PollCursor,
    RateLimited,
    RepoPermission,
    TrackerRefused,
    TrackerUnavailable,
    seen_mark,
)
from agent_grid_tracker.write_pacer import WriteSchedule, is_paced_write
from githubkit.exception import PrimaryRateLimitExceeded, RequestError, RequestFailed, RequestTimeout
from githubkit.response import Response
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

# --- write pacing ------------------------------------------------------------------------------------------


def test_writes_are_spaced_by_the_minimum_interval() -> None:
    schedule = WriteSchedule(min_interval_s=1.0, max_per_minute=80)
    assert schedule.delay(100.0) == 0.0
    schedule.record(100.0)
    assert schedule.delay(100.25) == pytest.approx(0.75)
    assert schedule.delay(101.0) == 0.0


def test_no_more_than_the_per_minute_cap_in_any_sixty_seconds() -> None:
    schedule = WriteSchedule(min_interval_s=0.0, max_per_minute=3)
    for started in (0.0, 1.0, 2.0):
        assert schedule.delay(started) == 0.0
        schedule.record(started)
    # The fourth must wait until the first leaves the window.
    assert schedule.delay(3.0) == pytest.approx(57.0)
    assert schedule.delay(60.0) == 0.0


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=200))
def test_following_the_schedule_never_breaks_either_rule(gaps: list[float]) -> None:
    schedule = WriteSchedule(min_interval_s=1.0, max_per_minute=80)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        now += schedule.delay(now)
        schedule.record(now)
        starts.append(now)
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in itertools.pairwise(starts))
    assert all(sum(1 for s in starts if first <= s < first + 60) <= 80 for first in starts)


@pytest.mark.parametrize(
    ("method", "path", "paced"),
    [
        ("POST", "/repos/o/r/issues/1/comments", True),
        ("PATCH", "/repos/o/r/issues/1", True),
        ("DELETE", "/repos/o/r/issues/1/labels/x", True),
        ("GET", "/repos/o/r/issues/1", False),
        ("POST", "/graphql", False),
        ("POST", "/app/installations/7/access_tokens", False),
    ],
)
def test_which_requests_are_paced(method: str, path: str, paced: bool) -> None:
    assert is_paced_write(httpx.Request(method, f"https://api.github.com{path}")) is paced


# --- marked blocks -----------------------------------------------------------------------------------------


def test_a_block_is_appended_after_the_human_text_and_replaced_in_place_later() -> None:
    start, end = block_markers("tree")
    first = replace_block("Do the thing.\n", "tree", "- [ ] a")
    assert first == f"Do the thing.\n\n{start}\n- [ ] a\n{end}\n"
    edited_by_human = first.replace("Do the thing.", "Do the thing, carefully.") + "\nP.S. thanks\n"
    second = replace_block(edited_by_human, "tree", "- [x] a")
    assert second == edited_by_human.replace("- [ ] a", "- [x] a")


def test_an_empty_body_gets_just_the_block() -> None:
    start, end = block_markers("tree")
    assert replace_block("", "tree", "x") == f"{start}\nx\n{end}\n"


def test_a_block_cut_in_half_by_a_human_is_left_alone_and_a_new_one_appended() -> None:
    start, _ = block_markers("tree")
    body = f"text\n{start}\nleftover"
    assert replace_block(body, "tree", "new").startswith(body)


@given(st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=200), st.text(max_size=50))
def test_the_human_text_survives_any_number_of_rewrites(human: str, content: str) -> None:
    once = replace_block(human, "tree", content)
    twice = replace_block(once, "tree", content + "more")
    assert twice.startswith(human)
    assert replace_block(twice, "tree", content) == once


# --- poll window -------------------------------------------------------------------------------------------


def issue(number: int, updated: datetime) -> Issue:
    return Issue(
        ref=IssueRef(repo="octo/repo", number=number),
        id=1000 + number,
        title=f"#{number}",
        state=IssueState.OPEN,
        url=f"https://github.com/octo/repo/issues/{number}",
        updated_at=updated,
        author="alice",
        created_at=T0,
    )


def test_first_poll_reports_everything_and_remembers_the_newest_instant() -> None:
    cursor = PollCursor(repo="octo/repo")
    polled = [issue(2, T0 + timedelta(seconds=5)), issue(1, T0)]
    assert [i.ref.number for i in fresh_issues(cursor, polled)] == [1, 2]
    after = advance(cursor, polled, etag='"e1"')
    assert after.since == T0 + timedelta(seconds=5)
    assert after.seen_at_since == (seen_mark(polled[0]),)
    assert after.etag is None  # the next request starts elsewhere: this validator does not apply


def test_the_inclusive_boundary_is_not_reported_twice_but_a_newcomer_in_the_same_second_is() -> None:
    cursor = PollCursor(repo="octo/repo", since=T0, seen_at_since=(seen_mark(issue(1, T0)),))
    polled = [issue(1, T0), issue(3, T0)]
    assert [i.ref.number for i in fresh_issues(cursor, polled)] == [3]
    after = advance(cursor, polled, etag='"e2"')
    assert after.since == T0
    assert set(after.seen_at_since) == {seen_mark(issue(1, T0)), seen_mark(issue(3, T0))}
    assert after.etag == '"e2"'  # same request next time: a 304 if nothing changes


def test_a_second_change_within_the_same_second_is_reported() -> None:
    before = issue(1, T0)
    cursor = PollCursor(repo="octo/repo", since=T0, seen_at_since=(seen_mark(before),))
    closed = before.model_copy(update={"state": IssueState.CLOSED})
    assert fresh_issues(cursor, [closed]) == [closed]


def test_a_poll_with_nothing_new_keeps_the_cursor_and_learns_the_validator() -> None:
    cursor = PollCursor(repo="octo/repo", since=T0, seen_at_since=(seen_mark(issue(1, T0)),))
    after = advance(cursor, [issue(1, T0)], etag='"e3"')
    assert after == cursor.model_copy(update={"etag": '"e3"'})


# --- retry decisions and error mapping ---------------------------------------------------------------------


def github_response(status: int, method: str = "GET", headers: dict[str, str] | None = None) -> Response[object]:
    request = httpx.Request(method, "https://api.github.com/repos/o/r/issues/1")
    raw = httpx.Response(status, request=request, json={"message": "nope", "errors": [{"message": "bad"}]})
    raw.headers.update(headers or {})
    return Response(raw, object)


def test_a_short_rate_limit_is_waited_out_and_a_long_one_is_not() -> None:
    policy = RetryPolicy(max_rate_limit_wait_s=30)
    short = PrimaryRateLimitExceeded(github_response(403), timedelta(seconds=10))
    long = PrimaryRateLimitExceeded(github_response(403), timedelta(hours=1))
    assert policy(short, 0).do_retry
    assert policy(short, 0).retry_after == timedelta(seconds=10)
    assert not policy(long, 0).do_retry
    error = tracker_error(long, "get o/r#1")
    assert isinstance(error, RateLimited)
    assert error.retry_after_s == pytest.approx(3600)


def test_server_errors_are_retried_with_capped_backoff_for_reads_only() -> None:
    policy = RetryPolicy(max_retries=6, backoff_base_s=0.5, backoff_cap_s=4)
    read = RequestFailed(github_response(502))
    waits = [policy(read, attempt).retry_after for attempt in range(6)]
    assert waits == [timedelta(seconds=s) for s in (0.5, 1, 2, 4, 4, 4)]
    assert not policy(read, 6).do_retry
    assert not policy(RequestFailed(github_response(502, method="POST")), 0).do_retry


def test_a_write_is_resent_only_when_it_never_left() -> None:
    policy = RetryPolicy()
    request = httpx.Request("POST", "https://api.github.com/repos/o/r/issues/1/comments")
    assert policy(RequestError(httpx.ConnectError("refused", request=request)), 0).do_retry
    assert not policy(RequestTimeout(httpx.ReadTimeout("slow", request=request)), 0).do_retry
    assert not policy(RequestError(httpx.RemoteProtocolError("cut", request=request)), 0).do_retry


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, IssueNotFound),
        (410, IssueNotFound),
        (422, TrackerRefused),
        (401, TrackerRefused),
        (503, TrackerUnavailable),
    ],
)
def test_statuses_map_to_what_the_caller_should_do(status: int, expected: type[Exception]) -> None:
    error = tracker_error(RequestFailed(github_response(status)), "get o/r#1")
    assert type(error) is expected
    assert "nope; bad" in str(error)


async def test_behind_a_proxy_httpx_builds_its_own_transport_so_that_the_proxy_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = GitHubSettings(token=SecretStr("t"))
    async with open_github_tracker(settings) as direct:
        assert direct._github.config.async_transport is not None  # the shared connection pool
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    async with open_github_tracker(settings) as proxied:
        assert proxied._github.config.async_transport is None


def test_a_response_without_complete_rate_limit_headers_changes_no_window() -> None:
    book = RateLimitBook()
    good = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999", "x-ratelimit-reset": "1800000000"}

    assert book.observe({"x-ratelimit-remaining": "12"}) is None
    assert book.observe({**good, "x-ratelimit-remaining": "many"}) is None
    assert book.snapshot() == {}
    recorded = book.observe(good)
    assert recorded is not None
    assert (recorded.resource, recorded.remaining, recorded.used) == ("core", 4999, None)
    assert recorded.reset_at == datetime.fromtimestamp(1_800_000_000, tz=UTC)
    assert book.snapshot() == {"core": recorded}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"permission": "write", "role_name": "maintain"}, RepoPermission.MAINTAIN),
        ({"permission": "read", "role_name": "triage"}, RepoPermission.TRIAGE),
        ({"permission": "write", "role_name": "release-manager"}, RepoPermission.WRITE),  # a custom role: its base
        ({"permission": "none", "role_name": ""}, RepoPermission.NONE),
        ({"permission": "superuser", "role_name": "superuser"}, RepoPermission.NONE),  # unknown: no trust
    ],
)
def test_a_permission_answer_names_the_role_or_its_base_permission(answer: dict[str, str], expected: object) -> None:
    assert permission_from_rest(answer) is expected
