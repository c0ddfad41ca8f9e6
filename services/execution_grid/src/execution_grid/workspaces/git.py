import asyncio
import base64
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# Proxy and CA settings are the only part of the caller's environment git may need to reach a remote; everything
# else (GIT_DIR, GIT_ASKPASS, credential helpers configured under the caller's HOME, ...) would change what git does.
_PASSTHROUGH = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "all_proxy",
    "GIT_SSL_CAINFO",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_STDERR_TAIL_CHARS = 1500


class GitFailure(Exception):
    """A git command failed or timed out; the message is already free of secrets."""


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Auth:
    """Credentials for one network command, passed only through the environment."""

    env: Mapping[str, str]
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GitRunner:
    """Runs git with a scrubbed environment, no terminal and a deadline."""

    git: str
    home: Path
    timeout_s: float
    base_env: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "LANG": "C",
            # Never prompt: a prompt would hang the worker until the timeout, and nobody is there to answer it.
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            # Transports git may use; ext:: and friends would run a command named by the URL.
            "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
            # The worker image's /etc/gitconfig is not ours to depend on; what git needs is set per repository.
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        env.update({name: os.environ[name] for name in _PASSTHROUGH if name in os.environ})
        object.__setattr__(self, "base_env", env)

    async def run(
        self,
        *args: str,
        cwd: Path,
        auth: Auth | None = None,
        check: bool = True,
    ) -> GitResult:
        env = dict(self.base_env)
        secrets: Sequence[str] = ()
        if auth is not None:
            env.update(auth.env)
            secrets = auth.secrets
        process = await asyncio.create_subprocess_exec(
            self.git,
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a timeout also kills the helpers git spawns (remote-https, index-pack).
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                out, err = await process.communicate()
        except TimeoutError:
            raise GitFailure(f"git {args[0]} timed out after {self.timeout_s:g} s") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        assert process.returncode is not None  # communicate() returned, so the process was reaped
        result = GitResult(
            process.returncode,
            out.decode(errors="replace"),
            redact(err.decode(errors="replace"), secrets),
        )
        if check and result.returncode != 0:
            raise GitFailure(f"git {args[0]} failed (exit {result.returncode}): {stderr_tail(result.stderr)}")
        return result


def auth_for(clone_url: str, token: str | None) -> Auth | None:
    if not token:
        return None
    credentials = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    header = f"Authorization: Basic {credentials}"
    parts = urlsplit(clone_url)
    # Scoped to the remote's origin so that git never sends the header to another host (e.g. after a redirect).
    key = (
        f"http.{parts.scheme}://{parts.netloc}/.extraHeader"
        if parts.scheme in ("http", "https") and parts.netloc
        else "http.extraHeader"
    )
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": key, "GIT_CONFIG_VALUE_0": header}
    return Auth(env=env, secrets=(token, credentials, header))


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def stderr_tail(stderr: str) -> str:
    text = stderr.strip()
    if len(text) > _STDERR_TAIL_CHARS:
        text = "…" + text[-_STDERR_TAIL_CHARS:]
    return text or "(no output)"
