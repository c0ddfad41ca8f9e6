"""What one agent process needs before it starts: its request to the adapter, its environment, its spec.

Pure assembly from the launch, the settings and the workspace, so that the grid's lifecycle code stays about
the lifecycle. Nothing here touches a process or the broker.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_run_tokens import mint_run_token
from pydantic import SecretStr

from execution_grid.agents.public_agents import AgentAdapter, AgentCommand, AgentRequest
from execution_grid.environment import RunSecrets, agent_environment
from execution_grid.prompts.public_prompts import render_prompt
from execution_grid.run_store import safe_run_id
from execution_grid.runner.public_runner import ProcessSpec, ResourceLimits
from execution_grid.settings import AgentKindSettings, Settings
from execution_grid.workspaces.public_workspaces import Workspace, git_auth_env

# A run's tools token outlives its wall clock by this much: the exit and its last tool calls still count.
_TOKEN_GRACE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RunFiles:
    """Where one run's agent-writable files are: its home, temporary files, prompt and wind-down file."""

    agent_dir: Path

    @property
    def home(self) -> Path:
        return self.agent_dir / "home"

    @property
    def tmp(self) -> Path:
        return self.agent_dir / "tmp"

    @property
    def prompt(self) -> Path:
        return self.agent_dir / "prompt.md"

    @property
    def wind_down(self) -> Path:
        return self.agent_dir / "wind-down"


def clone_url(launch: LaunchAgent, settings: Settings) -> str | None:
    """The repository the run works in: the launch's own, else ``<clone_base_url>/<owner>/<repo>.git``."""
    if launch.workspace.clone_url:
        return launch.workspace.clone_url
    base = settings.workspace.clone_base_url
    return f"{base.rstrip('/')}/{launch.issue.repo}.git" if base else None


def wall_clock_s(launch: LaunchAgent, settings: Settings) -> int:
    """The launch's wall clock, never above the worker's ceiling."""
    return min(launch.limits.wall_clock_s, settings.supervision.max_wall_clock_s)


def prepare_command(
    launch: LaunchAgent, settings: Settings, adapter: AgentAdapter, workspace: Workspace, files: RunFiles
) -> tuple[AgentCommand, str | None]:
    """Write the prompt, build the adapter's command; returns it with the run's tools token (if tools are on)."""
    files.home.mkdir(parents=True, exist_ok=True)
    files.tmp.mkdir(parents=True, exist_ok=True)
    files.prompt.write_text(
        render_prompt(launch, workspace=workspace.path, wind_down_file=str(files.wind_down), branch=workspace.branch)
    )
    token = _run_token(launch, settings)
    kind = settings.agents.get(launch.agent_kind) or AgentKindSettings()
    command = adapter.command(
        AgentRequest(
            run_id=launch.run_id,
            mode=launch.mode,
            prompt=files.prompt.read_text(),
            prompt_file=files.prompt,
            workspace=workspace.path,
            limits=launch.limits,
            executable=kind.executable,
            model=kind.model,
            extra_args=tuple(kind.extra_args),
            tools_command=tuple(settings.tools_command) if token and settings.tools_command else None,
        )
    )
    return command, token


def process_spec(
    launch: LaunchAgent,
    settings: Settings,
    adapter: AgentAdapter,
    command: AgentCommand,
    workspace: Workspace,
    files: RunFiles,
    *,
    token: str | None,
    inherited: dict[str, str],
) -> ProcessSpec:
    """The process to start: the command, in the workspace, with exactly the environment the run needs."""
    kind = settings.agents.get(launch.agent_kind) or AgentKindSettings()
    run_variables = {
        "HOME": str(files.home),
        "TMPDIR": str(files.tmp),
        "AGENT_GRID_RUN_ID": launch.run_id,
        "AGENT_GRID_ISSUE": str(launch.issue),
        "AGENT_GRID_MODE": launch.mode.value,
        "AGENT_GRID_WORKSPACE": str(workspace.path),
        "AGENT_GRID_PROMPT_FILE": str(files.prompt),
        "AGENT_GRID_WIND_DOWN_FILE": str(files.wind_down),
    }
    if settings.tools_url and token:
        run_variables["AGENT_GRID_TOOLS_URL"] = settings.tools_url
        run_variables["AGENT_GRID_RUN_TOKEN"] = token
    if workspace.branch:
        run_variables["AGENT_GRID_BRANCH"] = workspace.branch
    url, tracker_token = clone_url(launch, settings), _secret(settings.tracker_token)
    if url and tracker_token and url.startswith(("https://", "http://")):
        # The agent pushes its branch with the run's token, passed the way git reads config from the
        # environment: never on a command line, never in a file of the workspace.
        run_variables.update(git_auth_env(url, tracker_token))
    env = agent_environment(
        inherited,
        passthrough=settings.passthrough_env,
        run_variables=run_variables,
        adapter_variables=command.env,
        secrets=RunSecrets(
            tracker_token=tracker_token,
            api_key_env=kind.api_key_env or adapter.api_key_env,
            api_key=_secret(kind.api_key),
        ),
    )
    sandbox = settings.sandbox
    return ProcessSpec(
        argv=command.argv,
        cwd=workspace.path,
        env=env,
        stdin=command.stdin,
        limits=ResourceLimits(
            address_space_bytes=sandbox.address_space_bytes,
            max_processes=sandbox.max_processes,
            max_open_files=sandbox.max_open_files,
        ),
        # Not the run's records (an agent must not forge its own exit) and not the shared git cache.
        writable=(workspace.path, files.agent_dir),
    )


def _run_token(launch: LaunchAgent, settings: Settings) -> str | None:
    secret = _secret(settings.run_token_secret)
    if not secret or not settings.tools_url or not safe_run_id(launch.run_id):
        return None
    expires_at = datetime.now(UTC) + timedelta(seconds=wall_clock_s(launch, settings)) + _TOKEN_GRACE
    return mint_run_token(secret.encode(), launch.run_id, expires_at)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
