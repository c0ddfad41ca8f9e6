"""What every request crosses: ETags and 304s, rate-limit accounting, injected faults, the API version, the
request log, and the ``/_control`` API; plus githubkit driving the server the way the adapter will."""

import json
import time

import httpx
import pytest
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub
from githubkit.exception import PrimaryRateLimitExceeded, RequestFailed, SecondaryRateLimitExceeded
from githubkit_schemas.v2022_11_28.models import Issue

from .conftest import ALICE, BOB
from .harness import Api, githubkit_client

ISSUE = "/repos/{owner}/{repo}/issues/{issue_number}"
WIDGETS = {"owner": "acme", "repo": "widgets"}


@pytest.fixture
def issue_number(github: FakeGitHub) -> int:
    return github.add_issue("acme", "widgets", "Cached", author="alice").number


async def test_an_unchanged_get_answers_304_without_body_or_charge(api: Api, issue_number: int) -> None:
    first = await api.get(ISSUE, issue_number=issue_number, **WIDGETS)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')

    again = await api.get(ISSUE, headers={"If-None-Match": etag}, issue_number=issue_number, **WIDGETS)
    weak = await api.get(ISSUE, headers={"If-None-Match": f"W/{etag}"}, issue_number=issue_number, **WIDGETS)

    for unchanged in (again, weak):
        assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", etag)
        assert unchanged.headers["x-ratelimit-remaining"] == first.headers["x-ratelimit-remaining"]
        assert unchanged.headers["x-ratelimit-used"] == "1"
    await api.patch(ISSUE, json={"title": "Changed"}, issue_number=issue_number, **WIDGETS)
    changed = await api.get(ISSUE, headers={"If-None-Match": etag}, issue_number=issue_number, **WIDGETS)
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.headers["x-ratelimit-used"] == "3"


async def test_rate_limits_are_counted_per_token_and_refused_with_github_messages(
    api: Api, github: FakeGitHub, running: RunningGitHub
) -> None:
    github.add_user("dave")
    dave = github.add_token("dave", "ghp_dave", rate_limit=2)
    as_dave = {"Authorization": f"token {dave}"}

    first = await api.get("/repos/{owner}/{repo}", headers=as_dave, **WIDGETS)
    second = await api.get("/repos/{owner}/{repo}", headers=as_dave, **WIDGETS)
    refused = await api.get("/repos/{owner}/{repo}", headers=as_dave, **WIDGETS)
    alices = await api.get("/repos/{owner}/{repo}", **WIDGETS)

    assert [r.headers["x-ratelimit-remaining"] for r in (first, second, refused)] == ["1", "0", "0"]
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert int(first.headers["x-ratelimit-reset"]) > time.time()
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("API rate limit exceeded for user ID ")
    assert alices.headers["x-ratelimit-remaining"] == "4999"
    assert github.rate_limit_remaining(dave) == 0

    github.exhaust_rate_limit(BOB, reset_in_s=30)
    async with githubkit_client(BOB, running.base_url) as gh:
        with pytest.raises(PrimaryRateLimitExceeded) as raised:
            await gh.rest("2022-11-28").repos.async_get("acme", "widgets")
    assert 25 <= raised.value.retry_after.total_seconds() <= 30


async def test_graphql_has_its_own_rate_limit_and_answers_rate_limited_in_band(
    client: httpx.AsyncClient, github: FakeGitHub
) -> None:
    query = {"query": "{ viewer { login } }"}
    ok = await client.post("graphql", json=query)
    github.exhaust_rate_limit(ALICE, resource="graphql", reset_in_s=60)
    limited = await client.post("graphql", json=query)
    rest = await client.get("repos/acme/widgets")

    assert ok.json() == {"data": {"viewer": {"login": "alice"}}}
    assert ok.headers["x-ratelimit-resource"] == "graphql"
    assert limited.status_code == 200
    assert limited.json()["errors"][0]["type"] == "RATE_LIMITED"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert rest.status_code == 200


async def test_injected_5xx_answer_the_next_matching_requests_only(api: Api, github: FakeGitHub) -> None:
    github.fail_next("GET", "/repos/acme/widgets/issues", count=2, status=503)

    created = await api.post("/repos/{owner}/{repo}/issues", json={"title": "POST is not matched"}, **WIDGETS)
    failures = [await api.get("/repos/{owner}/{repo}/issues", **WIDGETS) for _ in range(2)]
    recovered = await api.get("/repos/{owner}/{repo}/issues", **WIDGETS)

    assert created.status_code == 201
    assert [r.status_code for r in failures] == [503, 503]
    assert failures[0].json()["message"] == "Service Unavailable"
    assert failures[0].headers["x-ratelimit-remaining"] == created.headers["x-ratelimit-remaining"]  # not charged
    assert recovered.status_code == 200
    github.fail_next(None, "/repos/acme/widgets", status=502)
    assert (await api.get("/repos/{owner}/{repo}", **WIDGETS)).status_code == 502


async def test_secondary_rate_limit_answers_403_with_retry_after(
    api: Api, github: FakeGitHub, running: RunningGitHub
) -> None:
    github.secondary_rate_limit("POST", "/repos/", retry_after_s=7)
    limited = await api.post("/repos/{owner}/{repo}/issues", json={"title": "Too fast"}, **WIDGETS)
    allowed = await api.post("/repos/{owner}/{repo}/issues", json={"title": "Later"}, **WIDGETS)

    assert limited.status_code == 403
    assert limited.headers["retry-after"] == "7"
    assert "secondary rate limit" in limited.json()["message"]
    assert limited.headers["x-ratelimit-remaining"] != "0"
    assert allowed.status_code == 201
    github.secondary_rate_limit(retry_after_s=3)
    async with githubkit_client(ALICE, running.base_url) as gh:
        with pytest.raises(SecondaryRateLimitExceeded) as raised:
            await gh.rest("2022-11-28").issues.async_get("acme", "widgets", allowed.json()["number"])
    assert raised.value.retry_after.total_seconds() == 3


async def test_the_request_log_records_each_api_call(client: httpx.AsyncClient, github: FakeGitHub) -> None:
    github.clear_requests()
    before = time.monotonic()
    await client.post("repos/acme/widgets/issues", json={"title": "Logged"})
    await client.get("repos/acme/widgets/issues", params={"state": "all", "per_page": 5})
    await client.get("repos/acme/widgets", headers={"Authorization": "token wrong"})
    await client.get("_control/health")

    log = github.requests
    assert [(r.method, r.path, r.status, r.login) for r in log] == [
        ("POST", "/repos/acme/widgets/issues", 201, "alice"),
        ("GET", "/repos/acme/widgets/issues", 200, "alice"),
        ("GET", "/repos/acme/widgets", 401, None),
    ]
    assert log[0].json() == {"title": "Logged"}
    assert log[1].params == {"state": "all", "per_page": "5"}
    assert before <= log[0].at_s <= log[1].at_s <= log[2].at_s <= time.monotonic()
    assert len({r.request_id for r in log}) == 3


async def test_another_api_version_is_refused_rather_than_answered_in_the_wrong_shape(
    client: httpx.AsyncClient, running: RunningGitHub, issue_number: int
) -> None:
    refused = await client.get("repos/acme/widgets", headers={"X-GitHub-Api-Version": "2026-03-10"})
    assert refused.status_code == 400
    assert "2022-11-28" in refused.json()["message"]

    async with githubkit_client(ALICE, running.base_url) as gh:
        with pytest.raises(RequestFailed):
            await gh.rest.issues.async_get("acme", "widgets", issue_number)  # githubkit's default version
        response = await gh.rest("2022-11-28").issues.async_get("acme", "widgets", issue_number)
    assert isinstance(response.parsed_data, Issue)
    assert response.parsed_data.title == "Cached"


async def test_githubkit_revalidates_its_cache_with_etags(running: RunningGitHub, issue_number: int) -> None:
    github = running.github
    async with githubkit_client(ALICE, running.base_url, auto_retry=True) as gh:
        rest = gh.rest("2022-11-28")
        first = await rest.issues.async_get("acme", "widgets", issue_number)
        second = await rest.issues.async_get("acme", "widgets", issue_number)
        await rest.issues.async_update("acme", "widgets", issue_number, title="Renamed")
        third = await rest.issues.async_get("acme", "widgets", issue_number)

    assert first.parsed_data.title == second.parsed_data.title == "Cached"
    assert third.parsed_data.title == "Renamed"
    statuses = [r.status for r in github.requests if r.method == "GET"]
    assert statuses == [200, 304, 200]


async def test_unknown_routes_and_methods_answer_github_404(client: httpx.AsyncClient) -> None:
    unknown = await client.get("repos/acme/widgets/pulls")
    wrong_method = await client.delete("repos/acme/widgets/issues")

    assert unknown.status_code == wrong_method.status_code == 404
    assert unknown.json() == {
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest",
        "status": "404",
    }


async def test_the_control_api_seeds_injects_and_reports(client: httpx.AsyncClient, github: FakeGitHub) -> None:
    seed = {
        "users": [{"login": "erin"}],
        "organizations": [{"login": "beta", "members": ["erin"]}],
        "repos": [{"owner": "beta", "name": "gamma"}],
        "tokens": [{"login": "erin", "token": "ghp_erin"}],
        "issues": [
            {"owner": "beta", "repo": "gamma", "title": "Seeded", "author": "erin", "labels": ["x"]},
            {"owner": "beta", "repo": "gamma", "title": "Part", "author": "erin"},
        ],
        "comments": [{"owner": "beta", "repo": "gamma", "number": 1, "body": "Hi", "author": "erin"}],
        "sub_issues": [{"owner": "beta", "repo": "gamma", "parent": 1, "child": 2}],
    }
    seeded = await client.post("_control/seed", json=seed)
    assert seeded.status_code == 201
    assert seeded.json()["tokens"] == [{"token": "ghp_erin"}]
    assert [issue["number"] for issue in seeded.json()["issues"]] == [1, 2]
    assert seeded.json()["issues"][0]["id"] != 1
    bad = await client.post("_control/seed", json={"nonsense": []})
    assert bad.status_code == 422
    await client.post("_control/faults", json={"method": "GET", "path_prefix": "/repos/beta", "status": 503})
    as_erin = {"Authorization": "token ghp_erin"}
    failed = await client.get("repos/beta/gamma/issues/1", headers=as_erin)
    fetched = await client.get("repos/beta/gamma/issues/1", headers=as_erin)
    await client.post("_control/rate_limits/exhaust", json={"token": "ghp_erin", "reset_in_s": 5})
    limited = await client.get("repos/beta/gamma/issues/1", headers=as_erin)
    logged = (await client.get("_control/requests")).json()

    assert (failed.status_code, fetched.status_code, limited.status_code) == (503, 200, 403)
    assert fetched.json()["comments"] == 1
    assert fetched.json()["author_association"] == "MEMBER"
    assert fetched.json()["sub_issues_summary"]["total"] == 1
    assert [(r["path"], r["status"], r["login"]) for r in logged] == [
        ("/repos/beta/gamma/issues/1", 503, "erin"),
        ("/repos/beta/gamma/issues/1", 200, "erin"),
        ("/repos/beta/gamma/issues/1", 403, "erin"),
    ]
    assert (await client.delete("_control/requests")).status_code == 204
    assert github.requests == []
    assert (await client.post("_control/reset")).status_code == 204
    assert (await client.get("repos/acme/widgets")).status_code == 401  # alice's token is gone too
    assert json.loads((await client.get("_control/webhooks/deliveries")).content) == []
