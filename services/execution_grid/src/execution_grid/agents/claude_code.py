"""Claude Code (``claude``) in print mode with ``--output-format stream-json``.

Flags (Claude Code CLI reference; the Agent SDK's ``subprocess_cli.py`` builds the same ones):
``-p`` runs one prompt headless, read from stdin here so no prompt length limit or shell quoting applies;
``--output-format stream-json`` needs ``--verbose`` in print mode; ``--max-turns`` and ``--max-budget-usd``
(print mode only) stop the agent itself, with an ``error_max_turns`` / ``error_max_budget_usd`` result.

The agent-grid tools (``AgentRequest.tools_command``): ``--mcp-config`` takes JSON files or strings (the Agent
SDK passes a string); a file, ``mcp.json`` next to the prompt, keeps the argv short and readable in the run's
directory. ``--strict-mcp-config`` ignores every other MCP configuration: with permissions bypassed, a
repository's ``.mcp.json`` would otherwise start servers of the repository's choosing. ``--allowedTools
mcp__agent-grid`` (a server-level rule covers all its tools) keeps the tools usable should an operator swap the
permission mode through ``extra_args``. Claude Code starts stdio servers with its own environment, so the run's
``AGENT_GRID_*`` variables reach the server without being named.

Output: one JSON object per line: ``system`` (``init`` and others), ``assistant`` and ``user`` messages
(API-shaped, assistant ones with per-request ``usage``), and one final ``result`` carrying ``subtype``,
``is_error``, ``num_turns``, ``total_cost_usd``, ``usage`` and the final ``result`` text.
"""

from dataclasses import dataclass
from pathlib import Path

from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.jsonlines import (
    JsonObject,
    amount_at,
    clip_head,
    count_at,
    flag_at,
    format_amount,
    list_at,
    object_at,
    parse_object,
    text_at,
)
from execution_grid.agents.mcp_config import SERVER_NAME, split_command, write_json
from execution_grid.agents.public_agents import AgentCommand, AgentRequest, ReportedEnd

# Subtypes the CLI ends with when it stopped on a limit it was given (not on a fault).
_LIMIT_SUBTYPES = frozenset({"error_max_turns", "error_max_budget_usd"})
_LIMIT_TERMINAL_REASONS = frozenset({"max_turns", "max_budget_usd"})
_DETAIL_MAX_CHARS = 1000


@dataclass(frozen=True, slots=True)
class _Tokens:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def widest(self, other: "_Tokens") -> "_Tokens":
        return _Tokens(
            input=max(self.input, other.input),
            output=max(self.output, other.output),
            cache_read=max(self.cache_read, other.cache_read),
            cache_write=max(self.cache_write, other.cache_write),
        )

    def plus(self, other: "_Tokens") -> "_Tokens":
        return _Tokens(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
        )


def _api_tokens(usage: JsonObject) -> _Tokens:
    """Tokens from an Anthropic API ``usage`` object (assistant messages and the result's ``usage``)."""
    return _Tokens(
        input=count_at(usage, "input_tokens") or 0,
        output=count_at(usage, "output_tokens") or 0,
        cache_read=count_at(usage, "cache_read_input_tokens") or 0,
        cache_write=count_at(usage, "cache_creation_input_tokens") or 0,
    )


def _model_usage_tokens(model_usage: JsonObject) -> _Tokens:
    """Tokens summed over the result's camel-cased ``modelUsage`` (one entry per model used)."""
    total = _Tokens()
    for entry in model_usage.values():
        if isinstance(entry, dict):
            total = total.plus(
                _Tokens(
                    input=count_at(entry, "inputTokens") or 0,
                    output=count_at(entry, "outputTokens") or 0,
                    cache_read=count_at(entry, "cacheReadInputTokens") or 0,
                    cache_write=count_at(entry, "cacheCreationInputTokens") or 0,
                )
            )
    return total


def _message_text(message: JsonObject) -> str:
    parts = [
        text_at(block, "text")
        for block in list_at(message, "content")
        if isinstance(block, dict) and text_at(block, "type") == "text"
    ]
    return "\n".join(part for part in parts if part.strip())


def _error_detail(result: JsonObject) -> str:
    # The CLI puts its own terminal errors in errors[]; an API failure arrives as subtype "success" with
    # is_error and the "API Error: ..." prose in result (the Agent SDK's _error_result_text reads it so).
    errors = [error for error in list_at(result, "errors") if isinstance(error, str) and error.strip()]
    if errors:
        detail = "; ".join(errors)
    else:
        detail = text_at(result, "result").strip() or text_at(result, "subtype") or "error result"
    return detail[:_DETAIL_MAX_CHARS]


class ClaudeCodeReader:
    """Reads ``stream-json`` lines; the final ``result`` event's totals replace the running estimate."""

    def __init__(self) -> None:
        # One entry per API request: the CLI emits one assistant message per content block, each repeating
        # the same message id and usage (anthropics/claude-code#87303, "count each message.id once").
        self._steps: dict[str, _Tokens] = {}
        self._result: JsonObject | None = None
        self._last_text = ""

    def feed(self, line: str) -> None:
        event = parse_object(line)
        if event is None:
            return
        kind = text_at(event, "type")
        if kind == "assistant":
            self._on_assistant(event)
        elif kind == "result":
            self._result = event

    def _on_assistant(self, event: JsonObject) -> None:
        message = object_at(event, "message")
        usage = message.get("usage")
        if isinstance(usage, dict):
            step_id = text_at(message, "id") or text_at(event, "uuid") or f"step-{len(self._steps)}"
            tokens = _api_tokens(usage)
            # Keep the widest copy: streaming copies of one message may carry a placeholder output count.
            self._steps[step_id] = self._steps.get(step_id, _Tokens()).widest(tokens)
        # Subagents' messages carry a parent_tool_use_id; the summary is the main agent's own words.
        if event.get("parent_tool_use_id") is None:
            text = _message_text(message)
            if text:
                self._last_text = text

    @property
    def usage(self) -> Usage:
        running = _Tokens()
        for tokens in self._steps.values():
            running = running.plus(tokens)
        if self._result is None:
            return Usage(
                input_tokens=running.input,
                output_tokens=running.output,
                cache_read_tokens=running.cache_read,
                cache_write_tokens=running.cache_write,
                turns=len(self._steps),
                reported=bool(self._steps),
            )
        result = self._result
        # The result's usage and its per-model breakdown are both totals, yet releases disagree on what each
        # covers (side calls to a smaller model appear in modelUsage only); each is a lower bound, so take
        # the larger figure per field.
        final = _api_tokens(object_at(result, "usage")).widest(_model_usage_tokens(object_at(result, "modelUsage")))
        if final == _Tokens():
            final = running
        turns = count_at(result, "num_turns")
        return Usage(
            input_tokens=final.input,
            output_tokens=final.output,
            cache_read_tokens=final.cache_read,
            cache_write_tokens=final.cache_write,
            cost_usd=amount_at(result, "total_cost_usd") or 0.0,
            turns=len(self._steps) if turns is None else turns,
            reported=True,
        )

    @property
    def summary(self) -> str:
        if self._result is not None:
            text = text_at(self._result, "result")
            if text.strip():
                return clip_head(text)
        return clip_head(self._last_text)

    @property
    def reported_end(self) -> ReportedEnd | None:
        result = self._result
        if result is None:
            return None
        subtype = text_at(result, "subtype")
        # Older releases mark error_max_turns with is_error false: the subtype, not the flag, says it stopped.
        if subtype == "success" and not flag_at(result, "is_error"):
            return ReportedEnd(success=True)
        limited = subtype in _LIMIT_SUBTYPES or text_at(result, "terminal_reason") in _LIMIT_TERMINAL_REASONS
        return ReportedEnd(success=False, budget_exhausted=limited, detail=_error_detail(result))


def _write_mcp_config(run_directory: Path, tools_command: tuple[str, ...]) -> Path:
    command, args = split_command(tools_command)
    path = run_directory / "mcp.json"
    write_json(path, {"mcpServers": {SERVER_NAME: {"type": "stdio", "command": command, "args": args}}})
    return path


class ClaudeCodeAdapter:
    """Claude Code, unattended: all tool permissions granted inside the run's own workspace."""

    @property
    def kind(self) -> str:
        return "claude_code"

    @property
    def api_key_env(self) -> str | None:
        return "ANTHROPIC_API_KEY"

    @property
    def wind_down_signal(self) -> int | None:
        # Claude Code runs on Node (or a Bun-built binary): SIGUSR1 opens the inspector, it is no checkpoint.
        return None

    def command(self, request: AgentRequest) -> AgentCommand:
        argv = [request.executable or "claude", "-p", "--output-format", "stream-json", "--verbose"]
        if request.tools_command is not None:
            # Both flags take several values: each is followed by another flag, never by a bare argument.
            mcp_config = _write_mcp_config(request.prompt_file.parent, request.tools_command)
            argv += ["--mcp-config", str(mcp_config), "--strict-mcp-config"]
            argv += ["--allowedTools", f"mcp__{SERVER_NAME}"]
        # Nobody is there to answer a permission prompt, and "dontAsk" would deny every tool not allow-listed
        # beforehand (tests, git, the grid's own tools). The run's isolation is its workspace and its scrubbed
        # environment, so the agent gets every permission inside it. As root, Claude Code refuses this mode
        # unless IS_SANDBOX=1 says the host is disposable (anthropics/claude-code#3490); that claim is the
        # operator's to make (pass it through the worker's environment), not this adapter's.
        argv += ["--permission-mode", "bypassPermissions"]
        limits = request.limits
        if limits.max_turns is not None:
            argv += ["--max-turns", str(limits.max_turns)]
        if limits.max_cost_usd is not None:
            argv += ["--max-budget-usd", format_amount(limits.max_cost_usd)]
        if request.model:
            argv += ["--model", request.model]
        argv += request.extra_args
        return AgentCommand(
            argv=tuple(argv),
            stdin=request.prompt.encode(),
            # Covers the auto-updater, telemetry and error reporting: none belongs in a one-shot sandboxed run.
            env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
        )

    def reader(self) -> ClaudeCodeReader:
        return ClaudeCodeReader()
