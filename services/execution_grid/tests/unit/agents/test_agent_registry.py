from pathlib import Path

import pytest
from agent_grid_contracts.public_launches import RunLimits, RunMode
from execution_grid.agents.public_agents import AgentRequest
from execution_grid.agents.public_registry import ADAPTER_KINDS, UnknownAgentKind, adapter_for

REQUEST = AgentRequest(
    run_id="r1",
    mode=RunMode.WORK,
    prompt="Fix issue #1",
    prompt_file=Path("/runs/r1/prompt.md"),
    workspace=Path("/runs/r1/workspace"),
    limits=RunLimits(),
    executable="/opt/agents/bin/agent",
)


def test_the_known_kinds() -> None:
    assert ADAPTER_KINDS == ("aider", "claude_code", "codex", "gemini", "generic")


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_each_kind_has_its_adapter_and_fresh_readers(kind: str) -> None:
    adapter = adapter_for(kind)

    assert adapter.kind == kind
    assert adapter.reader() is not adapter.reader()
    assert adapter.reader().usage.reported is False


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_the_executable_override_starts_every_command(kind: str) -> None:
    assert adapter_for(kind).command(REQUEST).argv[0] == "/opt/agents/bin/agent"


def test_the_api_key_each_kind_reads() -> None:
    assert {kind: adapter_for(kind).api_key_env for kind in ADAPTER_KINDS} == {
        "aider": None,
        "claude_code": "ANTHROPIC_API_KEY",
        "codex": "CODEX_API_KEY",
        "gemini": "GEMINI_API_KEY",
        "generic": None,
    }


@pytest.mark.parametrize("kind", ["", "claude", "Claude_Code", "cursor"])
def test_an_unknown_kind_is_refused_with_the_known_ones_listed(kind: str) -> None:
    with pytest.raises(UnknownAgentKind, match="known kinds: aider, claude_code, codex, gemini, generic") as raised:
        adapter_for(kind)

    assert isinstance(raised.value, ValueError)
    assert raised.value.kind == kind
