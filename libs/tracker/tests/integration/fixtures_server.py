"""Replay GitHub's recorded API traffic (@octokit/fixtures) through @octokit/fixtures-server, from pytest.

``running_fixtures_server()`` starts the node server (``make test-fixtures`` installs it under
tests/github_fixtures/node_modules) on a free port of 127.0.0.1 only and stops it on exit; the conftest beside this
file wraps it in the session fixture ``fixtures_server`` and the per-test ``load_scenario``.

A scenario (a folder name under @octokit/fixtures/scenarios/api.github.com) is loaded with
``FixturesServer.load(name)``; the returned ``LoadedScenario.base_url`` stands in for https://api.github.com.
Every load gets its own URL prefix and its own copy of the recorded requests, so a scenario can be loaded any
number of times in one server run. Each recorded request answers once ("consumed"); ``FixturesServer.pending``
lists the ones not sent yet.

Matching (nock, behind the server's own check):

- method and path must be those of the *first pending* request, else 404
  ``{"error": "<METHOD> <path> does not match next fixture: <METHOD> <path>", "detail": {"pending": [...]}}``;
- then every recorded request header must be equal: ``accept: application/vnd.github.v3+json``,
  ``authorization: token 0000000000000000000000000000000000000001`` and, on requests with a body,
  ``content-type: application/json; charset=utf-8`` and ``content-length`` (so the JSON must be compact, as httpx
  writes it); other headers (user-agent, x-github-api-version, ...) are ignored;
- the query must hold exactly the recorded parameters (in any order); the JSON body must be equal (key order free);
- any of those failing answers 404 ``{"error": "Nock: No match for request", "detail": {"expected": {...}}}``,
  where "expected" is in fact the request nock *received* (method, url, headers, body);
- a request without an Accept header answers 400; once every recorded request of a load has been answered, the
  prefix is gone and answers 404 ``{"error": "Fixture \\"<id>\\" not found"}``.

Responses are the recorded ones (2017, api.github.com), with every ``https://<host>/`` in headers and bodies
rewritten to ``<origin>/<host>/<id>/`` (Link, Location, html_url, documentation_url, ...): ``rewrite_urls`` does
the same to a recorded value so that tests can compare.
"""

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import httpx

type Json = bool | int | float | str | list[Json] | dict[str, Json] | None

REPO_ROOT = Path(__file__).resolve().parents[4]
GITHUB_FIXTURES_DIR = REPO_ROOT / "tests" / "github_fixtures"
NODE_MODULES = GITHUB_FIXTURES_DIR / "node_modules"
FIXTURES_SERVER_PACKAGE = NODE_MODULES / "@octokit" / "fixtures-server"
SCENARIOS_DIR = NODE_MODULES / "@octokit" / "fixtures" / "scenarios" / "api.github.com"

# What every recorded request carries (see the module docstring for the matching rules).
FIXTURE_TOKEN = "0000000000000000000000000000000000000001"
FIXTURE_ACCEPT = "application/vnd.github.v3+json"
FIXTURE_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
FIXTURE_HEADERS: dict[str, str] = {"Accept": FIXTURE_ACCEPT, "Authorization": f"token {FIXTURE_TOKEN}"}
FIXTURE_OWNER = "octokit-fixture-org"

# Loaded scenarios expire after this long (the server's default, 60 s, could expire one mid-session). Below 2**31 ms,
# where node's setTimeout would overflow and fire at once.
_TTL_MS = 24 * 60 * 60 * 1000
_READY = "FIXTURES_SERVER_READY "
_OUTPUT_LINES = 200

# bin/server.js of @octokit/fixtures-server 8.1.7 listens on every interface (app.listen(port)) and takes no host
# option, so this launcher mounts the same middleware on 127.0.0.1 instead. The port is the kernel's choice (no race),
# known before the middleware is mounted so that fixturesUrl (used to rewrite Link/Location) is right. Additions:
# GET /fixtures/:id answers the requests still pending for a load; nock may not open real connections; the server
# exits when its stdin closes, so that it never outlives the test session.
_LAUNCHER = """
import express from "express";
import cachimo from "cachimo";
import fixtures from "@octokit/fixtures";
import fixturesServerMiddleware from "@octokit/fixtures-server";

fixtures.nock.disableNetConnect();
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();

const ttl = Number(process.env.FIXTURES_TTL_MS);
const loaded = new Set();
const app = express();
const server = app.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const fixturesUrl = `http://127.0.0.1:${port}`;
  app.get("/ping", (request, response) => response.json({ ok: true }));
  app.get("/fixtures/:id", (request, response) => {
    const { id } = request.params;
    if (!loaded.has(id)) {
      return response.status(404).json({ error: `Fixture "${id}" was never loaded` });
    }
    const mock = cachimo.get(id);  // removed once every recorded request has been answered
    const pending = (mock ? mock.pending() : []).map((key) => {
      const [method, url] = key.split(" ");
      return `${method} ${new URL(url).pathname}`;
    });
    response.json({ id, pending });
  });
  app.post("/fixtures", (request, response, next) => {
    const json = response.json.bind(response);
    response.json = (body) => {
      if (response.statusCode === 201 && body && body.id) loaded.add(body.id);
      return json(body);
    };
    next();
  });
  app.use(fixturesServerMiddleware({ fixturesUrl, logLevel: "warn", ttl }));
  console.log(`FIXTURES_SERVER_READY ${JSON.stringify({ origin: fixturesUrl })}`);
});
"""


class FixturesServerError(RuntimeError):
    """The fixtures server is not installed, did not start, or refused a request to itself."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request of a scenario as GitHub answered it, before the server rewrites URLs (see ``rewrite_urls``)."""

    method: str  # upper case
    host: str  # api.github.com (uploads.github.com for release assets)
    path: str  # with the query as recorded, e.g. /repos/octokit-fixture-org/paginate-issues/issues?per_page=3
    request_headers: dict[str, str]  # lower-case names, compared for equality; without host
    body: Json  # the JSON (or text) body; None when the request had none
    status: int
    response_headers: dict[str, str]  # lower-case names
    response: Json  # "" when empty (204)


@dataclass(frozen=True)
class LoadedScenario:
    """One load of a scenario: its own prefix and its own copy of the recorded requests."""

    scenario: str
    fixture_id: str
    origin: str  # http://127.0.0.1:<port>
    base_url: str  # <origin>/api.github.com/<id>: use it as https://api.github.com (no trailing slash)

    def url(self, path: str) -> str:
        """``path`` (``/repos/...?...``) under this load's prefix."""
        return f"{self.base_url}{path}"

    def rewrite_urls[T: Json](self, value: T) -> T:
        """A recorded value with its URLs rewritten as the server serves them."""
        return rewrite_urls(value, origin=self.origin, fixture_id=self.fixture_id)


@dataclass
class FixturesServer:
    """A running fixtures server (see ``running_fixtures_server``)."""

    origin: str
    _client: httpx.Client
    _output: deque[str]

    def load(self, scenario: str) -> LoadedScenario:
        """Load ``scenario`` (a folder name under @octokit/fixtures/scenarios/api.github.com) under a new prefix."""
        response = self._client.post("/fixtures", json={"scenario": scenario})
        if response.status_code != httpx.codes.CREATED:
            raise FixturesServerError(f"loading scenario {scenario!r}: {response.status_code} {response.text}")
        loaded = response.json()
        return LoadedScenario(scenario=scenario, fixture_id=loaded["id"], origin=self.origin, base_url=loaded["url"])

    def pending(self, loaded: LoadedScenario) -> list[str]:
        """The recorded requests of ``loaded`` not answered yet, in order, as ``"METHOD /path"`` (no query)."""
        response = self._client.get(f"/fixtures/{loaded.fixture_id}")
        if response.status_code != httpx.codes.OK:
            raise FixturesServerError(f"pending of {loaded.fixture_id!r}: {response.status_code} {response.text}")
        return cast(list[str], response.json()["pending"])

    def assert_consumed(self, loaded: LoadedScenario) -> None:
        """Fail unless every recorded request of ``loaded`` has been answered."""
        pending = self.pending(loaded)
        assert not pending, (
            f"scenario {loaded.scenario!r} ({loaded.base_url}): {len(pending)} recorded request(s) never sent, "
            f"next: {pending[0]}\n  " + "\n  ".join(pending)
        )

    def output(self) -> str:
        """The server's recent stdout/stderr (mismatches are logged there too), for failure messages."""
        return "\n".join(self._output)


class ScenarioLoader:
    """Loads scenarios for one test and checks at teardown that each was replayed in full."""

    def __init__(self, server: FixturesServer) -> None:
        self.server = server
        self._to_check: list[LoadedScenario] = []

    def __call__(self, scenario: str, *, expect_consumed: bool = True) -> LoadedScenario:
        loaded = self.server.load(scenario)
        if expect_consumed:
            self._to_check.append(loaded)
        return loaded

    def assert_all_consumed(self) -> None:
        for loaded in self._to_check:
            self.server.assert_consumed(loaded)


def require_installed() -> None:
    """Raise ``FixturesServerError`` (saying what to run) unless node and the npm packages are installed."""
    missing = [p for p in (FIXTURES_SERVER_PACKAGE / "package.json", SCENARIOS_DIR) if not p.exists()]
    if missing:
        raise FixturesServerError(
            f"@octokit/fixtures-server is not installed ({missing[0]} is missing): run `make test-fixtures` "
            f"in {REPO_ROOT} (npm ci of {GITHUB_FIXTURES_DIR.relative_to(REPO_ROOT)})"
        )
    if shutil.which("node") is None:
        raise FixturesServerError("node (>= 18) is not on PATH: the GitHub replay tests run @octokit/fixtures-server")


@contextlib.contextmanager
def running_fixtures_server(*, startup_timeout: float = 30.0) -> Iterator[FixturesServer]:
    """Start @octokit/fixtures-server on a free port of 127.0.0.1, wait until it answers, and stop it on exit."""
    require_installed()
    node = cast(str, shutil.which("node"))
    process = subprocess.Popen(
        [node, "--input-type=module", "--eval", _LAUNCHER],
        cwd=GITHUB_FIXTURES_DIR,  # bare imports resolve from its node_modules
        env={**os.environ, "FIXTURES_TTL_MS": str(_TTL_MS)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    output: deque[str] = deque(maxlen=_OUTPUT_LINES)
    lines: queue.Queue[str | None] = queue.Queue()
    drain = threading.Thread(
        target=_drain, args=(cast(IO[str], process.stdout), output, lines), name="fixtures-server-output", daemon=True
    )
    drain.start()
    try:
        origin = _wait_until_ready(process, lines, output, startup_timeout)
        with httpx.Client(base_url=origin, timeout=10.0) as client:
            server = FixturesServer(origin=origin, _client=client, _output=output)
            _wait_until_answering(client, process, output, startup_timeout)
            yield server
    finally:
        _stop(process)
        drain.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def recorded_requests(scenario: str) -> list[RecordedRequest]:
    """The requests of ``scenario`` in recorded order, as @octokit/fixtures stores them (normalized-fixture.json)."""
    path = SCENARIOS_DIR / scenario / "normalized-fixture.json"
    if not path.is_file():
        require_installed()
        raise FixturesServerError(f"no scenario {scenario!r} in {SCENARIOS_DIR}")
    return [_recorded(entry) for entry in json.loads(path.read_text())]


def rewrite_urls[T: Json](value: T, *, origin: str, fixture_id: str) -> T:
    """``value`` with every ``https://<host>/`` turned into ``<origin>/<host>/<id>/``, as the server serves it."""
    if isinstance(value, str):
        return cast(T, re.sub(r"https?://([^/]+)/", lambda m: f"{origin}/{m.group(1)}/{fixture_id}/", value))
    if isinstance(value, list):
        return cast(T, [rewrite_urls(item, origin=origin, fixture_id=fixture_id) for item in value])
    if isinstance(value, dict):
        return cast(T, {key: rewrite_urls(item, origin=origin, fixture_id=fixture_id) for key, item in value.items()})
    return value


def _recorded(entry: dict[str, Json]) -> RecordedRequest:
    scope = cast(str, entry["scope"])  # https://api.github.com:443
    request_headers = cast(dict[str, Json], entry["reqheaders"])
    body = entry.get("body")
    return RecordedRequest(
        method=cast(str, entry["method"]).upper(),
        host=scope.split("://", 1)[1].split(":", 1)[0],
        path=cast(str, entry["path"]),
        request_headers={name.lower(): str(value) for name, value in request_headers.items() if name != "host"},
        body=None if body == "" else body,
        status=cast(int, entry["status"]),
        response_headers={name.lower(): str(value) for name, value in cast(dict[str, Json], entry["headers"]).items()},
        response=entry["response"],
    )


def _drain(stream: IO[str], output: deque[str], lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            output.append(line.rstrip("\n"))
            lines.put(line)
    except (OSError, ValueError):  # closed while reading
        pass
    finally:
        lines.put(None)


def _wait_until_ready(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], output: deque[str], timeout: float
) -> str:
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise FixturesServerError(_startup_failure(process, output, f"not ready after {timeout} s")) from None
        if line is None:
            raise FixturesServerError(_startup_failure(process, output, "exited during startup"))
        if line.startswith(_READY):
            return cast(str, json.loads(line.removeprefix(_READY))["origin"])


def _wait_until_answering(
    client: httpx.Client, process: subprocess.Popen[str], output: deque[str], timeout: float
) -> None:
    attempts = max(1, int(timeout / 0.1))
    for _ in range(attempts):
        with contextlib.suppress(httpx.TransportError):
            if client.get("/ping").status_code == httpx.codes.OK:
                return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise FixturesServerError(_startup_failure(process, output, "does not answer GET /ping"))


def _startup_failure(process: subprocess.Popen[str], output: deque[str], what: str) -> str:
    code = process.poll()
    status = f"exit code {code}" if code is not None else "still running"
    return f"@octokit/fixtures-server {what} ({status}); its output:\n" + "\n".join(output)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the launcher exits when its stdin closes
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
