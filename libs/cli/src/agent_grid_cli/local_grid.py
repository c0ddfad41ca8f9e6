"""``agent-grid run-local``: the whole grid as plain processes on the embedded broker (what ``make run`` starts)."""

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
        f"{prefix}AWS__ENDPOINT_URL": endpoint_url,
        f"{prefix}AWS__REGION": base.get(f"{prefix}AWS__REGION", "us-east-1"),
        f"{prefix}HTTP__PORT": base.get(f"{prefix}HTTP__PORT", str(service.port)),
        f"{prefix}LOG__FORMAT": base.get(f"{prefix}LOG__FORMAT", "console"),
        "PYTHONUNBUFFERED": "1",
        **(grid_environment(base, state_dir) if prefix == "EXECUTION_GRID_" else {}),
    }


def grid_environment(base: dict[str, str], state_dir: Path) -> dict[str, str]:
    """The grid worker's local defaults: the scripted agent stands in for Claude Code, the demo repo is local.

    The scripted agent speaks Claude Code's stream-json, so the whole path (adapter, usage parsing, exit
    reason, status comment) runs without a model API key. Point ``EXECUTION_GRID_AGENTS__CLAUDE_CODE__EXECUTABLE``
    at a real ``claude`` (and set its ``API_KEY``) to run the real thing.
    """
    scripted = str(Path(sys.executable).parent / "agent-grid-scripted-agent")
    defaults = {
        "EXECUTION_GRID_STATE_DIR": str(state_dir / "execution-grid"),
        "EXECUTION_GRID_AGENTS__CLAUDE_CODE__EXECUTABLE": scripted,
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


def run_local_grid(broker: EmbeddedBroker, *, keep_broker: bool = False) -> int:
    """Start the broker, the GitHub stand-in and the three services; stream their output; stop on SIGINT/SIGTERM."""
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
        while not stopping:
            output.pump(timeout=0.5)
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name}: exited with {process.returncode}; stopping the grid", flush=True)
                    exit_code = 1
                    stopping = True
    finally:
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
