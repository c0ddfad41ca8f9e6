"""The GitHub adapter replaying GitHub's own recorded traffic (@octokit/fixtures, served by fixtures-server).

The recordings were made in 2017 with ``Accept: application/vnd.github.v3+json`` and a charset on JSON bodies;
a request hook adapts those two headers and nothing else, so what is checked is the adapter's own method,
path, query and body, request by request, and its reading of GitHub's real answers.
"""

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import httpx
import pytest
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import IssueState, NewIssue, TrackerRefused
from pydantic import SecretStr

from .fixtures_server import (
    FIXTURE_ACCEPT,
    FIXTURE_JSON_CONTENT_TYPE,
    FIXTURE_TOKEN,
    LoadedScenario,
    ScenarioLoader,
)


class OpenTracker(Protocol):
    def __call__(
        self, loaded: LoadedScenario, *, page_size: int = 100
    ) -> AbstractAsyncContextManager[GitHubTracker]: ...


async def as_recorded(request: httpx.Request) -> None:
    request.headers["Accept"] = FIXTURE_ACCEPT
    if request.content:
        request.headers["Content-Type"] = FIXTURE_JSON_CONTENT_TYPE


@pytest.fixture
def open_tracker() -> OpenTracker:
    def opener(loaded: LoadedScenario, *, page_size: int = 100) -> AbstractAsyncContextManager[GitHubTracker]:
        settings = GitHubSettings(
            api_url=loaded.base_url,
            token=SecretStr(FIXTURE_TOKEN),
            write_interval_s=0,
            max_retries=0,
            page_size=page_size,
        )
        return open_github_tracker(settings, request_hooks=[as_recorded])

    return opener


async def test_listing_follows_githubs_link_pagination_to_the_last_page(
    load_scenario: ScenarioLoader, open_tracker: OpenTracker
) -> None:
    loaded = load_scenario("paginate-issues")
    async with open_tracker(loaded, page_size=3) as tracker:
        issues = await tracker.list_open_issues("octokit-fixture-org/paginate-issues")

    # Five recorded pages (the later ones under /repositories/1000/…, as GitHub's Link header says).
    assert [issue.ref.number for issue in issues] == list(range(1, 14))
    assert {issue.state for issue in issues} == {IssueState.OPEN}
    assert all(issue.ref.repo == "octokit-fixture-org/paginate-issues" for issue in issues)
    assert issues[0].title == "Test issue 1"


async def test_labels_are_written_as_github_recorded_them(
    load_scenario: ScenarioLoader, open_tracker: OpenTracker
) -> None:
    loaded = load_scenario("add-labels-to-issue")
    async with open_tracker(loaded) as tracker:
        issue = await tracker.create_issue(
            "octokit-fixture-org/add-labels-to-issue", NewIssue(title="Issue without a label")
        )
        assert issue.ref == IssueRef(
            repo="octokit-fixture-org/add-labels-to-issue", number=1, node_id=issue.ref.node_id
        )
        assert issue.labels == ()
        await tracker.add_labels(issue.ref, ("Foo", "bAr", "baZ"))


async def test_a_validation_error_is_a_refusal_with_githubs_reasons(
    load_scenario: ScenarioLoader, open_tracker: OpenTracker
) -> None:
    loaded = load_scenario("errors")
    async with open_tracker(loaded) as tracker:
        with pytest.raises(TrackerRefused) as refused:
            await tracker.ensure_label("octokit-fixture-org/errors", "foo", color="invalid")
    assert refused.value.status == 422
    assert "Validation Failed" in str(refused.value)
    assert "invalid" in str(refused.value)
