"""The operator's commands: ``status``, ``runs``, ``logs``, ``kill`` and ``revive``, over the services' HTTP APIs.

Everything but ``status``'s health checks goes through the coordinator's ``/api`` (its token: ``AGENT_GRID_API_TOKEN``);
run logs come through its log proxy, so an operator never needs the grid workers' token. Exit codes: 0 done,
1 the request failed (no such run, a refused change), 3 a service is unreachable or unhealthy, 4 the token was
refused.
"""

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, NoReturn

import httpx
import typer
from agent_grid_contracts.public_issues import IssueRef, parse_issue_ref

from agent_grid_cli.settings import CliSettings

FAILED = 1
UNAVAILABLE = 3
REFUSED = 4

_ACTIVE_STATES = ("launching", "running")
# What `logs --follow` keeps to find where the previous fetch ended in the next one, when the window moved.
_ANCHOR_CHARS = 2048


class OperatorError(Exception):
    """A command cannot do its job; ``exit_code`` says why (see the module docstring)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CoordinatorApi:
    """The coordinator's ``/api`` with the operator's token; every failure becomes an :class:`OperatorError`."""

    def __init__(self, settings: CliSettings) -> None:
        self.url = settings.services.coordinator.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {settings.api_token.get_secret_value()}"},
            timeout=settings.http_timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params).json()

    def post(self, path: str) -> Any:
        return self._call("POST", path, {}).json()

    def text(self, path: str, **params: Any) -> str:
        return self._call("GET", path, params).text

    def _call(self, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        query = {name: value for name, value in params.items() if value is not None}
        try:
            response = self._client.request(method, path, params=query)
        except httpx.TimeoutException:
            raise OperatorError(f"the coordinator at {self.url} did not answer in time", UNAVAILABLE) from None
        except httpx.HTTPError as error:
            raise OperatorError(
                f"the coordinator at {self.url} is unreachable ({type(error).__name__}): is it running?", UNAVAILABLE
            ) from None
        if response.status_code == 401:
            raise OperatorError(
                f"the coordinator at {self.url} refused the token ({_detail(response)}): set AGENT_GRID_API_TOKEN to "
                "its COORDINATOR_API__TOKEN",
                REFUSED,
            )
        if response.status_code in (502, 503, 504):
            raise OperatorError(f"{_detail(response)} (HTTP {response.status_code})", UNAVAILABLE)
        if response.status_code >= 400:
            raise OperatorError(f"{_detail(response)} (HTTP {response.status_code})", FAILED)
        return response


@dataclass
class Health:
    service: str
    url: str
    state: str  # ok, failing, unreachable
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        failing = [f"{name}: {state}" for name, state in self.checks.items() if state != "ok"]
        return f"{self.state} ({', '.join(failing)})" if failing else self.state


def check_health(service: str, url: str, timeout_s: float) -> Health:
    base = url.rstrip("/")
    try:
        response = httpx.get(f"{base}/healthz", timeout=timeout_s)
    except httpx.HTTPError as error:
        return Health(service, base, "unreachable", {"http": type(error).__name__})
    try:
        body = response.json()
        checks = {str(name): str(state) for name, state in body.get("checks", {}).items()}
    except (ValueError, AttributeError):
        checks = {}
    return Health(service, base, "ok" if response.status_code == 200 else "failing", checks)


def add_operator_commands(app: typer.Typer, load_settings: Callable[[], CliSettings]) -> None:
    """Register the operator's commands on the ``agent-grid`` app."""

    @app.command()
    def status(as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False) -> None:
        """Each service's health, the queues and dead-letter queues, and the active runs."""
        _status(load_settings(), as_json=as_json)

    @app.command()
    def runs(
        repo: Annotated[str | None, typer.Option(help="OWNER/REPO")] = None,
        issue: Annotated[str | None, typer.Option(help="OWNER/REPO#NUMBER")] = None,
        state: Annotated[list[str] | None, typer.Option(help="launching, running, exited, lost (repeatable)")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
        as_json: Annotated[
            bool, typer.Option("--json", help="The runs as the coordinator's API returns them.")
        ] = False,
    ) -> None:
        """The coordinator's runs, newest first."""
        if issue is not None:
            _issue(issue)  # a malformed reference is the operator's to fix, before any request
        with _coordinator(load_settings()) as api:
            found = _or_fail(lambda: api.get("/api/runs", repo=repo, issue=issue, state=state, limit=limit))
        if as_json:
            typer.echo(json.dumps(found, indent=2))
        elif not found:
            typer.echo("no runs")
        else:
            _print_runs(found)

    @app.command()
    def logs(
        run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id (see `agent-grid runs`).")],
        tail_bytes: Annotated[int | None, typer.Option(min=1, help="Only the last N bytes.")] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
        interval_s: Annotated[float, typer.Option(min=0.1, help="How often --follow asks.")] = 2.0,
    ) -> None:
        """A run's log, read through the coordinator from the grid worker that ran it."""
        with _coordinator(load_settings()) as api:
            _logs(api, run_id, tail_bytes=tail_bytes, follow=follow, interval_s=interval_s)

    @app.command()
    def kill(issue: Annotated[str, typer.Argument(help="OWNER/REPO#NUMBER: any issue of the tree.")]) -> None:
        """Turn the kill switch on for the issue's tree: no more launches, its active runs are cancelled."""
        _switch(load_settings(), issue, "kill")

    @app.command()
    def revive(issue: Annotated[str, typer.Argument(help="OWNER/REPO#NUMBER: any issue of the tree.")]) -> None:
        """Turn the kill switch off for the issue's tree: launches may resume."""
        _switch(load_settings(), issue, "revive")


def _status(settings: CliSettings, *, as_json: bool) -> None:
    services = [
        ("issue-tracker", settings.services.issue_tracker),
        ("coordinator", settings.services.coordinator),
        *(("execution-grid", url) for url in settings.services.execution_grid),
    ]
    health = [check_health(name, url, settings.http_timeout_s) for name, url in services]
    problem: OperatorError | None = None
    queues: dict[str, dict[str, int]] = {}
    active: list[dict[str, Any]] = []
    paused: bool | None = None
    with _coordinator(settings) as api:
        try:
            queues = api.get("/api/queues")
            active = api.get("/api/runs", state=list(_ACTIVE_STATES), limit=1000)
            paused = bool(api.get("/api/policy").get("paused"))
        except OperatorError as error:
            problem = error
    if as_json:
        document = {
            "services": [asdict(found) for found in health],
            "queues": queues,
            "active_runs": active,
            "paused": paused,
            "error": str(problem) if problem else None,
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        _print_status(health, queues, active, paused)
    if problem is not None:
        _fail(str(problem), problem.exit_code, echo=not as_json)
    unhealthy = [found for found in health if found.state != "ok"]
    if unhealthy:
        names = ", ".join(f"{found.service} at {found.url}: {found.summary}" for found in unhealthy)
        _fail(f"not healthy: {names}", UNAVAILABLE, echo=not as_json)


def _logs(api: CoordinatorApi, run_id: str, *, tail_bytes: int | None, follow: bool, interval_s: float) -> None:
    path = f"/api/runs/{run_id}/log"
    if follow:  # a run still launching has no log yet: wait for its worker to start it
        while (run := _or_fail(lambda: api.get(f"/api/runs/{run_id}")))["log_url"] is None and run[
            "state"
        ] == "launching":
            time.sleep(interval_s)
    text = _or_fail(lambda: api.text(path, tail_bytes=tail_bytes))
    typer.echo(text, nl=False)
    if not follow:
        return
    while _or_fail(lambda: api.get(f"/api/runs/{run_id}"))["state"] in _ACTIVE_STATES:
        time.sleep(interval_s)  # polling the proxy: the workers' log API has no stream
        latest = _or_fail(lambda: api.text(path, tail_bytes=tail_bytes))
        typer.echo(_new_part(text, latest), nl=False)
        text = latest
    # What the agent printed between the last look and its end.
    typer.echo(_new_part(text, _or_fail(lambda: api.text(path, tail_bytes=tail_bytes))), nl=False)


def _switch(settings: CliSettings, issue: str, action: str) -> None:
    ref = _issue(issue)
    with _coordinator(settings) as api:
        root = _or_fail(lambda: _root_of(api, ref))
        answer = _or_fail(lambda: api.post(f"/api/trees/{root.repo}/{root.number}/{action}"))
    tree = f"the tree of {root}" + (f" (the root of {ref})" if root != ref else "")
    if action == "kill":
        typer.echo(f"killed {tree}: {answer.get('cancels_sent', 0)} run(s) told to stop")
    else:
        typer.echo(f"revived {tree}")


def _root_of(api: CoordinatorApi, ref: IssueRef) -> IssueRef:
    # The kill switch belongs to a tree's root. A run on the issue names it; an issue with no run yet is taken as
    # the root of its own tree (the coordinator knows no other).
    found = api.get("/api/runs", issue=str(ref), limit=1)
    if not found:
        return ref
    _, _, root = str(found[0]["root"]).partition(":")
    return parse_issue_ref(root, tracker=ref.tracker)


def _new_part(before: str, after: str) -> str:
    """What ``after`` adds to ``before``: a log that grew, or a tail window that moved on."""
    if after.startswith(before):
        return after[len(before) :]
    anchor = before[-_ANCHOR_CHARS:]
    at = after.rfind(anchor) if anchor else -1
    if at >= 0:
        return after[at + len(anchor) :]
    return f"\n[… part of the log was skipped …]\n{after}"


def _issue(text: str) -> IssueRef:
    try:
        return parse_issue_ref(text)
    except ValueError as error:
        _fail(str(error), FAILED)


@contextmanager
def _coordinator(settings: CliSettings) -> Iterator[CoordinatorApi]:
    api = CoordinatorApi(settings)
    try:
        yield api
    finally:
        api.close()


def _or_fail[T](call: Callable[[], T]) -> T:
    try:
        return call()
    except OperatorError as error:
        _fail(str(error), error.exit_code)


def _fail(message: str, code: int, *, echo: bool = True) -> NoReturn:
    if echo:
        typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:200] or response.reason_phrase


def _print_status(
    health: list[Health], queues: dict[str, dict[str, int]], active: list[dict[str, Any]], paused: bool | None
) -> None:
    typer.echo(f"{'service':<16} {'url':<32} health")
    for found in health:
        typer.echo(f"{found.service:<16} {found.url:<32} {found.summary}")
    if queues:
        typer.echo(f"\n{'queue':<16} {'visible':>8} {'in flight':>10} {'delayed':>8}")
        for name, depth in queues.items():
            typer.echo(f"{name:<16} {depth['visible']:>8} {depth['in_flight']:>10} {depth['delayed']:>8}")
    if paused is not None:
        by_state = ", ".join(f"{state} {sum(run['state'] == state for run in active)}" for state in _ACTIVE_STATES)
        typer.echo(f"\nactive runs: {len(active)} ({by_state}); launches {'paused' if paused else 'on'}")
        if active:
            _print_runs(active)


def _print_runs(found: list[dict[str, Any]]) -> None:
    typer.echo(f"{'run':<26} {'issue':<28} {'mode':<7} {'state':<10} {'exit':<17} {'cost $':>7} {'created (UTC)':<20}")
    for run in found:
        issue = str(run["issue"]).partition(":")[2] or str(run["issue"])
        created = str(run["created_at"])[:19].replace("T", " ")
        typer.echo(
            f"{run['run_id']:<26} {issue:<28} {run['mode']:<7} {run['state']:<10} {run['exit_reason'] or '-':<17} "
            f"{run['cost_usd']:>7.2f} {created:<20}"
        )
