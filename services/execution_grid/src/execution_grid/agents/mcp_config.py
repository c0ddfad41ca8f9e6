"""Pieces the adapters share to register the agent-grid tools' MCP server (``AgentRequest.tools_command``)."""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

SERVER_NAME = "agent-grid"
"""The server's name in every CLI's configuration; its tools appear as ``mcp__agent-grid__show_issue`` (Claude
Code), ``mcp_agent-grid_show_issue`` (Gemini CLI; no underscore in the name, its policy parser splits on it)."""

FORWARDED_ENV = ("AGENT_GRID_TOOLS_URL", "AGENT_GRID_RUN_TOKEN")
"""What the server reads from its environment. Codex starts MCP servers with a short allow-list of variables
and Gemini CLI strips any name containing TOKEN, so both are told to pass these on by name."""


def split_command(tools_command: tuple[str, ...]) -> tuple[str, list[str]]:
    """The executable and its arguments; raises ValueError on an empty command."""
    if not tools_command or not tools_command[0]:
        raise ValueError("tools_command needs at least the executable, e.g. ('agent-grid-tools', 'mcp')")
    return tools_command[0], list(tools_command[1:])


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's once non-ASCII stays literal (no surrogates)."""
    return json.dumps(value, ensure_ascii=False)


def toml_array(values: Iterable[str]) -> str:
    """A TOML array of basic strings."""
    return "[" + ", ".join(toml_string(value) for value in values) + "]"


def write_json(path: Path, content: Mapping[str, object]) -> None:
    """Write ``content`` as pretty JSON, creating the parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def read_json_object(path: Path) -> dict[str, object]:
    """The JSON object in ``path``, or an empty one when the file is absent or holds anything else."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
