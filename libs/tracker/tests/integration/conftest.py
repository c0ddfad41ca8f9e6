"""GitHub's recorded traffic, replayed by @octokit/fixtures-server (see fixtures_server.py).

``fixtures_server``: one node server per test session on 127.0.0.1; the tests fail (never skip) when it cannot start,
e.g. before ``make test-fixtures``.
``load_scenario(name)``: loads a scenario for the current test and, at teardown, fails the test if any of its
recorded requests was never sent (``load_scenario(name, expect_consumed=False)`` opts out, for mismatch tests).
"""

from collections.abc import Iterator

import pytest

from .fixtures_server import FixturesServer, FixturesServerError, ScenarioLoader, running_fixtures_server


@pytest.fixture(scope="session")
def fixtures_server() -> Iterator[FixturesServer]:
    try:
        with running_fixtures_server() as server:
            yield server
    except FixturesServerError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def load_scenario(fixtures_server: FixturesServer) -> Iterator[ScenarioLoader]:
    loader = ScenarioLoader(fixtures_server)
    yield loader
    loader.assert_all_consumed()
