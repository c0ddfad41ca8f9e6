"""Agent adapters: one per agent kind, each turning a run into a command line and the agent's output into usage.

The worker knows nothing of any particular CLI: it asks the adapter for the command, feeds every line the
agent prints to the adapter's reader, and reads usage, cost and a summary back. Adding an agent kind means
adding an adapter here, nothing else.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage

__all__ = ["AgentAdapter", "AgentCommand", "AgentRequest", "OutputReader", "ReportedEnd"]


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What an adapter needs to build the command of one run."""

    run_id: str
    mode: RunMode
    prompt: str
    prompt_file: Path
    """The prompt, already written to this file (for CLIs that read a file rather than an argument)."""
    workspace: Path
    limits: RunLimits
    executable: str | None = None
    """Overrides the adapter's default executable name (a path, or a name looked up on PATH)."""
    model: str | None = None
    extra_args: tuple[str, ...] = ()
    """Operator-configured arguments appended before the prompt (adapter-specific flags)."""
    tools_command: tuple[str, ...] | None = None
    """The argv of the agent-grid tools' MCP server (stdio), e.g. ``("agent-grid-tools", "mcp")``: adapters of CLIs
    that speak MCP register it for this run as server ``agent-grid``. None: no MCP registration (the tools' CLI
    still works wherever the run's ``AGENT_GRID_TOOLS_URL`` and ``AGENT_GRID_RUN_TOKEN`` are set)."""


@dataclass(frozen=True, slots=True)
class AgentCommand:
    """The process to start: ``argv`` in the workspace, ``stdin`` written then closed (None: no stdin)."""

    argv: tuple[str, ...]
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """Non-secret variables this agent kind needs (e.g. disabling colours or telemetry)."""


@dataclass(frozen=True, slots=True)
class ReportedEnd:
    """What the agent's own output says about how it ended, when it says anything."""

    success: bool
    budget_exhausted: bool = False
    """The agent stopped because it hit its turn or budget limit."""
    detail: str = ""


class OutputReader(Protocol):
    """Reads one run's output, line by line, as the agent prints it (stdout and stderr both arrive here)."""

    def feed(self, line: str) -> None:
        """One line of output, without its newline. Must never raise: malformed lines are ignored."""
        ...

    @property
    def usage(self) -> Usage:
        """Usage so far (cumulative); ``reported`` is False until the agent reported any."""
        ...

    @property
    def summary(self) -> str:
        """The agent's final message or last progress line, at most 4,000 characters."""
        ...

    @property
    def reported_end(self) -> ReportedEnd | None:
        """The agent's own verdict on the run, when its output carries one (e.g. a final result event)."""
        ...


class AgentAdapter(Protocol):
    """One agent kind: how to start it and how to read it."""

    @property
    def kind(self) -> str:
        """The agent kind this adapter serves, as named in ``LaunchAgent.agent_kind``."""
        ...

    @property
    def api_key_env(self) -> str | None:
        """The variable the CLI reads its model API key from (the worker passes that secret, and only it)."""
        ...

    @property
    def wind_down_signal(self) -> int | None:
        """The signal that asks this CLI to checkpoint and hand off, or None when only the wind-down file is safe.

        Node-based CLIs treat SIGUSR1 as "start the debugger" and die on SIGUSR2, so they get the file alone.
        """
        ...

    def command(self, request: AgentRequest) -> AgentCommand:
        """The command line that runs this request.

        May write the run's own configuration files (e.g. an MCP server list) into the run's directory: the
        directory of ``request.prompt_file``, created by the worker for this run alone.
        """
        ...

    def reader(self) -> OutputReader:
        """A fresh reader for one run's output."""
        ...
