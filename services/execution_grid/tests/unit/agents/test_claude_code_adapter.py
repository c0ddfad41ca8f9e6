import json
from dataclasses import replace
from pathlib import Path

import pytest
from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.claude_code import ClaudeCodeAdapter, ClaudeCodeReader
from execution_grid.agents.public_agents import AgentRequest, ReportedEnd

SAMPLES = Path(__file__).parent / "samples"

REQUEST = AgentRequest(
    run_id="r1",
    mode=RunMode.WORK,
    prompt="Fix issue #1",
    prompt_file=Path("/runs/r1/prompt.md"),
    workspace=Path("/runs/r1/workspace"),
    limits=RunLimits(max_turns=30, max_cost_usd=2.5),
    model="m",
)


def read(name: str) -> ClaudeCodeReader:
    reader = ClaudeCodeAdapter().reader()
    for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines():
        reader.feed(line)
    return reader


def test_command_runs_print_mode_with_stream_json_limits_and_model_and_prompt_on_stdin() -> None:
    command = ClaudeCodeAdapter().command(REQUEST)

    assert command.argv == (
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--max-turns",
        "30",
        "--max-budget-usd",
        "2.5",
        "--model",
        "m",
    )
    assert command.stdin == b"Fix issue #1"
    assert command.env == {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def test_command_leaves_out_unset_limits_and_model_and_appends_extra_args_last() -> None:
    request = replace(REQUEST, limits=RunLimits(), model=None, executable="/opt/claude/bin/claude")
    request = replace(request, extra_args=("--add-dir", "/shared"))

    assert ClaudeCodeAdapter().command(request).argv == (
        "/opt/claude/bin/claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--add-dir",
        "/shared",
    )


def test_the_tools_server_is_registered_from_a_file_next_to_the_prompt_and_its_tools_allowed(tmp_path: Path) -> None:
    request = replace(
        REQUEST,
        prompt_file=tmp_path / "prompt.md",
        tools_command=("/opt/grid/bin/agent-grid-tools", "mcp"),
        extra_args=("--add-dir", "/shared"),
    )

    command = ClaudeCodeAdapter().command(request)

    assert command.argv == (
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--mcp-config",
        str(tmp_path / "mcp.json"),
        "--strict-mcp-config",
        "--allowedTools",
        "mcp__agent-grid",
        "--permission-mode",
        "bypassPermissions",
        "--max-turns",
        "30",
        "--max-budget-usd",
        "2.5",
        "--model",
        "m",
        "--add-dir",
        "/shared",
    )
    assert json.loads((tmp_path / "mcp.json").read_text()) == {
        "mcpServers": {
            "agent-grid": {"type": "stdio", "command": "/opt/grid/bin/agent-grid-tools", "args": ["mcp"]},
        }
    }
    assert command.stdin == b"Fix issue #1"
    assert command.env == {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def test_an_empty_tools_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tools_command"):
        ClaudeCodeAdapter().command(replace(REQUEST, prompt_file=tmp_path / "prompt.md", tools_command=()))


def test_without_a_tools_command_no_mcp_file_is_written(tmp_path: Path) -> None:
    command = ClaudeCodeAdapter().command(replace(REQUEST, prompt_file=tmp_path / "prompt.md"))

    assert "--mcp-config" not in command.argv
    assert list(tmp_path.iterdir()) == []


def test_a_recorded_run_reports_the_result_totals_summary_and_success() -> None:
    reader = read("claude_code_stream.jsonl")

    # The assistant message said 5 output tokens (a streaming placeholder); the result's total is 25.
    assert reader.usage == Usage(
        input_tokens=10,
        output_tokens=25,
        cache_read_tokens=0,
        cache_write_tokens=21570,
        cost_usd=0.1354875,
        turns=1,
        reported=True,
    )
    assert reader.summary == "4"
    assert reader.reported_end == ReportedEnd(success=True)


def test_usage_runs_from_assistant_messages_until_the_result_replaces_it() -> None:
    lines = (SAMPLES / "claude_code_tool_session.jsonl").read_text(encoding="utf-8").splitlines()
    reader = ClaudeCodeAdapter().reader()
    assert reader.usage == Usage()

    for line in lines[:2]:
        reader.feed(line)
    reader.feed(lines[1])  # the same API message again, as the CLI repeats it per content block

    assert reader.usage == Usage(
        input_tokens=10, output_tokens=4, cache_read_tokens=17254, cache_write_tokens=3556, turns=1, reported=True
    )
    assert reader.reported_end is None
    assert reader.summary == ""

    for line in lines[2:]:
        reader.feed(line)

    # usage and modelUsage both total the session; modelUsage also covers side calls, so it is the larger here.
    assert reader.usage == Usage(
        input_tokens=38,
        output_tokens=765,
        cache_read_tokens=28775,
        cache_write_tokens=31159,
        cost_usd=0.24722425,
        turns=2,
        reported=True,
    )
    assert reader.summary == "Here are the files in the current directory."
    assert reader.reported_end == ReportedEnd(success=True)


def test_a_turn_limit_stop_is_reported_as_budget_exhausted_even_when_not_flagged_as_an_error() -> None:
    reader = read("claude_code_max_turns.jsonl")

    assert reader.reported_end == ReportedEnd(success=False, budget_exhausted=True, detail="error_max_turns")
    # The cost matches modelUsage (11,043 Sonnet output tokens at $15/M), not the smaller `usage` figure.
    assert reader.usage == Usage(
        input_tokens=3,
        output_tokens=353 + 11043,
        cache_read_tokens=14981,
        cache_write_tokens=8999,
        cost_usd=0.16741,
        turns=2,
        reported=True,
    )


def test_a_budget_stop_is_reported_as_budget_exhausted() -> None:
    reader = ClaudeCodeAdapter().reader()
    reader.feed(
        '{"type":"result","subtype":"error_max_budget_usd","is_error":true,"num_turns":7,"total_cost_usd":2.51,'
        '"session_id":"s","errors":[]}'
    )

    assert reader.reported_end == ReportedEnd(success=False, budget_exhausted=True, detail="error_max_budget_usd")
    assert reader.usage.cost_usd == 2.51
    assert reader.usage.turns == 7


def test_an_api_failure_reported_under_the_success_subtype_is_a_failure_with_its_message() -> None:
    reader = read("claude_code_api_error.jsonl")

    assert reader.reported_end == ReportedEnd(
        success=False, detail="API Error: Stream idle timeout - no chunks received"
    )


def test_an_execution_error_carries_the_cli_errors() -> None:
    reader = ClaudeCodeAdapter().reader()
    reader.feed('{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["a","b"]}')

    assert reader.reported_end == ReportedEnd(success=False, detail="a; b")


def test_the_summary_is_the_main_agents_last_text_until_the_result_and_is_clipped() -> None:
    reader = ClaudeCodeAdapter().reader()
    reader.feed('{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"first"}]}}')
    reader.feed(
        '{"type":"assistant","parent_tool_use_id":"toolu_1","message":{"id":"m2","content":[{"type":"text",'
        '"text":"a subagent speaking"}]}}'
    )
    assert reader.summary == "first"

    reader.feed('{"type":"result","subtype":"success","is_error":false,"result":"' + "x" * 5000 + '"}')
    assert len(reader.summary) == 4000
    assert reader.summary.endswith("…")


def test_malformed_and_unexpected_lines_are_ignored() -> None:
    reader = ClaudeCodeAdapter().reader()
    for line in (
        "",
        "Warning: something on stderr",
        "{",
        "[1, 2]",
        "null",
        '{"type": 3}',
        '{"type":"assistant","message":"not an object"}',
        '{"type":"assistant","message":{"id":7,"usage":{"input_tokens":-5,"output_tokens":"7"},"content":"x"}}',
        '{"type":"assistant","message":{"content":[1,{"type":"text","text":null}]}}',
        '{"type":"system","subtype":"some_future_subtype"}',
        '{"type":"stream_event","event":{}}',
    ):
        reader.feed(line)
    assert reader.usage == Usage(turns=1, reported=True)
    assert reader.reported_end is None

    reader.feed('{"type":"result","num_turns":"x","usage":[],"modelUsage":{"m":5},"total_cost_usd":-1,"errors":7}')
    assert reader.usage == Usage(turns=1, reported=True)
    assert reader.reported_end == ReportedEnd(success=False, detail="error result")


def test_unattended_settings() -> None:
    adapter = ClaudeCodeAdapter()

    assert adapter.kind == "claude_code"
    assert adapter.api_key_env == "ANTHROPIC_API_KEY"
    assert adapter.wind_down_signal is None
