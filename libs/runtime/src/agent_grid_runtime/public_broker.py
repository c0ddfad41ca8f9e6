"""The embedded SQS-compatible broker for local runs and tests.

LocalStack's SQS provider, in its own Python 3.13 virtual environment, run as a plain process (no Docker).
Used by the ``agent-grid broker`` CLI (and so the Makefile) and by the test fixtures. Production points
``endpoint_url`` at real SQS and never imports this.
"""

import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BrokerError", "EmbeddedBroker", "find_free_port"]

_READY_TIMEOUT_S = 60.0
_STOP_GRACE_S = 10.0


class BrokerError(Exception):
    """The embedded broker could not be installed, started or stopped; the message says what to do."""


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class EmbeddedBroker:
    """One LocalStack SQS process.

    Args:
        home: directory for the broker's virtual environment, state and log (``.local/broker``).
        requirements: the hashed lock of the broker's environment (``deploy/broker/requirements.txt``).
        port: TCP port on 127.0.0.1.
        name: distinguishes the state, pid and log files of several brokers under one home.
    """

    home: Path
    requirements: Path
    port: int = 4566
    name: str = "default"

    _process: "subprocess.Popen[bytes] | None" = field(default=None, init=False, repr=False)

    @classmethod
    def in_repo(cls, repo_root: Path, *, port: int, name: str | None = None) -> "EmbeddedBroker":
        """The broker as this repository lays it out: state under ``.local/broker``, lock in ``deploy/broker``."""
        return cls(
            home=repo_root / ".local" / "broker",
            requirements=repo_root / "deploy" / "broker" / "requirements.txt",
            port=port,
            name=name or f"port-{port}",
        )

    def __post_init__(self) -> None:
        # The broker runs with its state directory as cwd; every path it is given must be absolute.
        self.home = self.home.resolve()
        self.requirements = self.requirements.resolve()

    @property
    def endpoint_url(self) -> str:
        """The SQS endpoint to configure services with."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def venv(self) -> Path:
        """The broker's own virtual environment."""
        return self.home / "venv"

    @property
    def log_path(self) -> Path:
        """Where the broker's output goes."""
        return self.home / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        """The running broker's process id."""
        return self.home / f"{self.name}.pid"

    def install(self) -> None:
        """Create or refresh the broker's virtual environment from the lock; a no-op when it is current."""
        python = self.venv / "bin" / "python"
        stamp = self.venv / ".requirements.sha256"
        digest = hashlib.sha256(self.requirements.read_bytes()).hexdigest()
        if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
            return
        uv = _find_uv()
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        self.home.mkdir(parents=True, exist_ok=True)
        _run([uv, "venv", "--quiet", "--clear", "--python", str(_find_python313()), str(self.venv)], env)
        _run([uv, "pip", "sync", "--quiet", "--python", str(python), "--require-hashes", str(self.requirements)], env)
        stamp.write_text(digest)

    def start(self) -> bool:
        """Install if needed, start the broker in the background and wait until it answers.

        Returns:
            True when this call started it; False when a broker was already answering on the port (then
            the caller did not start it and should not stop it).

        Raises:
            BrokerError: the broker did not become ready.
        """
        if self.is_healthy():
            return False
        self.install()
        state = self.home / f"{self.name}-state"
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_", "PYTHON"))},
            "SERVICES": "sqs",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "LOCALSTACK_HOST": f"127.0.0.1:{self.port}",
            "LOCALSTACK_VOLUME_DIR": str(state),
            # Queue URLs of the form http://127.0.0.1:PORT/queue/REGION/ACCOUNT/NAME resolve without DNS.
            "SQS_ENDPOINT_STRATEGY": "path",
            # No DNS server, no certificate download, no telemetry: this machine has no internet.
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "SKIP_INFRA_DOWNLOADS": "1",
            "DEBUG": "0",
        }
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(self.venv / "bin" / "python"), "-m", "localstack.runtime.main"],
                cwd=state,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        self.pid_path.write_text(str(process.pid))
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_path.unlink(missing_ok=True)
                self._process = None
                raise BrokerError(f"broker exited with {process.returncode} during start; see {self.log_path}")
            if self.is_healthy():
                return True
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"broker not ready after {_READY_TIMEOUT_S:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the broker started by :meth:`start` (the whole process group). Idempotent."""
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return
        # A stale pid file may name a pid the system has since reused: signal only our broker.
        if _is_broker_process(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + _STOP_GRACE_S
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.1)
                # Whatever is left of the group (the leader, or children it left behind) goes now.
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._process is not None:
            self._process.wait()
            self._process = None
        self.pid_path.unlink(missing_ok=True)

    def is_healthy(self) -> bool:
        """True when an SQS-capable LocalStack answers on the port."""
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/_localstack/health", timeout=1) as response:
                body = response.read()
        except (urllib.error.URLError, OSError):
            return False
        return b'"sqs": "available"' in body or b'"sqs": "running"' in body


def _is_broker_process(pid: int) -> bool:
    try:
        return b"localstack.runtime.main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        waited_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited_pid = 0  # not our child (started by another process): fall back to a signal probe
    else:
        if waited_pid == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _find_uv() -> str:
    for candidate in (
        os.environ.get("UV"),
        shutil.which("uv"),
        str(Path(sys.prefix).parent / ".local" / "uv" / "bin" / "uv"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError("uv not found: run 'make install' (it installs uv into .local/uv) or set UV=/path/to/uv")


def _find_python313() -> Path:
    explicit = os.environ.get("AGENT_GRID_BROKER_PYTHON")
    if explicit:
        return Path(explicit)
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/3.13.*/bin/python3.13"), reverse=True)
    on_path = shutil.which("python3.13")
    if on_path and "/shims/" not in on_path:
        candidates.append(on_path)
    if not candidates:
        raise BrokerError(
            "the embedded broker needs Python 3.13 (LocalStack 4.14 imports warnings.deprecated): install it "
            "with pyenv or your package manager, or set AGENT_GRID_BROKER_PYTHON=/path/to/python3.13"
        )
    return Path(candidates[0])


def _run(command: list[str], env: dict[str, str]) -> None:
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise BrokerError(f"{' '.join(command)} failed:\n{completed.stderr.strip()}")
