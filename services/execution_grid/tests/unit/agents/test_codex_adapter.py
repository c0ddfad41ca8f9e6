import tomllib
from dataclasses import replace
from pathlib import Path

from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.codex import CodexAdapter, CodexReader
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
COMPLETED_TURN = (
    '{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}'
)


def read(name: str) -> CodexReader:
    reader = CodexAdapter().reader()
    for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines():
        reader.feed(line)
    return reader


def test_command_runs_exec_with_json_in_the_workspace_sandbox_and_reads_the_prompt_from_stdin() -> None:
    command = CodexAdapter().command(REQUEST)

    assert command.argv == (
        "codex",
        "exec",
        "--json",
        "--cd",
        "/runs/r1/workspace",
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        "--config",
        "sandbox_workspace_write.network_access=true",
        "--model",
        "m",
        "-",
    )
    assert command.stdin == b"Fix issue #1"
    assert command.env == {}


def test_extra_args_go_before_the_stdin_prompt_marker() -> None:
    request = replace(
        REQUEST, model=None, executable="/opt/codex", extra_args=("--dangerously-bypass-approvals-and-sandbox",)
    )

    assert CodexAdapter().command(request).argv == (
        "/opt/codex",
        "exec",
        "--json",
        "--cd",
        "/runs/r1/workspace",
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        "--config",
        "sandbox_workspace_write.network_access=true",
        "--dangerously-bypass-approvals-and-sandbox",
        "-",
    )


def test_the_tools_server_is_an_mcp_servers_table_set_by_config_overrides() -> None:
    request = replace(REQUEST, tools_command=("agent-grid-tools", "mcp", "--log", 'a "quoted" é'))

    assert CodexAdapter().command(request).argv == (
        "codex",
        "exec",
        "--json",
        "--cd",
        "/runs/r1/workspace",
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        "--config",
        "sandbox_workspace_write.network_access=true",
        "--config",
        'mcp_servers.agent-grid.command="agent-grid-tools"',
        "--config",
        'mcp_servers.agent-grid.args=["mcp", "--log", "a \\"quoted\\" é"]',
        "--config",
        'mcp_servers.agent-grid.env_vars=["AGENT_GRID_TOOLS_URL", "AGENT_GRID_RUN_TOKEN"]',
        "--config",
        'mcp_servers.agent-grid.default_tools_approval_mode="approve"',
        "--config",
        "mcp_servers.agent-grid.tool_timeout_sec=300",
        "--model",
        "m",
        "-",
    )


def test_the_override_values_are_toml() -> None:
    argv = CodexAdapter().command(replace(REQUEST, tools_command=("agent-grid-tools", "mcp", 'a "b" é\\'))).argv
    overrides = [argv[index + 1] for index, flag in enumerate(argv) if flag == "--config"]
    table: dict[str, object] = {}
    for override in overrides[1:]:
        key, _, value = override.partition("=")
        table[key.removeprefix("mcp_servers.agent-grid.")] = tomllib.loads(f"value = {value}")["value"]

    assert table == {
        "command": "agent-grid-tools",
        "args": ["mcp", 'a "b" é\\'],
        "env_vars": ["AGENT_GRID_TOOLS_URL", "AGENT_GRID_RUN_TOKEN"],
        "default_tools_approval_mode": "approve",
        "tool_timeout_sec": 300,
    }


def test_a_recorded_run_reports_usage_the_final_agent_message_and_success() -> None:
    reader = read("codex_exec.jsonl")

    assert reader.usage == Usage(
        input_tokens=24763 - 24448, cache_read_tokens=24448, output_tokens=122, turns=1, reported=True
    )
    assert reader.summary == "Yep \u2014 there\u2019s a `README.md` in the repository root."
    assert reader.reported_end == ReportedEnd(success=True)


def test_a_failed_turn_is_a_failure_with_its_message() -> None:
    reader = read("codex_turn_failed.jsonl")

    assert reader.reported_end == ReportedEnd(success=False, detail="turn failed")
    assert reader.summary == "partial answer"
    assert reader.usage == Usage(turns=1)


def test_a_retried_stream_error_does_not_fail_a_turn_that_then_completes() -> None:
    reader = CodexAdapter().reader()
    reader.feed('{"type":"error","message":"retrying"}')
    assert reader.reported_end == ReportedEnd(success=False, detail="retrying")

    reader.feed(COMPLETED_TURN)
    assert reader.reported_end == ReportedEnd(success=True)


def test_usage_is_the_latest_thread_total_not_a_sum_of_reports() -> None:
    reader = CodexAdapter().reader()
    reader.feed('{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":0,"output_tokens":10}}')
    reader.feed(COMPLETED_TURN)

    assert reader.usage == Usage(input_tokens=315, cache_read_tokens=24448, output_tokens=122, turns=2, reported=True)


def test_malformed_and_unexpected_lines_are_ignored() -> None:
    reader = CodexAdapter().reader()
    for line in (
        "",
        "2025-09-11T10:00:00Z ERROR codex_exec: something on stderr",
        '{"type":"item.completed","item":"nope"}',
        '{"type":"item.completed","item":{"type":"agent_message","text":42}}',
        '{"type":"item.completed","item":{"type":"command_execution","command":"ls"}}',
        '{"type":"turn.failed","error":"not an object"}',
        '{"type":"turn.completed","usage":{"input_tokens":"many","cached_input_tokens":-1,"output_tokens":1.5}}',
        '{"type":"thread.started"}',
        '{"type":"some.future.event","x":[1]}',
        '{"type":',
    ):
        reader.feed(line)

    assert reader.usage == Usage(turns=2, reported=True)
    assert reader.summary == ""
    assert reader.reported_end == ReportedEnd(success=True)


def test_unattended_settings() -> None:
    adapter = CodexAdapter()

    assert adapter.kind == "codex"
    assert adapter.api_key_env == "CODEX_API_KEY"
    assert adapter.wind_down_signal is None
