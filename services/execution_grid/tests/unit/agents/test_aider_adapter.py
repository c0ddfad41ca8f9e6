from dataclasses import replace
from pathlib import Path

from agent_grid_contracts.public_launches import RunLimits, RunMode
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.aider import AiderAdapter, AiderReader
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
FLAGS = (
    "--yes-always",
    "--no-pretty",
    "--no-stream",
    "--no-fancy-input",
    "--no-check-update",
    "--no-show-release-notes",
    "--no-analytics",
    "--no-gitignore",
    "--no-detect-urls",
)


def read(name: str) -> AiderReader:
    reader = AiderAdapter().reader()
    for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines():
        reader.feed(line)
    return reader


def test_command_sends_the_prompt_file_unattended_without_streaming_or_colour() -> None:
    command = AiderAdapter().command(REQUEST)

    assert command.argv == (
        "aider",
        "--yes-always",
        "--no-pretty",
        "--no-stream",
        "--no-fancy-input",
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--no-gitignore",
        "--no-detect-urls",
        "--model",
        "m",
        "--message-file",
        "/runs/r1/prompt.md",
    )
    assert command.stdin is None
    assert command.env == {}


def test_extra_args_go_before_the_message_file() -> None:
    request = replace(REQUEST, model=None, executable="/venv/bin/aider", extra_args=("--edit-format", "diff"))

    assert AiderAdapter().command(request).argv == (
        "/venv/bin/aider",
        *FLAGS,
        "--edit-format",
        "diff",
        "--message-file",
        "/runs/r1/prompt.md",
    )


def test_a_tools_command_changes_nothing(tmp_path: Path) -> None:
    request = replace(REQUEST, prompt_file=tmp_path / "prompt.md")

    assert AiderAdapter().command(replace(request, tools_command=("agent-grid-tools", "mcp"))) == (
        AiderAdapter().command(request)
    )
    assert list(tmp_path.iterdir()) == []


def test_a_recorded_session_sums_the_token_lines_and_keeps_the_cumulative_session_cost() -> None:
    reader = read("aider_output.txt")

    assert reader.usage == Usage(
        input_tokens=4100 + 4300, output_tokens=756 + 570, cost_usd=0.06, turns=2, reported=True
    )
    assert reader.summary.endswith("allows the code to continue processing other sections even if one section fails.")
    assert "Cost:" not in reader.summary
    assert reader.reported_end is None


def test_cache_figures_on_a_single_usage_line() -> None:
    reader = read("aider_cache_output.txt")

    assert reader.usage == Usage(
        input_tokens=2400, output_tokens=129, cache_write_tokens=1900, cost_usd=0.01, turns=1, reported=True
    )
    assert reader.summary.endswith("2. Run the following command:")


def test_raw_stdout_lines_with_k_and_m_suffixes_and_thousands_separators() -> None:
    reader = AiderAdapter().reader()
    reader.feed(
        "Tokens: 4.6k sent, 1.2k cache write, 3.0k cache hit, 317 received. Cost: $0.01 message, $0.05 session."
    )
    reader.feed("Tokens: 1.2M sent, 15,254 cached, 2k received.")
    reader.feed("Cost: $1.25 request, $1.30 session.")

    assert reader.usage == Usage(
        input_tokens=4600 + 1_200_000,
        output_tokens=317 + 2000,
        cache_read_tokens=3000 + 15254,
        cache_write_tokens=1200,
        cost_usd=1.30,
        turns=2,
        reported=True,
    )


def test_an_exhausted_context_is_reported_as_a_failure() -> None:
    reader = AiderAdapter().reader()
    reader.feed("Model claude-3-5-sonnet-20240620 has hit a token limit!")

    assert reader.reported_end == ReportedEnd(
        success=False, detail="Model claude-3-5-sonnet-20240620 has hit a token limit!"
    )


def test_without_a_usage_report_the_summary_is_the_last_line() -> None:
    reader = AiderAdapter().reader()
    reader.feed("Aider v0.86.1")
    reader.feed("litellm.AuthenticationError: AnthropicException - invalid x-api-key")
    reader.feed("")

    assert reader.summary == "litellm.AuthenticationError: AnthropicException - invalid x-api-key"
    assert reader.usage == Usage()


def test_malformed_lines_are_ignored() -> None:
    reader = AiderAdapter().reader()
    for line in (
        "Tokens: lots sent, none received.",
        "Tokens: 1.2.3k sent",
        "Cost: $abc message, $ session.",
        "Tokens:",
        "> ",
        "\x1b[31mcolour\x1b[0m",
        "x" * 100_000,
    ):
        reader.feed(line)

    assert reader.usage.cost_usd == 0
    assert len(reader.summary) <= 4000


def test_api_key_variable_is_chosen_by_the_operator() -> None:
    assert AiderAdapter().api_key_env is None
    assert AiderAdapter(api_key_env="ANTHROPIC_API_KEY").api_key_env == "ANTHROPIC_API_KEY"
    assert AiderAdapter().kind == "aider"
    assert AiderAdapter().wind_down_signal is None
