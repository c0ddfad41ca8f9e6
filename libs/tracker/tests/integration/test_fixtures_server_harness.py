"""The replay harness itself: @octokit/fixtures-server answers GitHub's recorded traffic to plain httpx requests."""

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from .fixtures_server import (
    FIXTURE_ACCEPT,
    FIXTURE_HEADERS,
    FIXTURE_JSON_CONTENT_TYPE,
    FIXTURE_OWNER,
    FIXTURE_TOKEN,
    FixturesServer,
    FixturesServerError,
    ScenarioLoader,
    recorded_requests,
)

JSON_HEADERS = {**FIXTURE_HEADERS, "Content-Type": FIXTURE_JSON_CONTENT_TYPE}
NOTABLE_HEADERS = ("link", "location", "etag", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-resource")


def test_the_server_listens_on_127_0_0_1_only(fixtures_server: FixturesServer) -> None:
    origin = urlsplit(fixtures_server.origin)
    assert origin.hostname == "127.0.0.1"
    assert origin.port is not None
    assert httpx.get(f"{fixtures_server.origin}/ping").json() == {"ok": True}
    # Linux routes all of 127/8 to lo: a socket bound to 0.0.0.0 would accept 127.0.0.2 too.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.2", origin.port), timeout=1):
        pass


async def test_paginate_issues_answers_five_pages_of_three_by_link(load_scenario: ScenarioLoader) -> None:
    scenario = load_scenario("paginate-issues")
    url: str | None = scenario.url(f"/repos/{FIXTURE_OWNER}/paginate-issues/issues?per_page=3")
    requested: list[str] = []
    numbers: list[int] = []

    async with httpx.AsyncClient(headers=FIXTURE_HEADERS) as client:
        while url is not None:
            requested.append(url.removeprefix(scenario.base_url))
            response = await client.get(url)
            assert response.status_code == 200, response.text
            assert response.headers["etag"] == '"00000000000000000000000000000000"'
            assert response.headers["x-ratelimit-remaining"] == "4999"
            numbers += [issue["number"] for issue in response.json()]
            url = response.links.get("next", {}).get("url")

    assert requested == [
        f"/repos/{FIXTURE_OWNER}/paginate-issues/issues?per_page=3",
        "/repositories/1000/issues?per_page=3&page=2",
        "/repositories/1000/issues?per_page=3&page=3",
        "/repositories/1000/issues?per_page=3&page=4",
        "/repositories/1000/issues?per_page=3&page=5",
    ]
    assert numbers == list(range(13, 0, -1))
    assert load_scenario.server.pending(scenario) == []


async def test_add_labels_to_issue_creates_an_issue_then_adds_three_labels(load_scenario: ScenarioLoader) -> None:
    scenario = load_scenario("add-labels-to-issue")
    issues = f"/repos/{FIXTURE_OWNER}/add-labels-to-issue/issues"

    async with httpx.AsyncClient(base_url=scenario.base_url) as client:
        created = await client.post(issues, json={"title": "Issue without a label"}, headers=JSON_HEADERS)
        labeled = await client.post(f"{issues}/1/labels", json={"labels": ["Foo", "bAr", "baZ"]}, headers=JSON_HEADERS)

    assert created.status_code == 201, created.text
    assert created.headers["location"] == scenario.url(f"{issues}/1")
    issue = created.json()
    assert (issue["number"], issue["title"], issue["state"]) == (1, "Issue without a label", "open")
    assert issue["labels"] == []
    assert issue["url"] == scenario.url(f"{issues}/1")  # URLs in bodies point back at the server
    assert labeled.status_code == 200, labeled.text
    assert [(label["name"], label["color"]) for label in labeled.json()] == [
        ("Foo", "ededed"),
        ("bAr", "ededed"),
        ("baZ", "ededed"),
    ]


@pytest.mark.parametrize(
    "scenario_name",
    ["paginate-issues", "add-labels-to-issue", "errors", "labels", "search-issues", "lock-issue"],
)
async def test_every_recorded_request_answers_its_recorded_response(
    load_scenario: ScenarioLoader, scenario_name: str
) -> None:
    scenario = load_scenario(scenario_name)

    async with httpx.AsyncClient() as client:
        for recorded in recorded_requests(scenario_name):
            assert recorded.host == "api.github.com"
            headers = {name: value for name, value in recorded.request_headers.items() if name != "content-length"}
            content = _encode(recorded.body)
            assert len(content) == int(recorded.request_headers.get("content-length", len(content)))
            response = await client.request(
                recorded.method, scenario.url(recorded.path), headers=headers, content=content
            )

            assert response.status_code == recorded.status, response.text
            if recorded.response == "":
                assert response.content == b""
            else:
                assert response.json() == scenario.rewrite_urls(recorded.response)
            for name in NOTABLE_HEADERS:
                if name in recorded.response_headers:
                    assert response.headers[name] == scenario.rewrite_urls(recorded.response_headers[name])


@pytest.mark.parametrize(
    ("headers", "path", "error"),
    [
        pytest.param(
            {**FIXTURE_HEADERS, "Accept": "application/vnd.github+json"},  # githubkit's default
            f"/repos/{FIXTURE_OWNER}/paginate-issues/issues?per_page=3",
            "Nock: No match for request",
            id="another-accept",
        ),
        pytest.param(
            {**FIXTURE_HEADERS, "Authorization": "Bearer " + FIXTURE_TOKEN},
            f"/repos/{FIXTURE_OWNER}/paginate-issues/issues?per_page=3",
            "Nock: No match for request",
            id="bearer-instead-of-token",
        ),
        pytest.param(
            FIXTURE_HEADERS,
            f"/repos/{FIXTURE_OWNER}/paginate-issues/issues?per_page=3&state=open",
            "Nock: No match for request",
            id="an-extra-query-parameter",
        ),
        pytest.param(
            FIXTURE_HEADERS,
            "/repositories/1000/issues?per_page=3&page=2",
            f"GET /repositories/1000/issues does not match next fixture: "
            f"GET /repos/{FIXTURE_OWNER}/paginate-issues/issues",
            id="not-the-next-path",
        ),
    ],
)
async def test_a_mismatch_answers_404_and_consumes_nothing(
    load_scenario: ScenarioLoader, headers: dict[str, str], path: str, error: str
) -> None:
    scenario = load_scenario("paginate-issues", expect_consumed=False)

    async with httpx.AsyncClient(headers=headers) as client:
        response = await client.get(scenario.url(path))

    assert response.status_code == 404
    assert response.json()["error"] == error
    if error.startswith("Nock"):
        # "expected" is what nock received; the recorded request is not in the answer.
        received = response.json()["detail"]["expected"]
        assert received["url"].endswith(path)
        assert received["headers"]["accept"] == headers["Accept"]
    else:
        assert len(response.json()["detail"]["pending"]) == 5
    assert len(load_scenario.server.pending(scenario)) == 5


async def test_a_json_body_without_charset_is_a_mismatch(load_scenario: ScenarioLoader) -> None:
    scenario = load_scenario("add-labels-to-issue", expect_consumed=False)

    async with httpx.AsyncClient(headers=FIXTURE_HEADERS) as client:
        # httpx's (and githubkit's) json= says "application/json"; GitHub's recording says "; charset=utf-8".
        response = await client.post(
            scenario.url(f"/repos/{FIXTURE_OWNER}/add-labels-to-issue/issues"), json={"title": "Issue without a label"}
        )

    assert response.status_code == 404
    received = response.json()["detail"]["expected"]
    assert received["headers"]["content-type"] == "application/json"
    assert json.loads(received["body"]) == {"title": "Issue without a label"}
    assert len(load_scenario.server.pending(scenario)) == 2


async def test_a_request_without_accept_answers_400(load_scenario: ScenarioLoader) -> None:
    scenario = load_scenario("errors", expect_consumed=False)

    async with httpx.AsyncClient() as client:
        request = client.build_request("POST", scenario.url(f"/repos/{FIXTURE_OWNER}/errors/labels"))
        del request.headers["Accept"]
        response = await client.send(request)

    assert (response.status_code, response.json()) == (400, {"error": "Accept header required"})


async def test_a_scenario_loads_again_under_its_own_prefix(load_scenario: ScenarioLoader) -> None:
    first, second = load_scenario("errors"), load_scenario("errors")
    assert first.fixture_id != second.fixture_id
    labels = f"/repos/{FIXTURE_OWNER}/errors/labels"

    async with httpx.AsyncClient(headers=JSON_HEADERS) as client:
        for scenario in (first, second):
            response = await client.post(scenario.url(labels), json={"name": "foo", "color": "invalid"})
            assert response.status_code == 422
            assert response.json()["errors"] == [{"resource": "Label", "code": "invalid", "field": "color"}]
        again = await client.post(first.url(labels), json={"name": "foo", "color": "invalid"})

    # Once every recorded request of a load is answered, its prefix is gone.
    assert (again.status_code, again.json()) == (404, {"error": f'Fixture "{first.fixture_id}" not found'})


def test_an_unknown_scenario_is_refused(fixtures_server: FixturesServer) -> None:
    with pytest.raises(FixturesServerError) as refused:
        fixtures_server.load("no-such-scenario")

    assert 'Scenario \\"no-such-scenario\\" not found' in str(refused.value)


def test_the_recorded_requests_carry_the_fixture_token_and_accept() -> None:
    for recorded in recorded_requests("paginate-issues") + recorded_requests("add-labels-to-issue"):
        assert recorded.request_headers["authorization"] == f"token {FIXTURE_TOKEN}"
        assert recorded.request_headers["accept"] == FIXTURE_ACCEPT


def _encode(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
