import signal
from dataclasses import replace
from pathlib import Path

import pytest
from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.generic import GenericAdapter
from execution_grid.agents.public_agents import AgentRequest, ReportedEnd

REQUEST = AgentRequest(
    run_id="r1",
    mode=RunMode.PLAN,
    prompt="Fix issue #1",
    prompt_file=Path("/runs/r1/prompt.md"),
    workspace=Path("/runs/r1/workspace"),
    limits=RunLimits(max_turns=30, max_cost_usd=2.5),
    executable="/usr/local/bin/my-agent",
    model="m",
    extra_args=("--fast", "--verbose"),
)


def test_command_is_the_executable_and_its_extra_args_with_the_prompt_on_stdin() -> None:
    command = GenericAdapter().command(REQUEST)

    assert command.argv == ("/usr/local/bin/my-agent", "--fast", "--verbose")
    assert command.stdin == b"Fix issue #1"
    assert command.env == {
        "AGENT_GRID_MODEL": "m",
        "AGENT_GRID_MAX_TURNS": "30",
        "AGENT_GRID_MAX_COST_USD": "2.5",
    }


def test_unset_limits_and_model_stay_out_of_the_environment() -> None:
    command = GenericAdapter().command(replace(REQUEST, limits=RunLimits(), model=None, extra_args=()))

    assert command.argv == ("/usr/local/bin/my-agent",)
    assert command.env == {}


def test_a_tools_command_changes_nothing(tmp_path: Path) -> None:
    request = replace(REQUEST, prompt_file=tmp_path / "prompt.md")

    assert GenericAdapter().command(replace(request, tools_command=("agent-grid-tools", "mcp"))) == (
        GenericAdapter().command(request)
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("executable", [None, ""])
def test_an_executable_is_required(executable: str | None) -> None:
    with pytest.raises(ValueError, match=r"needs request\.executable"):
        GenericAdapter().command(replace(REQUEST, executable=executable))


def test_usage_lines_report_cumulative_usage_and_a_result_line_the_end() -> None:
    reader = GenericAdapter().reader()
    reader.feed("starting")
    reader.feed('{"type": "agent_grid.usage", "input_tokens": 100, "output_tokens": 10, "turns": 1}')
    reader.feed('{"type": "agent_grid.usage", "input_tokens": 250, "output_tokens": 30, "cost_usd": 0.02, "turns": 2}')
    reader.feed('{"type": "agent_grid.result", "success": true, "summary": "Opened PR #7"}')
    reader.feed("bye")

    assert reader.usage == Usage(input_tokens=250, output_tokens=30, cost_usd=0.02, turns=2, reported=True)
    assert reader.summary == "Opened PR #7"
    assert reader.reported_end == ReportedEnd(success=True)


def test_a_result_line_may_report_a_budget_stop() -> None:
    reader = GenericAdapter().reader()
    reader.feed('{"type":"agent_grid.result","success":false,"budget_exhausted":true,"detail":"out of turns"}')

    assert reader.reported_end == ReportedEnd(success=False, budget_exhausted=True, detail="out of turns")


def test_without_protocol_lines_the_summary_is_the_last_non_empty_line_and_usage_is_unreported() -> None:
    reader = GenericAdapter().reader()
    for line in ("working", "done: 3 files changed", "   ", ""):
        reader.feed(line)

    assert reader.summary == "done: 3 files changed"
    assert reader.usage == Usage()
    assert reader.reported_end is None


def test_invalid_protocol_lines_are_ignored_whole() -> None:
    reader = GenericAdapter().reader()
    reader.feed('{"type": "agent_grid.usage", "input_tokens": 5}')
    for line in (
        '{"type": "agent_grid.usage", "input_tokens": -1, "output_tokens": 9}',
        '{"type": "agent_grid.usage", "input_tokens": 9, "cost_usd": "free"}',
        '{"type": "agent_grid.usage", "turns": true}',
        '{"type": "agent_grid.result", "success": "yes"}',
        '{"type": "agent_grid.result"',
    ):
        reader.feed(line)

    assert reader.usage == Usage(input_tokens=5, reported=True)
    assert reader.reported_end is None
    assert reader.summary == '{"type": "agent_grid.result"'


def test_unattended_settings() -> None:
    adapter = GenericAdapter()

    assert adapter.kind == "generic"
    assert adapter.api_key_env is None
    assert adapter.wind_down_signal == signal.SIGUSR1
