"""``agent-grid run-local``: the whole grid as plain processes on the embedded broker (what ``make run`` starts)."""

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent_grid_runtime.public_broker import EmbeddedBroker

# Above the slowest clean stop of a service: uvicorn's 10 s connection grace plus a 20 s consumer drain.
_STOP_GRACE_S = 45.0


@dataclass(frozen=True)
class LocalService:
    name: str
    module: str
    env_prefix: str
    port: int


# The stand-in for GitHub: the project's GitHub test server, seeded with a demo organization, a person, our
# bot account and a webhook to the issue-tracker. Create issues with alice's token; the grid acts as the bot.
LOCAL_GITHUB = LocalService("github", "agent_grid_github_test_server", "", 8765)
LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret"
LOCAL_HUMAN_TOKEN = "local-dev-alice-token"
LOCAL_BOT_TOKEN = "local-dev-bot-token"
LOCAL_API_TOKEN = "local-dev-api-token"
# Shared by the coordinator (which checks run tokens) and the grid worker (which mints one per run).
LOCAL_RUN_TOKEN_SECRET = "local-dev-run-token-secret"
LOCAL_GITHUB_SEED = {
    "users": [{"login": "alice"}, {"login": "agent-grid[bot]"}],
    "organizations": [{"login": "demo", "members": ["alice"]}],
    "repos": [{"owner": "demo", "name": "widgets", "description": "agent-grid's local demo repository"}],
    "tokens": [
        {"login": "alice", "token": LOCAL_HUMAN_TOKEN},
        {"login": "agent-grid[bot]", "token": LOCAL_BOT_TOKEN},
    ],
}

SERVICES = (
    LocalService("issue-tracker", "issue_tracker", "ISSUE_TRACKER_", 8001),
    LocalService("coordinator", "coordinator", "COORDINATOR_", 8002),
    LocalService("execution-grid", "execution_grid", "EXECUTION_GRID_", 8003),
)


def github_port(base: dict[str, str]) -> int:
    """The GitHub stand-in's port (``AGENT_GRID_GITHUB_PORT``, default 8765)."""
    return int(base.get("AGENT_GRID_GITHUB_PORT", LOCAL_GITHUB.port))


def github_seed(base: dict[str, str]) -> dict[str, object]:
    """The stand-in's seed, its webhook pointed at wherever the issue-tracker listens."""
    tracker_port = base.get("ISSUE_TRACKER_HTTP__PORT", "8001")
    hook = {"url": f"http://127.0.0.1:{tracker_port}/webhooks/github", "secret": LOCAL_WEBHOOK_SECRET}
    return {**LOCAL_GITHUB_SEED, "webhooks": [hook]}


def service_environment(
    service: LocalService, endpoint_url: str, base: dict[str, str], state_dir: Path
) -> dict[str, str]:
    prefix = service.env_prefix
    if not prefix:  # the GitHub stand-in: no broker, no settings of ours
        return {**base, "PYTHONUNBUFFERED": "1"}
    return {
        **base,
        # Shared with the local GitHub stand-in's webhook; `curl` and the tests sign deliveries with it too.
        "ISSUE_TRACKER_WEBHOOK__SECRET": base.get("ISSUE_TRACKER_WEBHOOK__SECRET", LOCAL_WEBHOOK_SECRET),
        f"{prefix}GITHUB__API_URL": base.get(f"{prefix}GITHUB__API_URL", f"http://127.0.0.1:{github_port(base)}/"),
        "COORDINATOR_API__TOKEN": base.get("COORDINATOR_API__TOKEN", LOCAL_API_TOKEN),
        # The stand-in starts empty every time, so the ledger does too (set COORDINATOR_LEDGER_URL to keep one).
        "COORDINATOR_LEDGER_URL": base.get(
            "COORDINATOR_LEDGER_URL", f"sqlite+aiosqlite:///{state_dir / 'ledger.sqlite3'}"
        ),
        f"{prefix}GITHUB__TOKEN": base.get(f"{prefix}GITHUB__TOKEN", LOCAL_BOT_TOKEN),
        # GitHub asks integrations to space content writes (~1 s apart, 80 a minute); the stand-in does not,
        # and the demo would crawl at that pace. Against real GitHub (GITHUB__API_URL set), the defaults hold.
        **_stand_in_write_pace(prefix, base),
        f"{prefix}AWS__ENDPOINT_URL": endpoint_url,
        f"{prefix}AWS__REGION": base.get(f"{prefix}AWS__REGION", "us-east-1"),
        f"{prefix}HTTP__PORT": base.get(f"{prefix}HTTP__PORT", str(service.port)),
        f"{prefix}LOG__FORMAT": base.get(f"{prefix}LOG__FORMAT", "console"),
        "PYTHONUNBUFFERED": "1",
        **(grid_environment(base, state_dir) if prefix == "EXECUTION_GRID_" else {}),
        **(coordinator_environment(base) if prefix == "COORDINATOR_" else {}),
    }


def _stand_in_write_pace(prefix: str, base: dict[str, str]) -> dict[str, str]:
    if f"{prefix}GITHUB__API_URL" in base:
        return {}
    return {
        f"{prefix}GITHUB__WRITE_INTERVAL_S": base.get(f"{prefix}GITHUB__WRITE_INTERVAL_S", "0"),
        f"{prefix}GITHUB__WRITES_PER_MINUTE": base.get(f"{prefix}GITHUB__WRITES_PER_MINUTE", "100000"),
    }


def coordinator_environment(base: dict[str, str]) -> dict[str, str]:
    """The coordinator's local defaults: the agent tools on, and a pace a person can watch.

    A parent may be resumed every 5 s (production: 120 s) so that the demo epic is managed as each child
    finishes, and a run may spend at most 250,000 tokens, so that the demo's runaway is stopped in seconds.
    """
    grid_url = f"http://127.0.0.1:{base.get('EXECUTION_GRID_HTTP__PORT', '8003')}/"
    defaults = {
        # The log proxy (/api/runs/{id}/log, `agent-grid logs`) reads the local worker's API with its token.
        "COORDINATOR_GRID_API__TOKEN": LOCAL_API_TOKEN,
        "COORDINATOR_GRID_API__ALLOWED_URL_PREFIXES": json.dumps([grid_url]),
        "COORDINATOR_TOOLS__RUN_TOKEN_SECRET": LOCAL_RUN_TOKEN_SECRET,
        # The demo's agents act on GitHub with the coordinator's own token, from which the records' key would
        # otherwise be derived: a key of the coordinator's alone (the stand-in and the ledger start afresh too).
        "COORDINATOR_RECORDS__SECRET": secrets.token_urlsafe(32),
        "COORDINATOR_POLICY__MANAGEMENT__MIN_INTERVAL_S": "5",
        "COORDINATOR_POLICY__CAPS__MAX_TOKENS_PER_RUN": "250000",
        "COORDINATOR_SWEEP_INTERVAL_S": "5",
    }
    return {name: base.get(name, value) for name, value in defaults.items()}


def grid_environment(base: dict[str, str], state_dir: Path) -> dict[str, str]:
    """The grid worker's local defaults: the demo agent stands in for Claude Code, the demo repo is local.

    The demo agent speaks Claude Code's stream-json and acts through the agent-grid tools, so the whole path
    (adapter, MCP registration, run token, tools, usage parsing, exit reason, status comment) runs without a
    model API key. Point ``EXECUTION_GRID_AGENTS__CLAUDE_CODE__EXECUTABLE`` at a real ``claude`` (and set its
    ``API_KEY``) to run the real thing.
    """
    demo_agent = str(Path(sys.executable).parent / "agent-grid-demo-agent")
    coordinator_port = base.get("COORDINATOR_HTTP__PORT", "8002")
    defaults = {
        "EXECUTION_GRID_STATE_DIR": str(state_dir / "execution-grid"),
        "EXECUTION_GRID_AGENTS__CLAUDE_CODE__EXECUTABLE": demo_agent,
        "EXECUTION_GRID_TOOLS_URL": f"http://127.0.0.1:{coordinator_port}",
        "EXECUTION_GRID_RUN_TOKEN_SECRET": LOCAL_RUN_TOKEN_SECRET,
        "EXECUTION_GRID_WORKSPACE__CLONE_BASE_URL": str(state_dir / "git"),
        "EXECUTION_GRID_API_TOKEN": LOCAL_API_TOKEN,
        "EXECUTION_GRID_PUBLIC_URL": f"http://127.0.0.1:{base.get('EXECUTION_GRID_HTTP__PORT', '8003')}",
        "EXECUTION_GRID_TRACKER_TOKEN": LOCAL_BOT_TOKEN,
    }
    return {name: base.get(name, value) for name, value in defaults.items()}


def create_demo_repository(git_root: Path) -> Path:
    """A bare ``demo/widgets`` repository with one commit: what the grid clones for the demo's runs."""
    upstream = git_root / "demo" / "widgets.git"
    seed = git_root / "seed"
    git = ["git", "-c", "user.name=agent-grid", "-c", "user.email=agent-grid@users.noreply.github.com"]
    quiet = {"check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(upstream)], **quiet)  # type: ignore[call-overload]
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], **quiet)  # type: ignore[call-overload]
    (seed / "README.md").write_text("# widgets\n\nagent-grid's local demo repository.\n")
    subprocess.run([*git, "-C", str(seed), "add", "README.md"], **quiet)  # type: ignore[call-overload]
    subprocess.run([*git, "-C", str(seed), "commit", "-qm", "Start the widgets"], **quiet)  # type: ignore[call-overload]
    subprocess.run([*git, "-C", str(seed), "push", "-q", str(upstream), "main"], **quiet)  # type: ignore[call-overload]
    shutil.rmtree(seed)
    return upstream


# The demo that `make run` plays: alice opens an epic the agent splits into three ordered steps (the third
# blocked by the second), and an issue whose agent runs away with its budget. See the demo agent's docstring
# (execution_grid/demo_agent.py) for how it reads them.
DEMO_ISSUES = (
    {
        "title": "Give the widgets a catalogue",
        "body": (
            "Our widgets need a small catalogue that people can browse.\n\n"
            "- [ ] Describe a widget\n"
            "- [ ] Store the catalogue in a file (after 1)\n"
            "- [ ] List the catalogue on the command line (after 2)\n"
        ),
        "labels": ["agent-grid"],
    },
    {
        "title": "Make every widget faster",
        "body": "Keep optimising until every widget is instant.\n\ndemo-agent: runaway\n",
        "labels": ["agent-grid"],
    },
)
_DEMO_START_TIMEOUT_S = 90.0


def _http_json(url: str, *, token: str | None = None, scheme: str = "Bearer", data: object = None) -> object:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"{scheme} {token}"
    body = None
    if data is not None:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _healthy(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class DemoNarrator:
    """Opens the demo's issues once the grid is healthy, then tells the story in the terminal.

    Every second it reads the coordinator's runs (its API) and the demo issues (the GitHub stand-in) and
    prints what changed: launches, ends, closed issues, escalations. Its own thread; ``stop()`` ends it.
    """

    def __init__(self, base: dict[str, str], emit: Callable[[str], None]) -> None:
        self._github = f"http://127.0.0.1:{github_port(base)}"
        self._coordinator = f"http://127.0.0.1:{base.get('COORDINATOR_HTTP__PORT', '8002')}"
        self._token = base.get("COORDINATOR_API__TOKEN", LOCAL_API_TOKEN)
        self._ports = [base.get(f"{s.env_prefix}HTTP__PORT", str(s.port)) for s in SERVICES]
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-narrator", daemon=True)
        self._runs: dict[str, str] = {}
        self._issues: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.started_at: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + _DEMO_START_TIMEOUT_S
        while not all(_healthy(port) for port in self._ports):
            if self._stop.wait(0.5):
                return
            if time.monotonic() > deadline:
                self._emit("the services did not become healthy; no demo issues opened")
                return
        self._open_issues()
        while not self._stop.wait(1.0):
            try:
                self._tell()
            except (OSError, urllib.error.URLError, ValueError) as error:
                self._emit(f"(could not read the grid's state: {error})")

    def _open_issues(self) -> None:
        self.started_at = time.monotonic()
        for issue in DEMO_ISSUES:
            try:
                opened = _http_json(
                    f"{self._github}/repos/demo/widgets/issues",
                    token=LOCAL_HUMAN_TOKEN,
                    scheme="token",
                    data=issue,
                )
            except (OSError, urllib.error.URLError, ValueError) as error:
                self._emit(f"could not open the demo issue {issue['title']!r}: {error}")
                continue
            number = opened["number"] if isinstance(opened, dict) else "?"
            self._emit(f"alice opened demo/widgets#{number} {issue['title']!r} (label agent-grid)")

    def _tell(self) -> None:
        runs = _http_json(f"{self._coordinator}/api/runs?limit=200", token=self._token)
        for run in reversed(runs if isinstance(runs, list) else []):
            state, previous = run["state"], self._runs.get(run["run_id"])
            if state == previous:
                continue
            self._runs[run["run_id"]] = state
            where = f"{run['mode']:<6} {run['issue'].removeprefix('github:'):<16} {run['run_id']}"
            if state in ("launching", "running") and previous is None:
                self._emit(f"{self._clock()} launched {where}")
            elif state not in ("launching", "running"):
                spent = f"{run['cost_usd']:.2f} USD, {run['tokens']:,} tokens"
                self._emit(f"{self._clock()} ended    {where}: {run['exit_reason'] or state} ({spent})")
        issues = _http_json(
            f"{self._github}/repos/demo/widgets/issues?state=all&per_page=100", token=LOCAL_HUMAN_TOKEN, scheme="token"
        )
        for issue in issues if isinstance(issues, list) else []:
            labels = tuple(sorted(label["name"] for label in issue.get("labels", [])))
            seen = self._issues.get(issue["number"])
            self._issues[issue["number"]] = (issue["state"], labels)
            if seen is None:
                continue
            ref = f"demo/widgets#{issue['number']} {issue['title']!r}"
            if issue["state"] == "closed" and seen[0] != "closed":
                self._emit(f"{self._clock()} closed   {ref}")
            if "needs-human" in labels and "needs-human" not in seen[1]:
                self._emit(f"{self._clock()} needs-human on {ref}: a person must look")

    def _clock(self) -> str:
        return f"t+{time.monotonic() - (self.started_at or time.monotonic()):5.1f}s"


@dataclass
class _OutputPump:
    """Copies the services' output to ours, one prefixed line at a time.

    It reads raw file descriptors, so that nothing waits in a buffer the selector cannot see.
    """

    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    partial: dict[int, bytes] = field(default_factory=dict)

    def add(self, name: str, fd: int) -> None:
        os.set_blocking(fd, False)
        self.partial[fd] = b""
        self.selector.register(fd, selectors.EVENT_READ, name)

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            self._read(key.fd, key.data)

    def drain(self) -> None:
        """Read every stream to its end (after the services exited)."""
        for key in list(self.selector.get_map().values()):
            while key.fd in self.partial:
                self._read(key.fd, key.data)

    def _read(self, fd: int, name: str) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._emit(name, self.partial.pop(fd))
            self.selector.unregister(fd)
            os.close(fd)
            return
        *lines, self.partial[fd] = (self.partial[fd] + chunk).split(b"\n")
        for line in lines:
            self._emit(name, line)

    @staticmethod
    def _emit(name: str, line: bytes) -> None:
        if line:
            print(f"{name:>14} | {line.decode(errors='replace').rstrip()}", flush=True)


def run_local_grid(broker: EmbeddedBroker, *, keep_broker: bool = False, demo: bool = True) -> int:
    """Start the broker, the GitHub stand-in and the three services; stream their output; stop on SIGINT/SIGTERM.

    With ``demo``, alice opens the demo issues once the services are healthy, and a narrator tells what the
    grid does with them.
    """
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Before anything starts, so that Ctrl-C at any moment leads to the same orderly stop.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    output = _OutputPump()
    base = dict(os.environ)
    state_dir = Path(tempfile.mkdtemp(prefix="agent-grid-local-"))  # the stand-in's seed, the ledger
    started_broker = False
    narrator: DemoNarrator | None = None
    exit_code = 0
    try:
        print(f"broker: starting LocalStack SQS on {broker.endpoint_url} (log: {broker.log_path})", flush=True)
        started_broker = broker.start()
        if not started_broker:
            print(f"broker: already running on {broker.endpoint_url}; using it and leaving it running", flush=True)
        create_demo_repository(state_dir / "git")
        seed = state_dir / "github-seed.json"
        seed.write_text(json.dumps(github_seed(base)))
        commands = {
            LOCAL_GITHUB: ["--port", str(github_port(base)), "--seed", str(seed)],
            **{service: [] for service in SERVICES},
        }
        for service, arguments in commands.items():
            if stopping:
                break
            process = subprocess.Popen(  # our own interpreter and modules
                [sys.executable, "-m", service.module, *arguments],
                env=service_environment(service, broker.endpoint_url, base, state_dir),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches only this runner, which then stops each service
                # once, with SIGTERM. A second signal would make the grid worker force its exit.
                start_new_session=True,
            )
            processes[service.name] = process
            assert process.stdout is not None  # PIPE was requested
            output.add(service.name, process.stdout.fileno())
            print(f"{service.name}: started (pid {process.pid}) on http://127.0.0.1:{service.port}", flush=True)
        if not stopping:
            print(
                f"grid: running; Ctrl-C stops it. GitHub stand-in: http://127.0.0.1:{github_port(base)}/ "
                f"(repo demo/widgets; as a person: Authorization: token {LOCAL_HUMAN_TOKEN})",
                flush=True,
            )
            coordinator_port = base.get("COORDINATOR_HTTP__PORT", "8002")
            api_token = base.get("COORDINATOR_API__TOKEN", LOCAL_API_TOKEN)
            print(f"dashboard: http://127.0.0.1:{coordinator_port}/dashboard?token={api_token}", flush=True)
            if demo:
                narrator = DemoNarrator(base, lambda text: print(f"{'demo':>14} | {text}", flush=True))
                narrator.start()
        while not stopping:
            output.pump(timeout=0.5)
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name}: exited with {process.returncode}; stopping the grid", flush=True)
                    exit_code = 1
                    stopping = True
    finally:
        if narrator is not None:
            narrator.stop()
        _stop_services(processes, output)
        if started_broker and not keep_broker:
            broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        print("grid: stopped", flush=True)
    return exit_code


def _stop_services(processes: dict[str, subprocess.Popen[bytes]], output: _OutputPump) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        output.pump(timeout=0.2)
    for name, process in processes.items():
        if process.poll() is None:
            print(f"{name}: still running after {_STOP_GRACE_S:.0f}s; killing it", flush=True)
            process.kill()
            process.wait()
    output.drain()
