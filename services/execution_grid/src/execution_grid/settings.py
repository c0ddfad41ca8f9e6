import socket
from pathlib import Path
from typing import Annotated, Literal

from agent_grid_runtime.public_settings import (
    BaseServiceSettings,
    ConsumerSettings,
    HttpSettings,
    service_settings_config,
)
from pydantic import BaseModel, Field, SecretStr


class AgentKindSettings(BaseModel):
    """How this worker runs one agent kind (``EXECUTION_GRID_AGENTS__CLAUDE_CODE__API_KEY`` and so on)."""

    executable: str | None = Field(default=None, description="Path or name on PATH; the adapter's default if unset.")
    model: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = Field(default=None, description="The model API key runs of this kind receive.")
    api_key_env: str | None = Field(
        default=None, description="The variable the key is passed in; the adapter's default if unset (aider: set it)."
    )


class WorkspaceSettings(BaseModel):
    """Where runs get their working copy."""

    clone_base_url: str | None = Field(
        default="https://github.com",
        description="A launch without a clone URL clones <base>/<owner>/<repo>.git; None: runs get an empty dir.",
    )
    keep: Literal["never", "on_failure", "always"] = "on_failure"
    token: SecretStr | None = Field(default=None, description="Token for cloning private repositories.")
    min_refetch_interval_s: Annotated[float, Field(ge=0)] = 0.0


class SandboxSettings(BaseModel):
    """Process isolation. ``bubblewrap`` adds PID/IPC namespaces and a read-only root (apt-get install bubblewrap)."""

    runner: Literal["subprocess", "bubblewrap"] = "subprocess"
    address_space_bytes: int | None = Field(
        default=None, description="RLIMIT_AS per agent; Node-based CLIs reserve a lot of virtual memory."
    )
    max_processes: int | None = Field(
        default=8192, description="RLIMIT_NPROC: it counts all processes of the user, so size it for every run."
    )
    max_open_files: int | None = 4096
    hidden_paths: tuple[Path, ...] = Field(
        default=(),
        description="Under bubblewrap, more paths the agents see empty, on top of the worker's state directory "
        "and the credential stores in its home (~/.aws, ~/.ssh, ...).",
    )


class SupervisionSettings(BaseModel):
    """Timings the grid applies to every run (the launch's own limits come on top)."""

    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 15.0
    term_grace_s: Annotated[float, Field(ge=0)] = 10.0
    """Between SIGTERM and SIGKILL."""
    cancel_grace_s: Annotated[float, Field(ge=0)] = 30.0
    """Hand-off time a cancelled run gets before SIGTERM, unless the cancel names its own."""
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 30.0
    """Hand-off time running agents get when the worker is asked to stop."""
    max_wall_clock_s: Annotated[int, Field(ge=1)] = 4 * 3600
    """No launch runs longer than this, whatever it asks for."""
    log_max_bytes: Annotated[int, Field(ge=4096)] = 5 * 1024 * 1024
    keep_run_records_s: Annotated[float, Field(ge=0)] = 7 * 86_400
    """Finished runs' directories (logs, prompt, exit record) are kept this long, for the log API."""
    housekeeping_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    """How often old run records and leftover workspaces are removed while the worker runs."""


class Settings(BaseServiceSettings):
    """execution-grid settings; every variable starts with ``EXECUTION_GRID_`` (e.g. ``EXECUTION_GRID_SLOTS``)."""

    model_config = service_settings_config("EXECUTION_GRID_")

    http: HttpSettings = HttpSettings(port=8003)
    worker_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    slots: Annotated[int, Field(ge=1, le=1000)] = 4
    """Agents this worker runs at once; it receives launches only while one is free."""
    state_dir: Path = Path(".agent-grid/execution-grid")
    """Run records, logs and workspaces; must survive a restart of the worker (a volume in containers)."""
    public_url: str | None = Field(default=None, description="Base URL of this worker's API, for log links.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token for /runs; None: the API is off.")
    tracker_token: SecretStr | None = Field(default=None, description="The scoped token agents act on GitHub with.")
    tools_url: str | None = Field(default=None, description="The agent tools endpoint (the coordinator's URL).")
    run_token_secret: SecretStr | None = Field(
        default=None,
        description="Shared with the coordinator (COORDINATOR_TOOLS__RUN_TOKEN_SECRET): signs each run's tools token.",
    )
    tools_command: list[str] = Field(
        default_factory=lambda: ["agent-grid-tools", "mcp"],
        description="The tools' MCP server, registered with agent CLIs that speak MCP.",
    )
    passthrough_env: list[str] = Field(
        default_factory=list, description="Extra variables agents may inherit (proxies, CA bundles)."
    )
    agents: dict[str, AgentKindSettings] = Field(default_factory=dict)
    workspace: WorkspaceSettings = WorkspaceSettings()
    sandbox: SandboxSettings = SandboxSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    # A launch holds its message until the agent has started (a clone can take a while): the visibility
    # heartbeat keeps it hidden meanwhile. One long poll is enough for launch rates a node can start.
    launch_consumer: ConsumerSettings = ConsumerSettings(visibility_timeout_s=60, receive_concurrency=1)
    control_consumer: ConsumerSettings = ConsumerSettings(max_in_flight=10, visibility_timeout_s=30)
