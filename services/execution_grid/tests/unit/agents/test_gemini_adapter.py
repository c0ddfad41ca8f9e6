import json
from dataclasses import replace
from pathlib import Path

from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.gemini import GeminiAdapter, GeminiReader
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


def read(name: str) -> GeminiReader:
    reader = GeminiAdapter().reader()
    for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines():
        reader.feed(line)
    return reader


def test_command_runs_headless_with_stream_json_auto_approval_and_the_prompt_on_stdin() -> None:
    command = GeminiAdapter().command(REQUEST)

    assert command.argv == ("gemini", "--output-format", "stream-json", "--approval-mode", "yolo", "--model", "m")
    assert command.stdin == b"Fix issue #1"
    assert command.env == {"GEMINI_CLI_TRUST_WORKSPACE": "true"}


def test_executable_override_and_extra_args() -> None:
    request = replace(REQUEST, model=None, executable="/usr/local/bin/gemini", extra_args=("--sandbox",))

    assert GeminiAdapter().command(request).argv == (
        "/usr/local/bin/gemini",
        "--output-format",
        "stream-json",
        "--approval-mode",
        "yolo",
        "--sandbox",
    )


def test_the_tools_server_goes_into_the_run_homes_settings_and_is_the_only_one_allowed(tmp_path: Path) -> None:
    request = replace(
        REQUEST, prompt_file=tmp_path / "prompt.md", tools_command=("agent-grid-tools", "mcp"), extra_args=("-d",)
    )

    command = GeminiAdapter().command(request)

    assert command.argv == (
        "gemini",
        "--output-format",
        "stream-json",
        "--approval-mode",
        "yolo",
        "--allowed-mcp-server-names",
        "agent-grid",
        "--model",
        "m",
        "-d",
    )
    assert command.env == {"GEMINI_CLI_TRUST_WORKSPACE": "true", "GEMINI_CLI_HOME": str(tmp_path / "home")}
    assert json.loads((tmp_path / "home" / ".gemini" / "settings.json").read_text()) == {
        "mcpServers": {
            "agent-grid": {
                "command": "agent-grid-tools",
                "args": ["mcp"],
                "env": {
                    "AGENT_GRID_TOOLS_URL": "${AGENT_GRID_TOOLS_URL}",
                    "AGENT_GRID_RUN_TOKEN": "${AGENT_GRID_RUN_TOKEN}",
                },
                "trust": True,
            }
        }
    }


def test_settings_already_in_the_run_home_are_kept(tmp_path: Path) -> None:
    settings = tmp_path / "home" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"model": {"maxSessionTurns": 40}, "mcpServers": {"other": {"command": "x"}}}))

    GeminiAdapter().command(replace(REQUEST, prompt_file=tmp_path / "prompt.md", tools_command=("t", "mcp")))

    written = json.loads(settings.read_text())
    assert written["model"] == {"maxSessionTurns": 40}
    assert sorted(written["mcpServers"]) == ["agent-grid", "other"]
    assert written["mcpServers"]["agent-grid"]["command"] == "t"


def test_without_a_tools_command_no_settings_are_written(tmp_path: Path) -> None:
    command = GeminiAdapter().command(replace(REQUEST, prompt_file=tmp_path / "prompt.md"))

    assert "--allowed-mcp-server-names" not in command.argv
    assert list(tmp_path.iterdir()) == []


def test_the_documented_example_reports_usage_turns_summary_and_success() -> None:
    reader = read("gemini_stream.jsonl")

    # The tool call is one model request, the answer after its result another.
    assert reader.usage == Usage(input_tokens=50, output_tokens=200, turns=2, reported=True)
    assert reader.summary == "Here are the files..."
    assert reader.reported_end == ReportedEnd(success=True)


def test_text_before_a_tool_call_belongs_to_an_earlier_turn_than_the_final_answer() -> None:
    reader = read("gemini_stream_tools.jsonl")

    assert reader.summary == "Final answer"
    assert reader.usage == Usage(turns=2, reported=True)
    assert reader.reported_end == ReportedEnd(success=True)


def test_a_session_turn_limit_is_budget_exhausted_although_the_result_says_success() -> None:
    reader = read("gemini_max_turns.jsonl")

    assert reader.reported_end == ReportedEnd(
        success=False, budget_exhausted=True, detail="Maximum session turns exceeded"
    )


def test_an_error_result_for_the_turn_limit_is_budget_exhausted() -> None:
    reader = read("gemini_error_result.jsonl")

    assert reader.reported_end == ReportedEnd(
        success=False, budget_exhausted=True, detail="Maximum session turns exceeded"
    )
    assert reader.usage == Usage(input_tokens=50, output_tokens=50, reported=True)


def test_an_error_result_is_a_failure_with_its_message() -> None:
    reader = GeminiAdapter().reader()
    reader.feed(
        '{"type":"result","timestamp":"2025-10-10T12:00:00.000Z","status":"error",'
        '"error":{"type":"Error","message":"quota exceeded"},"stats":{"total_tokens":0,"input_tokens":0,'
        '"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0,"models":{}}}'
    )

    assert reader.reported_end == ReportedEnd(success=False, detail="quota exceeded")


def test_cached_input_is_kept_apart_and_thinking_counts_as_output() -> None:
    reader = GeminiAdapter().reader()
    reader.feed(
        '{"type":"result","status":"success","stats":{"total_tokens":1500,"input_tokens":1000,"output_tokens":300,'
        '"cached":400,"input":600,"duration_ms":10,"tool_calls":0,"models":{}}}'
    )

    assert reader.usage == Usage(input_tokens=600, cache_read_tokens=400, output_tokens=500, reported=True)


def test_malformed_and_unexpected_lines_are_ignored() -> None:
    reader = GeminiAdapter().reader()
    for line in (
        "",
        "Loaded cached credentials.",
        "YOLO mode is enabled. All tool calls will be automatically approved.",
        '{"type":"message","role":"assistant","content":null}',
        '{"type":"message","role":["assistant"],"content":"x"}',
        '{"type":"error","severity":"error","message":{"text":"?"}}',
        '{"type":"result","status":7,"error":"boom","stats":{"total_tokens":-1,"input_tokens":"a","cached":2}}',
        "{not json}",
    ):
        reader.feed(line)

    assert reader.usage == Usage(turns=1, reported=True)
    assert reader.summary == ""
    assert reader.reported_end == ReportedEnd(success=False, detail="error result")


def test_unattended_settings() -> None:
    adapter = GeminiAdapter()

    assert adapter.kind == "gemini"
    assert adapter.api_key_env == "GEMINI_API_KEY"
    assert adapter.wind_down_signal is None
