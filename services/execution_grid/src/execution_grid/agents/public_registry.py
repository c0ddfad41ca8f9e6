"""The agent kinds the grid can run, and the adapter for each. Used by the worker; adapters are stateless.

A ``LaunchAgent.agent_kind`` outside ``ADAPTER_KINDS`` cannot run on this grid: ``adapter_for`` says so with
``UnknownAgentKind`` rather than falling back to some other agent.
"""

from collections.abc import Mapping
from typing import Final

from execution_grid.agents.aider import AiderAdapter
from execution_grid.agents.claude_code import ClaudeCodeAdapter
from execution_grid.agents.codex import CodexAdapter
from execution_grid.agents.gemini import GeminiAdapter
from execution_grid.agents.generic import GenericAdapter
from execution_grid.agents.public_agents import AgentAdapter

__all__ = ["ADAPTER_KINDS", "UnknownAgentKind", "adapter_for"]

_ADAPTERS: Final[Mapping[str, AgentAdapter]] = {
    adapter.kind: adapter
    for adapter in (AiderAdapter(), ClaudeCodeAdapter(), CodexAdapter(), GeminiAdapter(), GenericAdapter())
}

ADAPTER_KINDS: Final[tuple[str, ...]] = tuple(sorted(_ADAPTERS))
"""Every agent kind with an adapter, sorted: ``aider``, ``claude_code``, ``codex``, ``gemini``, ``generic``."""


class UnknownAgentKind(ValueError):
    """A launch names an agent kind this grid has no adapter for."""

    def __init__(self, kind: str) -> None:
        """Record the refused kind; the message lists the known ones."""
        super().__init__(f"unknown agent kind {kind!r}; known kinds: {', '.join(ADAPTER_KINDS)}")
        self.kind = kind


def adapter_for(kind: str) -> AgentAdapter:
    """The adapter that runs agents of ``kind``.

    Raises:
        UnknownAgentKind: ``kind`` is not one of ``ADAPTER_KINDS``.
    """
    try:
        return _ADAPTERS[kind]
    except KeyError:
        raise UnknownAgentKind(kind) from None
